"""The conditional variational autoencoder (CVAE) for structured output prediction.

Sohn, Lee, Yan. Learning Structured Output Representation using Deep Conditional
Generative Models. NeurIPS 2015.

Three networks model an output y given an input x: the prior network p(z | x), the
recognition network q(z | x, y) and the generation network p(y | x, z). They are trained
on the conditional bound (Sohn et al. Eq. 4–5)

    log p(y | x) ≥ E_q(z|x,y)[log p(y | x, z)] − KL(q(z | x, y) ‖ p(z | x)),

with the KL between the two Gaussians in closed form, and evaluated by the negative
conditional log-likelihood −log p(y | x), estimated by importance sampling with q(z | x, y)
as the proposal (Sec. 4.1):

    log p(y | x) ≈ log (1/k) Σ_j p(y | x, z_j) p(z_j | x) / q(z_j | x, y),   z_j ~ q(z | x, y),

which is the IWAE bound L_k of Burda et al. 2016 (Eq. 8) made conditional. As in Sohn et
al. Sec. 4.3, a deterministic baseline network ŷ = NN(x) is trained beside it (on
−log p(y | x) with p = Bernoulli(ŷ), the paper's "NN baseline" row) and its prediction is
an input of the prior network.

Two tasks (`task`):

* "quadrants" (Sec. 5.1, MNIST): x is a digit with some quadrants hidden, y the hidden
  pixels. The paper's settings give 1, 2 or 3 quadrants (`PAPER_KNOWN_QUADRANTS`); one
  model is trained on the counts in `given_quadrants`, each example a count drawn
  uniformly, and evaluated on each of 1, 2 and 3 (`nll_given_1` …). Count 0 (nothing
  given) makes the model an unconditional VAE as well, which `sample(seeds)` draws from.
* "label": x is the class label, y the whole image (class-conditional generation).

Networks are MLPs of ReLU units; the observation model is a Bernoulli per pixel of
binarized MNIST.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import bounds, distributions, signatures, steps
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_normal, per_example_uniform

QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")  # the order of a known-quadrants vector
PAPER_KNOWN_QUADRANTS = (  # row c: the quadrants given in the setting with c known quadrants (Sohn et al. Fig. 2)
    (0, 0, 0, 0),          # none: x says nothing, p(y | x) is a VAE's p(x) (ours, for `sample`)
    (0, 0, 1, 0),          # 1: bottom left
    (1, 0, 1, 0),          # 2: the left half
    (1, 1, 1, 0),          # 3: all but bottom right
)
PAPER_SETTINGS = (1, 2, 3)  # the columns of Sohn et al. Table 1
LATENT_STREAM, LABEL_STREAM = 0, 1  # streams of a request seed (zoo.common.stateless)


@dataclasses.dataclass(frozen=True)
class CVAEConfig(config_lib.TrainingConfig):
    task: str = "quadrants"                 # "quadrants" (Sec. 5.1) or "label" (class-conditional generation)
    given_quadrants: tuple[int, ...] = (0, 1, 2, 3)  # counts trained on; the paper trains one model per count
    num_classes: int = 10                   # task=label
    # Networks. The paper's MNIST sizes are not in this project's reach (see docs/cvae.md); these are
    # those of Pyro's reproduction (examples/cvae: 500-500 ReLU, 200-d z), whose numbers we compare with.
    hidden_units: int = 500
    hidden_layers: int = 2
    latent_units: int = 200
    baseline_guess: bool = True             # Sec. 4.3: the prior network sees the baseline NN's prediction
    k: int = 1                              # samples of z per example in training (Eq. 5: L = 1)
    # Data and optimisation (Pyro's reproduction: Adam 1e-3, batch 128).
    dataset: str = "mnist"                  # binarized dynamically
    batch_size: int = 128
    epochs: int = 50
    learning_rate: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (self.task in ("quadrants", "label"), "task must be 'quadrants' or 'label'"),
            (bool(self.given_quadrants) and all(0 <= count <= 3 for count in self.given_quadrants),
             "given_quadrants must list counts of known quadrants in 0..3, e.g. 1,2,3"),
            (self.hidden_units >= 1 and self.hidden_layers >= 1, "hidden_units and hidden_layers must be >= 1"),
            (self.latent_units >= 1, "latent_units must be >= 1"),
            (self.k >= 1, "k must be >= 1"),
            (self.num_classes >= 2, "num_classes must be >= 2"),
            (self.task == "label" or self.image_shape[0] >= 2 and self.image_shape[1] >= 2,
             "task=quadrants needs images of at least 2×2 pixels"),
        ])


def quadrant_mask(known_quadrants: tf.Tensor, image_shape) -> tf.Tensor:
    """Known quadrants [batch, 4] (0/1 in `QUADRANTS` order) → a pixel mask [batch, H, W, C], 1 where known.

    The top half is the first H // 2 rows, the left half the first W // 2 columns.
    """
    height, width, channels = image_shape
    top = tf.range(height) < height // 2
    left = tf.range(width) < width // 2
    regions = tf.cast(tf.stack([top[:, None] & left[None, :], top[:, None] & ~left[None, :],
                                ~top[:, None] & left[None, :], ~top[:, None] & ~left[None, :]]), tf.float32)
    mask = tf.einsum("bq,qhw->bhw", tf.cast(known_quadrants, tf.float32), regions)
    return tf.tile(mask[..., None], [1, 1, 1, channels])


def masked_log_prob(likelihood, images: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Σ over pixels of weights · log p(pixel) for a per-pixel `likelihood` (a `tfd.Independent`):
    log p(y | ·) of the pixels y is made of, [...]."""
    return tf.reduce_sum(likelihood.distribution.log_prob(images) * weights, axis=[-3, -2, -1])


