"""Generative adversarial networks: GAN, DCGAN, WGAN(-GP), conditional GAN, InfoGAN, EBGAN.

Goodfellow et al. Generative Adversarial Nets. NeurIPS 2014, arXiv:1406.2661.
Radford, Metz, Chintala. Unsupervised Representation Learning with Deep
  Convolutional GANs (DCGAN). ICLR 2016, arXiv:1511.06434.
Arjovsky, Chintala, Bottou. Wasserstein GAN. ICML 2017, arXiv:1701.07875.
Gulrajani et al. Improved Training of Wasserstein GANs (WGAN-GP). NeurIPS 2017,
  arXiv:1704.00028.
Mirza, Osindero. Conditional Generative Adversarial Nets. arXiv:1411.1784, 2014.
Chen et al. InfoGAN. NeurIPS 2016, arXiv:1606.03657.
Zhao, Mathieu, LeCun. Energy-based Generative Adversarial Network (EBGAN). ICLR
  2017, arXiv:1609.03126.
Salimans et al. Improved Techniques for Training GANs. NeurIPS 2016,
  arXiv:1606.03498 (minibatch discrimination, Sec. 3.2).

One family, one `train_step` (Gulrajani et al., Alg. 1, which contains Goodfellow
et al.'s Alg. 1 at n_critic = 1): `critic_steps` discriminator updates on fresh
real minibatches, then one generator update. The variants are presets of
`GANConfig`: the loss pair (`loss`, `generator_loss`), the critic steps, the
penalty weight, the networks (`architecture`) and the optional class labels,
InfoGAN codes and minibatch discrimination. Networks work on pixels in [−1, 1]
(tanh output, Radford et al. Sec. 3); data and samples are in [0, 1].

What `loss` changes (D's head, its score, the loss pair) lives in `zoo.gan.objectives`;
what G is fed (z, the class y, InfoGAN's codes c and their Q(c | x)) in `zoo.gan.latents`;
the networks in `zoo.gan.networks`, the objectives' formulas in `zoo.gan.losses`.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import signatures, steps
from zoo.common.observation import GaussianObservations
from zoo.common.serialization import ConfigSerialization
from zoo.gan import losses as gan_losses, objectives
from zoo.gan.latents import LatentInputs
from zoo.gan.layers import ConcatLabels
from zoo.gan.networks import ClipWeights, build_sequence, encoder_layers, generator_layers, run_sequence

PENALTY_STREAM = 3  # ε of the gradient penalty; streams 0-2 of a step seed are the latents' (zoo.gan.latents)


@dataclasses.dataclass(frozen=True)
class GANConfig(config_lib.TrainingConfig):
    # Networks.
    architecture: str = "mlp"               # "mlp" (Goodfellow et al.) or "dcgan" (Radford et al. Sec. 3)
    noise_dim: int = 100                    # Radford et al. Sec. 4: 100-d z ~ U[−1, 1]
    generator_units: int = 1200             # mlp: two ReLU layers (Goodfellow et al., authors' mnist.yaml)
    discriminator_units: int = 240          # mlp: two maxout layers (authors' mnist.yaml)
    maxout_pieces: int = 5                  # authors' mnist.yaml
    dropout: float = 0.5                    # mlp discriminator, hidden layers (authors' mnist.yaml)
    filters: int = 64                       # dcgan: D has filters, 2·filters; G mirrors it (28×28 adaptation)
    normalization: str = "batch"            # D's hidden layers: "batch" (Radford Sec. 3), "layer" (Gulrajani Sec. 4), "none"
    minibatch_discrimination: bool = False  # Salimans et al. Sec. 3.2
    minibatch_kernels: int = 100            # B (Salimans et al., authors' code)
    minibatch_kernel_dim: int = 5           # C (Salimans et al., authors' code)
    # Conditioning and codes.
    conditional: bool = False               # Mirza & Osindero: y into both G and D
    num_classes: int = 10
    categorical_code: int = 0               # InfoGAN, Sec. 7.1: one 10-way code on MNIST (0: none)
    continuous_codes: int = 0               # InfoGAN, Sec. 7.1: two U[−1, 1] codes on MNIST
    categorical_info_weight: float = 1.0    # InfoGAN, Sec. 6: λ = 1 for discrete codes
    continuous_info_weight: float = 0.1     # InfoGAN, Sec. 6: "a smaller λ" for continuous codes; value ours
    # Objective.
    loss: str = "gan"                       # "gan" (Goodfellow Eq. 1), "wasserstein" (Arjovsky), "energy" (Zhao)
    generator_loss: str = "non_saturating"  # with loss=gan: "non_saturating" (Goodfellow Sec. 3) or "minimax"
    critic_steps: int = 1                   # Goodfellow Alg. 1: k = 1; Gulrajani Alg. 1: n_critic = 5
    gradient_penalty_weight: float = 0.0    # Gulrajani Alg. 1: λ = 10
    weight_clip: float = 0.0                # Arjovsky Alg. 1: c = 0.01 (0: no clipping)
    energy_margin: float = 0.2              # EBGAN m, grid-searched in the paper; ours for a per-pixel MSE energy:
                                            # 1 left D reconstructing only the background (docs/results.md)
    pulling_away_weight: float = 0.1        # EBGAN-PT, Zhao Sec. 4.2: λ_PT = 0.1
    # Data and optimisation.
    batch_size: int = 64                    # per train step: critic_steps minibatches of batch_size / critic_steps
    epochs: int = 25                        # deviation: a budget; the papers stop by inspection
    optimizer: str = "adam"                 # "adam" (Radford Sec. 4) or "rmsprop" (Arjovsky Alg. 1)
    learning_rate: float = 2e-4             # Radford Sec. 4 (the generator's, and D's unless set below)
    discriminator_learning_rate: float | None = None  # None: learning_rate; InfoGAN App. C: 2e-4 (G: 1e-3)
    adam_beta_1: float = 0.5                # Radford Sec. 4
    adam_beta_2: float = 0.999              # Kingma & Ba default, kept by Radford
    divergence_factor: float | None = None  # off: the logged loss sums two players' losses that trade off, so its
                                            # scale says nothing about divergence (NaN and Inf still stop training)

    def __post_init__(self):
        super().__post_init__()
        checks = [
            (self.architecture in ("mlp", "dcgan"), "architecture must be 'mlp' or 'dcgan'"),
            (self.loss in ("gan", "wasserstein", "energy"), "loss must be 'gan', 'wasserstein' or 'energy'"),
            (self.generator_loss in ("non_saturating", "minimax"), "generator_loss must be 'non_saturating' or 'minimax'"),
            (self.normalization in ("batch", "layer", "none"), "normalization must be 'batch', 'layer' or 'none'"),
            (self.optimizer in ("adam", "rmsprop"), "optimizer must be 'adam' or 'rmsprop'"),
            (self.critic_steps >= 1 and self.batch_size % self.critic_steps == 0,
             "batch_size must be a positive multiple of critic_steps (one minibatch per critic step)"),
            (self.noise_dim >= 1, "noise_dim must be >= 1"),
            (self.architecture == "mlp" or self.image_shape[0] % 4 == 0 and self.image_shape[1] % 4 == 0,
             "dcgan needs image height and width divisible by 4 (two stride-2 layers)"),
            (not (self.minibatch_discrimination and self.loss == "energy"),
             "minibatch_discrimination needs a scoring discriminator; loss=energy uses an autoencoder"),
            (self.categorical_code != 1 and self.continuous_codes >= 0, "categorical_code needs >= 2 categories"),
            (not (self.weight_clip and self.architecture == "mlp"), "weight_clip is implemented for the dcgan critic"),
            (not (self.weight_clip and self.minibatch_discrimination),
             "weight_clip bounds dense and conv weights only; minibatch discrimination's tensor would stay unclipped"),
            (not (self.gradient_penalty_weight and self.architecture == "dcgan" and self.normalization == "batch"),
             "a gradient penalty is per example; batch norm mixes examples (Gulrajani Sec. 4): "
             "set normalization=layer or none"),
            (not (self.gradient_penalty_weight and self.minibatch_discrimination),
             "a gradient penalty is per example; minibatch discrimination mixes examples"),
        ]
        config_lib.check(self, checks)

    @property
    def code_size(self) -> int:
        """Features the InfoGAN codes add to G's input: one-hot category plus continuous codes."""
        return self.categorical_code + self.continuous_codes


