"""The registry: `zoo.<name>` → everything training, export and serving need.

A registry entry is the whole interface between a model family and the rest of
the project: `training/`, `export/` and `serving/` never branch on the model type.
They use the entry (`ModelSpec`: the config class, `build(config)`, the dataset it
trains on, what `training.evaluate` measures) and the model contract
(`zoo.contract.ZooModel`), which `register` checks before accepting an entry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from zoo import config as config_lib, contract


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The data a model consumes: a dataset name and how pixels are presented.

    Attributes:
      name: a dataset known to `training.data` (e.g. "mnist", "binarized_mnist").
      binarize: True for models with a Bernoulli likelihood. Grey-scale data is
        then binarized (dynamically, a fresh draw per visit, for training).
      labels: True for models that need the class label: batches then carry
        "label" (int64 [batch]) beside "image".
      captions: True for models conditioned on a caption: batches then carry "caption",
        the caption's word ids, int64 [batch, max_words] (`zoo.common.text.Tokenizer` over
        `vocabulary`), or its text, string [batch], when `vocabulary` is empty.
      vocabulary, max_words: the model's tokenizer, the same its SavedModel applies to text.
      count_vocabulary: True for a captioned model whose config leaves its vocabulary to the data:
        `training.fit` counts the words of the training captions or texts (`training.data.counted_vocabulary`)
        and builds the model from `config.with_vocabulary(words)`.
      set_size: 0 for models of single examples; N > 0 for models of sets (the Neural
        Statistician): each example is then N items of one class, "image" [batch, N, H, W, C]
        and "label" the class id [batch], the train role drawing from other classes than the
        evaluation roles (`training.data`).
      item_shape: for models of sets whose items are vectors (2-D points, 1-D samples), their shape,
        e.g. (2,); () when the items are images of the config's image_shape.
      text: True for models of text: batches then carry "text", word ids int64 [batch, max_words]
        (`zoo.common.text.Tokenizer` over `vocabulary`, with `zoo.common.text.TEXT_PUNCTUATION`), and no
        "image"; `count_vocabulary` counts the training texts' words.
    """

    name: str
    binarize: bool
    labels: bool = False
    captions: bool = False
    vocabulary: tuple[str, ...] = ()
    max_words: int = 0
    count_vocabulary: bool = False
    set_size: int = 0
    item_shape: tuple[int, ...] = ()
    text: bool = False

    @property
    def example_key(self) -> str:
        """The batch's key of what the model generates: "text" or "image"."""
        return "text" if self.text else "image"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the zoo: a family plus a preset of config overrides.

    Attributes:
      name: "zoo.<short name>".
      description: one line, with the paper.
      config_class: the family's frozen config dataclass (a `zoo.config.TrainingConfig`).
      build: config → a built model satisfying `zoo.contract.ZooModel`; its return
        annotation names the model class, which `register` checks.
      dataset: config → the `DatasetSpec` the model trains on.
      preset: the entry's overrides of the config defaults (the paper's settings).
      tiny: overrides on top of the preset for a model that builds in a second and trains
        a step in a few: what the contract suite and smoke runs use.
      evaluation: what `training.evaluate` measures, keys of `zoo.contract.EVALUATIONS`.
      max_steps_per_execution: a cap on `training.fit`'s steps per call for models that
        TensorFlow cannot run several steps of in one call; None: no cap.
    """

    name: str
    description: str
    config_class: type[config_lib.TrainingConfig]
    build: Callable[[Any], contract.ZooModel]
    dataset: Callable[[Any], DatasetSpec]
    preset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tiny: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    evaluation: tuple[str, ...] = ("likelihood",)
    max_steps_per_execution: int | None = None

    @property
    def short_name(self) -> str:
        """The name without the `zoo.` prefix, used for export folders."""
        return self.name.removeprefix("zoo.")

    def make_config(self, **overrides: Any):
        """The paper config of this entry, with the preset and then `overrides`."""
        return config_lib.replace(self.config_class(), **{**self.preset, **overrides})

    def make_tiny_config(self, **overrides: Any):
        """A config of this entry small enough for tests: the preset, `tiny`, then `overrides`."""
        return self.make_config(**{**self.tiny, **overrides})

    @property
    def model_class(self) -> type:
        """The class `build` returns (its return annotation)."""
        return contract.model_class(self.build)


_REGISTRY: dict[str, ModelSpec] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(spec: ModelSpec) -> ModelSpec:
    """Adds `spec` to the zoo after checking it against the model contract.

    Raises ValueError for a name registered twice or not of the form zoo.<name>,
    zoo.contract.ContractError for an entry the contract refuses, and ConfigError for
    a preset or tiny override that is not a valid config.
    """
    if not spec.name.startswith("zoo.") or not spec.short_name.isidentifier():
        raise ValueError(f"registry names look like zoo.<identifier>, got {spec.name!r}")
    if spec.name in _REGISTRY:
        raise ValueError(f"{spec.name} is registered twice")
    contract.check_entry(spec.name, spec.config_class, spec.build, spec.evaluation)
    if spec.dataset(spec.make_config()).count_vocabulary and not callable(
            getattr(spec.config_class, "with_vocabulary", None)):
        raise contract.ContractError(f"{spec.name} counts its vocabulary from the training data, so "
                                     f"{spec.config_class.__name__} needs with_vocabulary(words)")
    spec.make_tiny_config()
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes an entry (for tests that register a throwaway one)."""
    del _REGISTRY[name]


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
