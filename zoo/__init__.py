"""The model zoo: `zoo.get("zoo.vae")` returns a registry entry (see `zoo.registry`).

Importing `zoo` registers every family and its Keras serializables, so
`keras.models.load_model("model.keras")` works after `import zoo`.
"""

from zoo import (  # noqa: F401 (registers all)
    ali, autoregressive, avb, cvae, draw, gan, neural_statistician, text_vae, vae, vae_gan)
from zoo.config import ConfigError
from zoo.registry import DatasetSpec, ModelSpec, UnknownModelError, get, names

__all__ = ["ConfigError", "DatasetSpec", "ModelSpec", "UnknownModelError", "get", "names"]