def _split(batch: dict, count: int) -> list[dict]:
    """`count` equal minibatches of a batch dict (its size is a multiple of `count`)."""
    if count == 1:
        return [batch]
    size = tf.shape(batch["image"])[0] // count
    return [{key: value[step * size:(step + 1) * size] for key, value in batch.items()} for step in range(count)]


def _fold(seed, stream: int):
    return tf.random.experimental.stateless_fold_in(seed, stream)


def _descend(optimizer, tape, loss, variables) -> None:
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))


@keras.saving.register_keras_serializable(package="zoo")
class GAN(ConfigSerialization, GaussianObservations, keras.Model):
    """Generator G(z, c, y) and discriminator D(x, y) trained adversarially (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape]
    in [0, 1], and "label", int64 [batch], when `config.conditional`.
    The discriminator's output is a logit for loss=gan, a critic score for
    loss=wasserstein, and an energy (per-pixel reconstruction MSE) for loss=energy.
    """

    config_class = GANConfig

    def __init__(self, config: GANConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.objective = objectives.for_config(config)  # what `loss` changes: D's head, score and losses
        # Layers are created in this order, which fixes the initial weights of a seed, and kept under
        # these attribute names, which are their weights' paths in .keras files.
        constraint = ClipWeights(config.weight_clip) if config.weight_clip else None
        self.generator_layers = generator_layers(config)
        self.label_inputs = ConcatLabels(config.num_classes) if config.conditional else None
        self.encoder = encoder_layers(config, constraint)
        self.head = self.objective.head(constraint)
        self.latent_inputs = LatentInputs(config)  # z, y and the InfoGAN codes c, with Q(c | x)
        self.category_posterior = self.latent_inputs.category_posterior
        self.continuous_posterior = self.latent_inputs.continuous_posterior
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        tracked = ["loss", "discriminator_loss", "generator_loss", "d_real", "d_fake"]
        tracked += ["gradient_penalty"] * bool(config.gradient_penalty_weight)
        tracked += [*self.objective.tracked, *self.latent_inputs.tracked]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in tracked}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def build(self, input_shape=None):
        config = self.config
        build_sequence(self.generator_layers, (None, self.latent_inputs.size))
        shape = (None, *config.image_shape) if config.architecture == "dcgan" else (None, math.prod(config.image_shape))
        if self.label_inputs is not None:
            shape = build_sequence([self.label_inputs], shape)
        features = build_sequence(self.encoder, shape)
        build_sequence(self.head, features)
        for posterior in self.latent_inputs.posteriors:
            posterior.build(features)
        super().build(input_shape)

    # The two networks.

    def generate(self, latents, training=False):
        """G(z, c, y) in [−1, 1] for latents {"noise", and "labels" / "category" / "continuous" as configured}."""
        return run_sequence(self.generator_layers, self.latent_inputs.generator_input(latents), training)

    def discriminate(self, images, labels=None, training=False):
        """D(x, y): {"score": [batch], "features": [batch, F]} for images in [−1, 1].

        The label enters with x, so D judges the pair: as one-hot channels of the
        image for dcgan, appended to the pixels for mlp (Mirza & Osindero, Sec. 4.1).
        For loss=energy the score is the energy D(x) = mean((Dec(Enc(x)) − x)²) and
        the features are the code Enc(x).
        """
        inputs = images if self.config.architecture == "dcgan" else tf.reshape(images, [tf.shape(images)[0], -1])
        if self.label_inputs is not None:
            inputs = self.label_inputs(inputs, labels)
        features = run_sequence(self.encoder, inputs, training)
        score = self.objective.score(run_sequence(self.head, features, training), images)
        return {"score": score, "features": features}

    # The objective: one method per player, shared by train_step and test_step.

    def _discriminator_terms(self, batch, seed, training):
        """Per-example D loss on real x and fake x̃ = G(z): Gulrajani Alg. 1 lines 4-7 (Goodfellow Eq. 1)."""
        config = self.config
        real, labels = batch["image"] * 2.0 - 1.0, batch.get("label")
        latents = self.latent_inputs.draw(tf.shape(real)[0], labels, seed)
        fake = self.generate(latents, training)
        real_output = self.discriminate(real, labels, training)
        fake_output = self.discriminate(fake, labels, training)
        terms = self.objective.discriminator_terms(real_output, fake_output)
        if config.gradient_penalty_weight:
            epsilon = tf.random.stateless_uniform([tf.shape(real)[0]], _fold(seed, PENALTY_STREAM))
            terms["gradient_penalty"] = gan_losses.gradient_penalty(
                lambda images: self.discriminate(images, labels, training)["score"], real, fake, epsilon)
            terms["discriminator_loss"] += config.gradient_penalty_weight * terms["gradient_penalty"]
        if config.code_size:
            terms["mutual_information"] = self.latent_inputs.information(latents, fake_output["features"])
            terms["discriminator_loss"] -= terms["mutual_information"]  # Q ascends L_I with D (Chen Eq. 6)
        return terms

    def _generator_terms(self, batch, seed, training):
        """Per-example G loss on fresh fakes, one per example of `batch`: Gulrajani Alg. 1 lines 11-12."""
        labels = batch.get("label")
        latents = self.latent_inputs.draw(tf.shape(batch["image"])[0], labels, seed)
        fake_output = self.discriminate(self.generate(latents, training), labels, training)
        terms = self.objective.generator_terms(fake_output)
        if self.config.code_size:  # G ascends L_I too (Chen Eq. 6)
            terms["generator_loss"] -= self.latent_inputs.information(latents, fake_output["features"])
        return terms

    def train_step(self, data):
        minibatches = _split(data, self.config.critic_steps)  # Alg. 1, line 3: fresh real data per critic step
        global_minibatch = steps.global_batch_size(minibatches[0]["image"])  # m of Alg. 1, over all replicas
        seed = steps.replica_seed(self.seed_generator)
        for step, minibatch in enumerate(minibatches):  # Gulrajani Alg. 1, lines 2-9
            with tf.GradientTape() as tape:
                critic_terms = self._discriminator_terms(minibatch, _fold(seed, step), training=True)
                critic_loss = tf.reduce_sum(critic_terms["discriminator_loss"]) / global_minibatch
            _descend(self.discriminator_optimizer, tape, critic_loss, self._discriminator_variables)
        with tf.GradientTape() as tape:  # lines 10-12: fresh z (labels of the last minibatch)
            generator_terms = self._generator_terms(minibatch, _fold(seed, -1), training=True)
            generator_loss = tf.reduce_sum(generator_terms["generator_loss"]) / global_minibatch
        _descend(self.optimizer, tape, generator_loss, self._generator_variables)
        return self._update_trackers({**critic_terms, **generator_terms})

    def test_step(self, data):
        seed = steps.replica_seed(self.seed_generator)
        terms = self._discriminator_terms(data, seed, training=False)
        terms.update(self._generator_terms(data, seed, training=False))
        return self._update_trackers(terms)

    def _update_trackers(self, terms):
        return steps.update_trackers(
            self.trackers, {**terms, "loss": terms["discriminator_loss"] + terms["generator_loss"]})

    @property
    def _generator_variables(self):
        return [v for layer in self.generator_layers for v in layer.trainable_variables]

    @property
    def _discriminator_variables(self):
        """D's weights, with Q's head: Q is trained with D (Chen et al. Sec. 5)."""
        generator = {id(v) for v in self._generator_variables}
        return [v for v in self.trainable_variables if id(v) not in generator]

    def compile_for_training(self, steps_per_epoch: int):
        """One optimizer per player: `optimizer` updates G, `discriminator_optimizer` D (and Q)."""
        del steps_per_epoch  # constant learning rates (Radford Sec. 4, Gulrajani Alg. 1)
        config = self.config
        optimizers = [self._make_optimizer(config.learning_rate),
                      self._make_optimizer(config.discriminator_learning_rate or config.learning_rate)]
        self.compile(optimizer=optimizers[0], jit_compile=config.jit_compile)
        self.discriminator_optimizer = optimizers[1]
        self.optimizer.build(self._generator_variables)  # slots now, so train_step is traced once
        self.discriminator_optimizer.build(self._discriminator_variables)

    def _make_optimizer(self, learning_rate: float):
        if self.config.optimizer == "rmsprop":
            return keras.optimizers.RMSprop(learning_rate)
        return keras.optimizers.Adam(learning_rate, beta_1=self.config.adam_beta_1, beta_2=self.config.adam_beta_2)

    # Samplers; these back the serving signatures.

    def call(self, inputs, training=False):
        """{"noise", and "labels" / "category" / "continuous" as configured} → images in [0, 1]."""
        return (self.generate(inputs, training) + 1.0) / 2.0

    def sample(self, seeds, **fixed):
        """x = G(z, c, y) in [0, 1], one image per int64 seed; `fixed` overrides drawn labels or codes."""
        latents = {**self.latent_inputs.from_seeds(seeds), **fixed}
        return (self.generate(latents) + 1.0) / 2.0

    def serving_signatures(self):
        return {**signatures.seed_signatures(self.sample), **self.latent_inputs.signatures(self.sample)}

    # The generator for annealed importance sampling (zoo.common.observation): GANs fed the noise alone.

    @property
    def _noise_size(self) -> int:
        return self.config.noise_dim

    _uniform_noise = True  # z ~ U[−1, 1] (zoo.gan.latents)

    def _generate_unit(self, noise):
        return (self.generate({"noise": noise}) + 1.0) / 2.0

    def summaries(self, images):
        """TensorBoard grids from fixed seeds, so epochs are comparable: samples, and per class or code."""
        del images  # G needs no data
        return {"samples": self.sample(tf.range(64, dtype=tf.int64)), **self.latent_inputs.grids(self.sample)}


