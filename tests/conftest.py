"""Shared fixtures."""

import pytest

from zoo.vae import VAEConfig

_TINY_ARCHITECTURES = {  # bottom stochastic layer first, as in VAEConfig
    1: {"hidden_units": (16,), "latent_units": (4,)},
    2: {"hidden_units": (16, 8), "latent_units": (4, 2)},
}


def _tiny_config(**overrides) -> VAEConfig:
    """A VAEConfig whose models build instantly and fit in seconds on CPU (big_vision style)."""
    layers = overrides.get("stochastic_layers", 1)
    values = {"image_shape": (6, 6, 1), "batch_size": 8, **_TINY_ARCHITECTURES.get(layers, {})}
    return VAEConfig(**{**values, **overrides})


@pytest.fixture
def tiny_config():
    """The factory `tiny_config(**overrides) -> VAEConfig`; overrides win over the tiny defaults."""
    return _tiny_config
