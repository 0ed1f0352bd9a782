"""Typed, frozen model configs: strict `key=value` overrides and JSON round trips.

Every zoo family describes itself with a frozen dataclass whose defaults are the
paper's values. Users change fields with `--set key=value`; the value is parsed
against the field's annotation (int, float, bool, str, tuple[int, ...] and
optionals of those), and an unknown key is an error listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

Config = TypeVar("Config")


class ConfigError(ValueError):
    """A config value or override that cannot be used, with the reason and the fix."""


def check(config, checks) -> None:
    """Raises ConfigError "<ConfigClass>: <message>" for the first (ok, message) pair of `checks` that is not ok."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{type(config).__name__}: {message}")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The fields `training/` reads from every model's config, declared once.

    A family's config subclasses this and redeclares a field only to give its paper's
    default, with the citation; `__post_init__` of a subclass calls this one's.
    """

    dataset: str = "mnist"        # a TFDS catalog name known to training.data
    image_shape: tuple[int, ...] = (28, 28, 1)  # height, width, channels of the dataset's images
    batch_size: int = 64          # the global batch, split over replicas
    epochs: int = 1               # passes over the training split
    learning_rate: float = 1e-3
    seed: int = 0                 # seeds the model's initial weights and training noise
    jit_compile: bool = False     # explicit: Keras "auto" differs on CPU, GPU and Mirrored
    divergence_factor: float | None = 10.0  # ours: stop once the loss exceeds its largest value so far by this many
                                            # times its scale (training.callbacks.StopOnDivergence); None: NaN/Inf only

    def __post_init__(self):
        check(self, [
            (len(self.image_shape) == 3 and min(self.image_shape) >= 1,
             f"image_shape must be three positive sizes (height, width, channels), got {self.image_shape}; "
             f"pass e.g. --set image_shape=28,28,1"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}; pass e.g. --batch_size 64"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}; pass e.g. --epochs 10"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}; "
                                     f"pass e.g. --learning_rate 1e-3"),
            (self.divergence_factor is None or self.divergence_factor > 0,
             f"divergence_factor must be > 0, got {self.divergence_factor}; pass e.g. --set divergence_factor=10, "
             f"or --set divergence_factor=none to stop only on NaN or Inf"),
        ])


def field_names(config_class: type) -> list[str]:
    return [field.name for field in dataclasses.fields(config_class)]


def _check_known(config_class: type, keys) -> None:
    valid = field_names(config_class)
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)} for {config_class.__name__}; "
            f"valid keys: {', '.join(valid)}"
        )


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parses `text` as a value of type `annotation` (the resolved field type)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if type(None) in options and text.strip().lower() in ("none", "null", ""):
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _parse_value(text, inner, key)
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        items = [item for item in text.split(",") if item.strip()]
        return tuple(_parse_value(item.strip(), item_type, key) for item in items)
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key}={text!r}: expected a bool (true or false)")
    if annotation in (int, float, str):
        try:
            return annotation(text.strip())
        except ValueError:
            raise ConfigError(
                f"{key}={text!r}: expected {annotation.__name__}"
            ) from None
    raise ConfigError(f"{key}: fields of type {annotation} cannot be set from text")


def parse_assignments(assignments: list[str], config_class: type) -> dict[str, Any]:
    """Turns `["k=5", "stochastic_layers=2"]` into typed values for `config_class`."""
    hints = typing.get_type_hints(config_class)
    values = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set k=5")
        _check_known(config_class, [key])
        values[key] = _parse_value(text, hints[key], key)
    return values


def replace(config: Config, **overrides: Any) -> Config:
    """`dataclasses.replace` that names the valid keys when one is unknown."""
    _check_known(type(config), overrides)
    return dataclasses.replace(config, **overrides)


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(config_class: type[Config], values: Mapping[str, Any]) -> Config:
    """Inverse of `to_dict` after a JSON round trip (lists become tuples again)."""
    _check_known(config_class, values)
    hints = typing.get_type_hints(config_class)
    coerced = {}
    for key, value in values.items():
        if isinstance(value, list):
            value = tuple(value)
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        coerced[key] = value
    return config_class(**coerced)