def build(config: GANConfig) -> GAN:
    model = GAN(config, name="gan")
    model.build()
    return model


def dataset(config: GANConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=False, labels=config.conditional)


TINY = dict(generator_units=16, discriminator_units=8, maxout_pieces=2, filters=4, noise_dim=6, minibatch_kernels=3,
            minibatch_kernel_dim=2, image_shape=(8, 8, 1), batch_size=8)


def _register(name: str, description: str, **preset):
    tiny = {**TINY, "critic_steps": 2} if preset.get("critic_steps", 1) > 1 else TINY
    noise_only = not (preset.get("conditional") or preset.get("categorical_code") or preset.get("continuous_codes"))
    registry.register(registry.ModelSpec(name, description, GANConfig, build, dataset, preset=preset, tiny=tiny,
                                         evaluation=("sample_quality", *("ais",) * noise_only)))


_register("zoo.gan", "GAN (Goodfellow et al. 2014): MLP generator, maxout discriminator")
_register("zoo.dcgan", "DCGAN (Radford et al. 2016)", architecture="dcgan",
          batch_size=128)  # Radford Sec. 4: minibatch 128
_register("zoo.wgan_gp", "WGAN-GP (Gulrajani et al. 2017)", architecture="dcgan", loss="wasserstein",
          normalization="layer",  # Sec. 4: no batch norm in the critic; layer norm instead
          gradient_penalty_weight=10.0, critic_steps=5, batch_size=320,  # Alg. 1: λ = 10, n_critic = 5, m = 64
          learning_rate=1e-4, adam_beta_1=0.0, adam_beta_2=0.9)  # Alg. 1: α, β1, β2
_register("zoo.wgan", "WGAN with weight clipping (Arjovsky et al. 2017)", architecture="dcgan",
          loss="wasserstein", weight_clip=0.01, critic_steps=5, batch_size=320,  # Alg. 1: c, n_critic, m
          optimizer="rmsprop", learning_rate=5e-5)  # Alg. 1: RMSProp, α = 0.00005
_register("zoo.cgan", "conditional GAN (Mirza & Osindero 2014)", conditional=True)
_register("zoo.infogan", "InfoGAN (Chen et al. 2016): one 10-way and two continuous codes", architecture="dcgan",
          noise_dim=62, categorical_code=10, continuous_codes=2,  # Sec. 7.1 / App. C.1
          learning_rate=1e-3, discriminator_learning_rate=2e-4)  # App. C: G 1e-3, D 2e-4
_register("zoo.ebgan", "EBGAN-PT (Zhao et al. 2017): autoencoder discriminator, margin loss, pulling-away term",
          architecture="dcgan", loss="energy")
