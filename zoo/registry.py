"""The registry: `zoo.<name>` → everything training, export and serving need.

A registry entry is the whole interface between a model family and the rest of
the project. `training/`, `export/` and `serving/` never branch on the model
type; they use only:

* `ModelSpec.config_class` and `ModelSpec.make_config(**overrides)`;
* `ModelSpec.build(config) -> keras.Model`, a built model;
* `ModelSpec.dataset(config) -> DatasetSpec`, what data it trains on;
* `ModelSpec.evaluation`, what `training.evaluate` measures: "likelihood"
  (the model's test metrics with k importance samples), "exact_likelihood"
  (the model's test metrics, e.g. an autoregressive model's exact NLL) and/or
  "sample_quality" (FID, classifier score and mode coverage of `model.sample`);
* `ModelSpec.max_steps_per_execution`, a cap on `training.fit`'s steps per call
  for models that TensorFlow cannot run several steps of in one call;
* on the model: `compile_for_training(steps_per_epoch)`, `serving_signatures()`
  (name → (function, input signature)), `summary_images(images)` for
  TensorBoard grids, and `sample(seeds)`: one image in [0, 1] per int64 seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from zoo import config as config_lib


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The data a model consumes: a dataset name and how pixels are presented.

    Attributes:
      name: a dataset known to `training.data` (e.g. "mnist", "binarized_mnist").
      binarize: True for models with a Bernoulli likelihood. Grey-scale data is
        then binarized (dynamically, a fresh draw per visit, for training).
      labels: True for models that need the class label: batches then carry
        "label" (int64 [batch]) beside "image".
    """

    name: str
    binarize: bool
    labels: bool = False


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the zoo: a family plus a preset of config overrides."""

    name: str
    description: str
    config_class: type
    build: Callable[[Any], Any]
    dataset: Callable[[Any], DatasetSpec]
    preset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    evaluation: tuple[str, ...] = ("likelihood",)
    max_steps_per_execution: int | None = None  # None: as many as training.fit is asked for

    @property
    def short_name(self) -> str:
        """The name without the `zoo.` prefix, used for export folders."""
        return self.name.removeprefix("zoo.")

    def make_config(self, **overrides: Any):
        """The paper config of this entry, with the preset and then `overrides`."""
        return config_lib.replace(self.config_class(), **{**self.preset, **overrides})


_REGISTRY: dict[str, ModelSpec] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"{spec.name} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> ModelSpec:
    """Looks up `zoo.vae` (or plain `vae`); unknown names list the known ones."""
    full_name = name if name.startswith("zoo.") else f"zoo.{name}"
    if full_name not in _REGISTRY:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(names())}"
        )
    return _REGISTRY[full_name]
