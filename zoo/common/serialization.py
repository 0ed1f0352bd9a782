"""`get_config` / `from_config` for a model built from one config dataclass, written once."""

from __future__ import annotations

from typing import ClassVar

from zoo import config as config_lib


class ConfigSerialization:
    """Mixin for a `keras.Model` whose `__init__(config, **kwargs)` takes its family's config.

    The config travels as a plain dict under "config", so `.keras` files reload with
    `keras.models.load_model` (after `import zoo`) and `from_config` rebuilds the same
    model. List it before `keras.Model`: `class VAE(ConfigSerialization, keras.Model)`.
    """

    config_class: ClassVar[type]

    def get_config(self):
        return {**super().get_config(), "config": config_lib.to_dict(self.config)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config_lib.from_dict(cls.config_class, config.pop("config")), **config)
