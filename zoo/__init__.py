"""The model zoo: `zoo.get("zoo.vae")` returns a registry entry (see `zoo.registry`).

Importing `zoo` registers every family and its Keras serializables, so
`keras.models.load_model("model.keras")` works after `import zoo`.
"""

from zoo import gan, pixelcnn, pixelcnn_pp, pixelrnn, vae  # noqa: F401  (register the VAE, GAN, PixelCNN, PixelCNN++ and PixelRNN families)
from zoo.config import ConfigError
from zoo.registry import DatasetSpec, ModelSpec, UnknownModelError, get, names

__all__ = ["ConfigError", "DatasetSpec", "ModelSpec", "UnknownModelError", "get", "names"]