@keras.saving.register_keras_serializable(package="zoo")
class CVAE(ConfigSerialization, keras.Model):
    """p(z | x), q(z | x, y), p(y | x, z) and the baseline ŷ = NN(x) (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape] in {0, 1}, and
    "label", int64 [batch], for task=label. The condition x is {"image", "known_quadrants"} for
    task=quadrants (the image's unknown pixels are ignored) and {"label"} for task=label.
    """

    config_class = CVAEConfig

    def __init__(self, config: CVAEConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config

        def network(head, name):
            return distributions.ConditionalDistribution(config.hidden_units, config.hidden_layers, head, "relu",
                                                         name=name)

        latent = (config.latent_units,)
        self.baseline = network(distributions.BernoulliLayer(config.image_shape), "baseline") \
            if config.baseline_guess else None
        self.prior_network = network(distributions.GaussianLayer(latent), "p_z")
        self.recognition_network = network(distributions.GaussianLayer(latent), "q_z")
        self.generation_network = network(distributions.BernoulliLayer(config.image_shape), "p_y")
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        self.evaluation_samples = config.k
        names = ["loss", "elbo", "nll", "reconstruction", "kl", *["baseline_nll"] * config.baseline_guess]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        per_setting = ["nll", *["baseline_nll"] * config.baseline_guess] if config.task == "quadrants" else []
        self.setting_trackers = {f"{name}_given_{count}": keras.metrics.Mean(name=f"{name}_given_{count}")
                                 for count in PAPER_SETTINGS for name in per_setting}

    @property
    def _pixels(self) -> int:
        return math.prod(self.config.image_shape)

    @property
    def _condition_size(self) -> int:
        return 2 * self._pixels if self.config.task == "quadrants" else self.config.num_classes

    def build(self, input_shape=None):
        condition = self._condition_size
        if self.baseline is not None:
            self.baseline.build((None, condition))
        self.prior_network.build((None, condition + self._pixels * self.config.baseline_guess))
        self.recognition_network.build((None, condition + self._pixels))
        self.generation_network.build((None, condition + self.config.latent_units))
        super().build(input_shape)

    @property
    def metrics(self):
        return [*self.trackers.values(), *self.setting_trackers.values()]

    # The condition x.

    def _condition(self, condition):
        """x → (features [batch, F], the weights [batch, H, W, C] of the pixels y is made of).

        Quadrants: the known pixels and the mask side by side, so a black known pixel differs
        from an unknown one; y is the unknown pixels. Label: one-hot; y is the whole image.
        """
        if self.config.task == "label":
            labels = condition["label"]
            weights = tf.ones([tf.shape(labels)[0], *self.config.image_shape])
            return tf.one_hot(labels, self.config.num_classes), weights
        mask = quadrant_mask(condition["known_quadrants"], self.config.image_shape)
        batch = tf.shape(mask)[0]
        features = tf.concat([tf.reshape(condition["image"] * mask, [batch, -1]), tf.reshape(mask, [batch, -1])], -1)
        return features, 1.0 - mask

    def _prior(self, features):
        """(p(z | x, ŷ), the baseline's p(y | x) or None). The prior sees ŷ without passing gradients into
        the baseline, which is trained on its own loss (Sec. 4.3: the CVAE is built on a trained NN)."""
        if self.baseline is None:
            return self.prior_network(features), None
        guess = self.baseline(features)
        flat_guess = tf.reshape(tf.stop_gradient(guess.mean()), [tf.shape(features)[0], -1])
        return self.prior_network(tf.concat([features, flat_guess], -1)), guess

    def _generate(self, features, latents):
        """p(y | x, z) for latents [..., batch, D] and features [batch, F]."""
        features = tf.broadcast_to(features, tf.concat([tf.shape(latents)[:-1], tf.shape(features)[-1:]], 0))
        return self.generation_network(tf.concat([features, latents], -1))

    # The objective (Sohn et al. Eq. 4–5) and the conditional likelihood (Sec. 4.1).

    def _terms(self, images, condition, noise):
        """Per-example terms for targets `images` given `condition`, with noise ε [k, batch, D] for z ~ q.

        log w_j = log p(y | x, z_j) + log p(z_j | x) − log q(z_j | x, y): `nll` is −L_k = −log mean_j w_j;
        `elbo` = mean_j log p(y | x, z_j) − KL(q ‖ p), the KL in closed form.
        """
        features, weights = self._condition(condition)
        prior, guess = self._prior(features)
        batch = tf.shape(images)[0]
        posterior = self.recognition_network(tf.concat([features, tf.reshape(images, [batch, -1])], -1))
        latents = distributions.reparameterize(posterior, noise)
        log_likelihood = masked_log_prob(self._generate(features, latents), images, weights)
        log_weights = log_likelihood + prior.log_prob(latents) - posterior.log_prob(latents)
        reconstruction = tf.reduce_mean(log_likelihood, axis=0)
        kl = distributions.kl_between_gaussians(posterior, prior)
        terms = {"elbo": reconstruction - kl, "nll": -bounds.iwae_bound(log_weights),
                 "reconstruction": reconstruction, "kl": kl, "log_weights": log_weights}
        terms["loss"] = -terms["elbo"]
        if guess is not None:
            terms["baseline_nll"] = -masked_log_prob(guess, images, weights)
            terms["loss"] += terms["baseline_nll"]
        return terms

    def _noise(self, k, batch, seed):
        return tf.random.stateless_normal([k, batch, self.config.latent_units], seed=seed)

    def _training_condition(self, batch, seed):
        """The condition of a training batch: for quadrants, each example's count of known quadrants
        drawn uniformly from `given_quadrants`, the paper's quadrants for that count."""
        if self.config.task == "label":
            return {"label": batch["label"]}
        images = batch["image"]
        choice = tf.random.stateless_uniform([tf.shape(images)[0]], seed, 0, len(self.config.given_quadrants),
                                             tf.int32)
        counts = tf.gather(tf.constant(self.config.given_quadrants, tf.int32), choice)
        return {"image": images, "known_quadrants": tf.gather(tf.constant(PAPER_KNOWN_QUADRANTS, tf.float32), counts)}

    def train_step(self, data):
        images = data["image"]
        seed = steps.replica_seed(self.seed_generator)
        condition = self._training_condition(data, tf.random.experimental.stateless_fold_in(seed, 0))
        with tf.GradientTape() as tape:
            terms = self._terms(images, condition, self._noise(self.config.k, tf.shape(images)[0],
                                                               tf.random.experimental.stateless_fold_in(seed, 1)))
            loss = tf.reduce_sum(terms["loss"]) / steps.global_batch_size(images)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return steps.update_trackers(self.trackers, terms)

    def test_step(self, data):
        """Label: the terms. Quadrants: the terms of each of the paper's settings (`nll_given_1` …), and
        their mean over the settings as `nll`, `elbo`, …"""
        images = data["image"]
        seed = steps.replica_seed(self.seed_generator)
        if self.config.task == "label":
            noise = self._noise(self.evaluation_samples, tf.shape(images)[0], seed)
            return steps.update_trackers(self.trackers, self._terms(images, {"label": data["label"]}, noise))
        settings = []
        for count in PAPER_SETTINGS:
            known = tf.tile(tf.constant([PAPER_KNOWN_QUADRANTS[count]], tf.float32), [tf.shape(images)[0], 1])
            noise = self._noise(self.evaluation_samples, tf.shape(images)[0],
                                tf.random.experimental.stateless_fold_in(seed, count))
            terms = self._terms(images, {"image": images, "known_quadrants": known}, noise)
            for name in self.trackers.keys() & {"nll", "baseline_nll"}:
                self.setting_trackers[f"{name}_given_{count}"].update_state(terms[name])
            settings.append(terms)
        logs = steps.update_trackers(self.trackers, {name: tf.concat([terms[name] for terms in settings], 0)
                                                     for name in self.trackers})
        return {**logs, **{name: tracker.result() for name, tracker in self.setting_trackers.items()}}

    def use_importance_samples(self, k: int) -> None:
        """Evaluates (`test_step`) with k samples of z per example: `nll` is then −L_k of log p(y | x)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.evaluation_samples = k

    def compile_for_training(self, steps_per_epoch: int):
        del steps_per_epoch  # a constant learning rate
        optimizer = keras.optimizers.Adam(self.config.learning_rate)
        self.compile(optimizer=optimizer, jit_compile=self.config.jit_compile)
        optimizer.build(self.trainable_variables)  # slots now, so train_step is traced once

    # Prediction: z ~ p(z | x), y = E[y | x, z]; these back the serving signatures.

    def predict_output(self, condition, seeds):
        """E[y | x, z] with z ~ p(z | x) drawn from each example's seed (Sec. 4.1, stochastic inference),
        known pixels (quadrants) copied from the input: one image in [0, 1] per seed."""
        features, weights = self._condition(condition)
        prior, _ = self._prior(features)
        noise = per_example_normal(seeds, [self.config.latent_units], stream=LATENT_STREAM)
        predicted = self._generate(features, distributions.reparameterize(prior, noise)).mean()
        if self.config.task == "label":
            return predicted
        return condition["image"] * (1.0 - weights) + predicted * weights

    def complete(self, images, known_quadrants, seeds):
        """Completions of images [N, H, W, C] whose known quadrants are known_quadrants [N, 4], one per seed."""
        return self.predict_output({"image": images, "known_quadrants": known_quadrants}, seeds)

    def sample_conditional(self, seeds, labels):
        """An image of class labels[n] per seeds[n] (task=label)."""
        return self.predict_output({"label": labels}, seeds)

    def sample(self, seeds):
        """Label: an image of class drawn from the seed. Quadrants: a completion of nothing (count 0)."""
        if self.config.task == "label":
            labels = per_example_uniform(seeds, [], LABEL_STREAM, 0, self.config.num_classes, tf.int64)
            return self.sample_conditional(seeds, labels)
        count = tf.shape(seeds)[0]
        return self.complete(tf.zeros([count, *self.config.image_shape]), tf.zeros([count, 4]), seeds)

    # Densities for annealed importance sampling of log p(y | x) (zoo.common.ais, "conditional_ais").

    def ais_conditions(self):
        """Quadrants: the paper's settings, "given_1" … "given_3". Label: "label"."""
        return ("label",) if self.config.task == "label" else tuple(f"given_{count}" for count in PAPER_SETTINGS)

    def conditioned_density(self, batch, condition):
        """p(z | x_b) and p(y_b | x_b, z) of a batch under one of `ais_conditions` (zoo.contract)."""
        if condition not in self.ais_conditions():
            raise ValueError(f"unknown condition {condition!r}; {self.name} has {', '.join(self.ais_conditions())}")
        if self.config.task == "label":
            return ConditionedDensity(self, batch["image"], {"label": batch["label"]})
        count = int(condition.removeprefix("given_"))
        known = tf.tile(tf.constant([PAPER_KNOWN_QUADRANTS[count]], tf.float32), [tf.shape(batch["image"])[0], 1])
        return ConditionedDensity(self, batch["image"], {"image": batch["image"], "known_quadrants": known})

    def serving_signatures(self):
        config = self.config
        declared = signatures.seed_signatures(self.sample)
        if config.task == "label":
            declared["sample_conditional"] = (
                lambda seed, label: {"images": self.sample_conditional(
                    seed, signatures.checked_labels(label, config.num_classes))},
                [signatures.SEED, tf.TensorSpec([None], tf.int64, name="label")])
            return declared

        def complete(images, known_quadrants, seed):
            message = "known_quadrants must hold 0 or 1 per quadrant (top_left, top_right, bottom_left, bottom_right)"
            checks = [tf.debugging.assert_non_negative(known_quadrants, message=message),
                      tf.debugging.assert_less_equal(known_quadrants, tf.constant(1, tf.int64), message=message)]
            with tf.control_dependencies(checks):
                known = tf.cast(known_quadrants, tf.float32)
            return {"images": self.complete(signatures.checked_finite(images, "images"), known, seed)}

        declared["complete"] = (complete, [tf.TensorSpec([None, *config.image_shape], tf.float32, name="images"),
                                           tf.TensorSpec([None, 4], tf.int64, name="known_quadrants"),
                                           signatures.SEED])
        return declared

    def summaries(self, images):
        """Label: a row per class. Quadrants, per paper setting: rows of (input with unknown pixels grey,
        six completions, the truth) for eight images."""
        if self.config.task == "label":
            seeds, classes = signatures.class_rows(self.config.num_classes)
            return {"per_class": self.sample_conditional(seeds, classes)}
        images = images[:8]
        rows = tf.shape(images)[0]
        grids = {"samples": self.sample(tf.range(64, dtype=tf.int64))}
        for count in PAPER_SETTINGS:
            known = tf.tile(tf.constant([PAPER_KNOWN_QUADRANTS[count]], tf.float32), [rows, 1])
            mask = quadrant_mask(known, self.config.image_shape)
            repeated = tf.repeat(images, 6, axis=0)
            completions = self.complete(repeated, tf.repeat(known, 6, axis=0), tf.tile(tf.range(6, dtype=tf.int64),
                                                                                       [rows]))
            completions = tf.reshape(completions, [rows, 6, *self.config.image_shape])
            shown = images * mask + 0.5 * (1.0 - mask)
            grid = tf.concat([shown[:, None], completions, images[:, None]], axis=1)
            grids[f"completions_given_{count}"] = tf.reshape(grid, [-1, *self.config.image_shape])
        return grids


class ConditionedDensity:
    """The prior p(z | x) and decoder p(y | x, z) of a CVAE with x fixed to a batch's condition: the
    `zoo.contract.DecoderDensity` that AIS anneals along to estimate log p(y | x) per example."""

    def __init__(self, model: CVAE, images: tf.Tensor, condition):
        self.model = model
        self.images = images
        self.features, self.weights = model._condition(condition)
        self.prior, _ = model._prior(self.features)

    def prior_latents(self, shape, seed):
        """z ~ p(z | x_b), [*shape, D]; the last of `shape` is the batch."""
        noise = tf.random.stateless_normal([*shape, self.model.config.latent_units], seed=seed)
        return distributions.reparameterize(self.prior, noise)

    def log_prior(self, latents):
        """log p(z | x_b) of latents [..., batch, D]."""
        return self.prior.log_prob(latents)

    def log_decoder(self, images, latents):
        """log p(y_b | x_b, z), [chains, batch]: the pixels of `images` that y is made of."""
        return masked_log_prob(self.model._generate(self.features, latents), images, self.weights)

    def decoder_sample(self, latents, seed):
        """The batch's images with y ~ p(y | x_b, z) in place of their y, [batch, H, W, C]."""
        drawn = self.model._generate(self.features, latents).sample(seed=seed)
        return self.images * (1.0 - self.weights) + drawn * self.weights


def build(config: CVAEConfig) -> CVAE:
    model = CVAE(config, name="cvae")
    model.build()
    return model


def dataset(config: CVAEConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=True, labels=config.task == "label")


TINY = {"hidden_units": 16, "hidden_layers": 1, "latent_units": 3, "image_shape": (6, 6, 1), "batch_size": 8}

registry.register(registry.ModelSpec(
    "zoo.cvae", "conditional VAE (Sohn et al. 2015): MNIST quadrant completion", CVAEConfig, build, dataset,
    tiny=TINY, evaluation=("likelihood", "conditional_ais")))
registry.register(registry.ModelSpec(
    "zoo.cvae_label", "conditional VAE (Sohn et al. 2015): class-conditional MNIST digits", CVAEConfig, build,
    dataset, preset={"task": "label"}, tiny=TINY, evaluation=("likelihood", "conditional_ais")))
