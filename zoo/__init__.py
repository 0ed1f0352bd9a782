"""The model zoo: `zoo.get("zoo.vae")` returns a registry entry (see `zoo.registry`).

Importing `zoo` registers every family and its Keras serializables, so
`keras.models.load_model("model.keras")` works after `import zoo`.
"""

from zoo import gan, pixelcnn, vae  # noqa: F401  (register zoo.vae, zoo.iwae, the GAN and PixelCNN families)
from zoo.config import ConfigError
from zoo.registry import DatasetSpec, ModelSpec, UnknownModelError, get, names

__all__ = ["ConfigError", "DatasetSpec", "ModelSpec", "UnknownModelError", "get", "names"]
