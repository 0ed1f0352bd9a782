"""The model contract: everything `training/`, `export/` and `serving/` may ask of a zoo model.

A registry entry (`zoo.registry.ModelSpec`) names a config class and a builder; the
builder's return annotation names the model class, and `check_entry` holds that class
to `ZooModel` (plus the capability each declared evaluation needs) when the entry is
registered, so a broken family fails at import with a message naming what is missing,
not halfway through a training run.

`docs/adding_a_model.md` walks through a new family against this contract.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Mapping, Protocol, Sequence

import keras
import tensorflow as tf

from zoo.config import TrainingConfig

Signatures = Mapping[str, tuple[Callable[..., Mapping[str, tf.Tensor]], Sequence[tf.TensorSpec]]]


@typing.runtime_checkable
class ZooModel(Protocol):
    """A built `keras.Model` of the zoo.

    Its constructor takes the config dataclass (plain values only), so
    `get_config`/`from_config` and `.keras` reloads come for free
    (`zoo.common.serialization.ConfigSerialization`). Data batches are dicts: "image",
    float32 [batch, H, W, C] in [0, 1], and "label", int64 [batch], when the entry's
    `DatasetSpec.labels` says so; for a model of text (`DatasetSpec.text`), "text", word ids
    int64 [batch, max_words] instead of "image". An example is an image, or a text.
    """

    config: TrainingConfig

    def compile_for_training(self, steps_per_epoch: int) -> None:
        """Compiles with the optimizers (and schedules) the model derives from its config."""

    def serving_signatures(self) -> Signatures:
        """name → (function of tensors returning a dict of tensors, its input `tf.TensorSpec`s).

        Every input and output has a batch dimension; randomness is stateless and seeded
        from the request (an int64 `seed` per example); only core TensorFlow ops.
        `serving_default` maps seeds to images.
        """

    def summaries(self, examples: tf.Tensor) -> Mapping[str, tf.Tensor]:
        """TensorBoard summaries given a batch of real examples (its "image", or its "text" for a model of
        text): name → images [N, H, W, C] in [0, 1], drawn as a grid, or strings [N], written as text."""

    def sample(self, seeds: tf.Tensor) -> tf.Tensor:
        """One example per int64 seed, a pure function of each seed: an image in [0, 1], [len(seeds), H, W, C],
        or for a model of text a string, [len(seeds)]."""


class ImportanceSampledLikelihood(Protocol):
    """The capability behind `ModelSpec.evaluation` "likelihood": test metrics from a bound
    on log p(x) with k importance samples (e.g. −L_k, Burda et al. 2016, Eq. 8)."""

    def use_importance_samples(self, k: int) -> None:
        """Makes the test metrics (`test_step`) use k importance samples per example."""


class CaptionConditioned(Protocol):
    """The capability behind `ModelSpec.evaluation` "caption_accuracy": images drawn from captions,
    which a classifier then reads (`training.captions.caption_accuracy`)."""

    def sample_from_caption(self, captions: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        """One image in [0, 1] per caption (string [N]) and int64 seed [N], [N, H, W, C]."""


class DecoderDensity(Protocol):
    """The capability behind `ModelSpec.evaluation` "ais": a prior and a decoder density that can be
    evaluated, so that annealed importance sampling (`zoo.common.ais`) estimates log p(x). The latents
    are one vector per example, [..., D] (a model with several stochastic layers puts them side by side)."""

    def prior_latents(self, shape, seed: tf.Tensor) -> tf.Tensor:
        """z ~ p(z), [*shape, D], from a stateless int32 [2] seed."""

    def log_prior(self, latents: tf.Tensor) -> tf.Tensor:
        """log p(z) of latents [..., D], [...]."""

    def log_decoder(self, images: tf.Tensor, latents: tf.Tensor) -> tf.Tensor:
        """log p(x_b | z) of images [batch, H, W, C] and latents [chains, batch, D], [chains, batch]."""

    def decoder_sample(self, latents: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """x ~ p(x | z) for latents [batch, D], [batch, H, W, C]: data simulated from the model."""


class ConditionalDecoderDensity(Protocol):
    """The capability behind `ModelSpec.evaluation` "conditional_ais": annealed importance sampling of
    log p(y | x) = log ∫ p(z | x) p(y | x, z) dz for a model of an output y given an input x, both read
    from a batch (Sohn et al. 2015, Sec. 4.1, estimate it by importance sampling instead)."""

    def ais_conditions(self) -> Sequence[str]:
        """The ways x is taken from a batch that the evaluation reports, each by name (e.g. "given_1")."""

    def conditioned_density(self, batch: Mapping[str, tf.Tensor], condition: str) -> DecoderDensity:
        """The densities of the batch's examples under one condition, as a `DecoderDensity` over its
        "image": prior_latents and log_prior of p(z | x_b), log_decoder of p(y_b | x_b, z) (x_b's own
        pixels do not count), and decoder_sample an image with y drawn and x_b's pixels kept, for the
        bidirectional check. Its latents' batch is the batch's."""


@typing.runtime_checkable
class ObservationNoise(Protocol):
    """An optional part of "ais": a decoder density p(x | z) = N(x; g(z), σ² I) around a deterministic
    generator g, whose σ the evaluation chooses (`training.evaluate --ais_observation_stddev`), as Wu et
    al. 2017 do for GANs."""

    observation_stddev: float

    def use_observation_stddev(self, stddev: float) -> None:
        """Sets σ of the Gaussian observation model, in [0, 1] pixel units."""


class EncoderFeatures(Protocol):
    """The capability behind `ModelSpec.evaluation` "feature_1nn": a learned representation of images, judged
    by how often a test image's nearest train image (cosine distance) has its label
    (`training.nearest_neighbour`; Donahue et al. 2017, Table 1)."""

    def encode_features(self, images: tf.Tensor) -> tf.Tensor:
        """One feature vector per image in [0, 1], [N, D]; deterministic."""


class SetContext(Protocol):
    """The capability behind `ModelSpec.evaluation` "few_shot" and "context_clusters": a posterior over a
    context c shared by the items of a set (Edwards & Storkey 2017), compared between sets
    (`training.few_shot`)."""

    def context(self, items: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """q(c | D) of sets [N, S, *item_shape], any S >= 1, as a diagonal Gaussian: (mean, stddev), [N, C]."""


EVALUATIONS: Mapping[str, type | None] = {
    "likelihood": ImportanceSampledLikelihood,  # the test metrics with k importance samples
    "exact_likelihood": None,                   # the test metrics as they are (a tractable likelihood)
    "sample_quality": None,                     # FID and friends of `ZooModel.sample`
    "caption_accuracy": CaptionConditioned,     # a classifier reads the digits drawn where captions put them
    "ais": DecoderDensity,                      # annealed importance sampling of log p(x), with --ais_steps
    "conditional_ais": ConditionalDecoderDensity,  # the same for log p(y | x) of a conditional model
    "feature_1nn": EncoderFeatures,             # 1-nearest-neighbour accuracy of the features on a labelled dataset
    "few_shot": SetContext,                     # K-way N-shot classification of held-out classes by their contexts
    "context_clusters": SetContext,             # nearest-centroid accuracy of test sets' context means by label
}


class ContractError(TypeError):
    """A registry entry that does not satisfy the model contract, naming what is missing."""


def _protocol_methods(protocol: type) -> list[str]:
    return [name for name, value in vars(protocol).items() if inspect.isfunction(value) and not name.startswith("_")]


def model_class(build: Callable[..., Any]) -> type:
    """The model class a builder returns, from its return annotation."""
    try:
        returned = typing.get_type_hints(build).get("return")
    except NameError as error:
        raise ContractError(f"the return annotation of {build.__qualname__} does not resolve: {error}") from None
    if not (inspect.isclass(returned) and issubclass(returned, keras.Model)):
        raise ContractError(f"{build.__qualname__} must declare the keras.Model subclass it builds as its "
                            f"return annotation (def build(config) -> MyModel), got {returned!r}")
    return returned


def check_entry(name: str, config_class: type, build: Callable[..., Any], evaluation: Sequence[str]) -> type:
    """Checks a registry entry against the contract; returns its model class.

    Raises ContractError naming the entry and every missing piece.
    """
    problems = []
    if not (dataclasses.is_dataclass(config_class) and issubclass(config_class, TrainingConfig)
            and config_class.__dataclass_params__.frozen):
        problems.append(f"config_class {getattr(config_class, '__name__', config_class)!r} must be a frozen "
                        f"dataclass subclassing zoo.config.TrainingConfig")
    try:
        cls = model_class(build)
    except ContractError as error:
        raise ContractError(f"{name}: {error}") from None
    missing = [method for method in _protocol_methods(ZooModel) if not callable(getattr(cls, method, None))]
    if missing:
        problems.append(f"{cls.__name__} lacks {', '.join(missing)} (zoo.contract.ZooModel)")
    unknown = [kind for kind in evaluation if kind not in EVALUATIONS]
    if unknown:
        problems.append(f"unknown evaluation {', '.join(unknown)}; known: {', '.join(EVALUATIONS)}")
    for kind in evaluation:
        capability = EVALUATIONS.get(kind)
        lacking = [method for method in _protocol_methods(capability or object)
                   if not callable(getattr(cls, method, None))]
        if lacking:
            problems.append(f"evaluation {kind!r} needs {cls.__name__}.{', '.join(lacking)} "
                            f"(zoo.contract.{capability.__name__})")
    if keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is not cls:
        problems.append(f"{cls.__name__} is not registered with @keras.saving.register_keras_serializable, "
                        f"so a .keras file of it would not reload")
    if problems:
        raise ContractError(f"{name} does not satisfy the model contract: " + "; ".join(problems))
    return cls
