"""Adversarially learned inference (ALI) and bidirectional GANs (BiGAN).

Dumoulin, Belghazi, Poole, Mastropietro, Lamb, Arjovsky, Courville. Adversarially
  Learned Inference. ICLR 2017, arXiv:1606.00704.
Donahue, Krähenbühl, Darrell. Adversarial Feature Learning. ICLR 2017, arXiv:1605.09782.

An encoder G_z(x) (BiGAN's E), a generator G_x(z) (BiGAN's G) and a discriminator
D(x, z) that judges joint pairs: real pairs (x, ẑ = G_z(x)) with x from the data q(x)
against fake pairs (x̃ = G_x(z), z) with z from the prior p(z). They play

    min_G max_D V(D, G) = E_{q(x)}[log D(x, G_z(x))] + E_{p(z)}[log(1 − D(G_x(z), z))]

(ALI Eq. 1; BiGAN Eq. 3), whose optimum matches the joint distributions q(x) q(z | x)
and p(z) p(x | z), so that G_z inverts G_x. As both papers do in practice, D minimises
the logistic loss −log D(x, ẑ) − log(1 − D(x̃, z)) and G_x and G_z jointly minimise the
same loss with the labels swapped, −log(1 − D(x, ẑ)) − log D(x̃, z) (ALI Alg. 1; BiGAN
Sec. 3.4): `zoo.gan.losses.discriminator_loss` with its arguments swapped.

One train_step is ALI's Alg. 1 (and the BiGAN authors' code with k = 1): one forward
pass, then one update of D and one joint update of G_x and G_z from the same pairs.

By default this is BiGAN's permutation-invariant MNIST model (authors' code,
github.com/jeffdonahue/bigan, train_mnist.sh and net.py): MLPs of 1024-unit layers, a
deterministic encoder and 50 latent dimensions, with ALI's prior z ~ N(0, I) where the
authors draw U[−1, 1]^50 (`prior="uniform"`). `stochastic_encoder=True` gives ALI's
Gaussian encoder q(z | x) = N(μ(x), σ²(x)), sampled by reparameterisation.
As in the authors' code, G_x's hidden layers and the second hidden layer of G_z are
batch-normalised (`batch_norm`); their D's second layer is too, ours not (docs/ali.md).
Networks work on pixels in [−1, 1], data and samples are in [0, 1]. docs/ali.md lists the
deviations.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import distributions, signatures, steps
from zoo.common.observation import GaussianObservations
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_normal, per_example_uniform
from zoo.gan import losses as gan_losses
from zoo.gan.networks import build_sequence, run_sequence

PRIOR_STREAM, ENCODER_STREAM = 0, 1  # stateless streams of one step seed: z ~ p(z), and ε of a Gaussian G_z


@dataclasses.dataclass(frozen=True)
class ALIConfig(config_lib.TrainingConfig):
    # Networks: BiGAN's permutation-invariant MNIST MLPs (authors' code, net.py: mnist_mlp, deconvnet_mnist_mlp).
    latent_dim: int = 50                # BiGAN authors' train_mnist.sh: NOISE="u-50"
    prior: str = "normal"               # N(0, I) (ALI; BiGAN Sec. 3 allows either). Deviation: train_mnist.sh draws
                                        # U[−1, 1]^50, but its tanh-squashed encoder saturated here (docs/ali.md)
    stochastic_encoder: bool = False    # False: BiGAN's z = E(x) (Donahue Sec. 3); True: ALI's z = μ(x) + σ(x) ⊙ ε
    units: int = 1024                   # every hidden layer of G_x, G_z and D (net.py: 16 × 64)
    leaky_relu_slope: float = 0.2       # G_z and D (net.py: LReLU; Radford et al. 2016, Sec. 3)
    dropout: float = 0.0                # after each of D's hidden layers: none in BiGAN's code; ALI's D has 0.2
    batch_norm: bool = True             # on G_x's two hidden layers and G_z's second (net.py; its D has one too,
                                        # left out here: docs/ali.md, Deviations)
    # Data and optimisation.
    batch_size: int = 128               # authors' train_gan.py default
    epochs: int = 400                   # train_mnist.sh: 200 epochs, then 200 more decaying the rate (ours: constant)
    learning_rate: float = 2e-4         # train_gan.py default, for both optimizers
    adam_beta_1: float = 0.5            # train_gan.py: --momentum 0.5 (Adam's β1)
    adam_beta_2: float = 0.999          # Kingma & Ba default, kept by the authors' code
    divergence_factor: float | None = None  # off, as for zoo.gan: the logged loss sums two players' losses

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (self.prior in ("uniform", "normal"), "prior must be 'uniform' or 'normal'"),
            (not (self.stochastic_encoder and self.prior == "uniform"),
             "a Gaussian encoder puts z anywhere on R^d, outside U[−1, 1]^d, which D would spot at once: "
             "set prior=normal with stochastic_encoder=true (ALI)"),
            (self.latent_dim >= 1 and self.units >= 1, "latent_dim and units must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
        ])


def _fold(seed, stream: int):
    return tf.random.experimental.stateless_fold_in(seed, stream)


def _hidden(units: int, activation: keras.layers.Layer, batch_norm: bool = False,
            dropout: float = 0.0) -> list[keras.layers.Layer]:
    """One hidden layer: Dense, batch normalisation (Ioffe & Szegedy 2015; the Dense then needs no bias),
    the activation, dropout."""
    return [keras.layers.Dense(units, use_bias=not batch_norm), *[keras.layers.BatchNormalization()] * batch_norm,
            activation, *[keras.layers.Dropout(dropout)] * bool(dropout)]


@keras.saving.register_keras_serializable(package="zoo")
class ALI(ConfigSerialization, GaussianObservations, keras.Model):
    """Encoder G_z(x), generator G_x(z) and joint discriminator D(x, z) (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape] in [0, 1].
    """

    config_class = ALIConfig

    def __init__(self, config: ALIConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        units, norm = config.units, config.batch_norm

        def leaky():
            return keras.layers.LeakyReLU(config.leaky_relu_slope)

        # G_x: two ReLU layers and a tanh output, pixels in [−1, 1] (net.py: deconvnet_mnist_mlp).
        self.generator_layers = [*_hidden(units, keras.layers.ReLU(), norm), *_hidden(units, keras.layers.ReLU(), norm),
                                 keras.layers.Dense(math.prod(config.image_shape), activation="tanh"),
                                 keras.layers.Reshape(config.image_shape)]
        # G_z: two LeakyReLU layers, then a linear z for N(0, I), z = tanh(·) inside U[−1, 1]^d's support
        # (the authors' code squashes with 2σ(·) − 1), or ALI's Gaussian q(z | x).
        self.encoder_layers = [keras.layers.Flatten(), *_hidden(units, leaky()), *_hidden(units, leaky(), norm)]
        self.encoder_head = (distributions.GaussianLayer((config.latent_dim,)) if config.stochastic_encoder
                             else keras.layers.Dense(config.latent_dim,
                                                     activation="tanh" if config.prior == "uniform" else None))
        # D(x, z): an x branch and a z branch, concatenated, then one hidden layer and a logit.
        dropout = config.dropout
        self.image_branch = [keras.layers.Flatten(), *_hidden(units, leaky(), dropout=dropout)]
        self.latent_branch = _hidden(units, leaky(), dropout=dropout)
        self.joint_layers = [*_hidden(units, leaky(), dropout=dropout), keras.layers.Dense(1)]
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        tracked = ["loss", "discriminator_loss", "generator_loss", "d_real", "d_fake", "reconstruction_error"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in tracked}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def build(self, input_shape=None):
        images, latents = (None, *self.config.image_shape), (None, self.config.latent_dim)
        build_sequence(self.generator_layers, latents)
        self.encoder_head.build(build_sequence(self.encoder_layers, images))
        image_features = build_sequence(self.image_branch, images)
        latent_features = build_sequence(self.latent_branch, latents)
        build_sequence(self.joint_layers, (None, image_features[-1] + latent_features[-1]))
        super().build(input_shape)

    # The three networks, on pixels in [−1, 1].

    def generate(self, latents, training=False):
        """x̃ = G_x(z) in [−1, 1]."""
        return run_sequence(self.generator_layers, latents, training)

    def infer(self, images, seed=None, training=False):
        """ẑ = G_z(x) for x in [−1, 1]: E(x), or with a Gaussian encoder μ(x) + σ(x) ⊙ ε, ε from `seed`
        (its mean μ(x) when `seed` is None)."""
        posterior = self.encoder_head(run_sequence(self.encoder_layers, images, training))
        if not self.config.stochastic_encoder:
            return posterior
        if seed is None:
            return posterior.mean()
        noise = tf.random.stateless_normal(tf.shape(posterior.mean()), seed)
        return distributions.reparameterize(posterior, noise)

    def discriminate(self, images, latents, training=False):
        """The logit ℓ of D(x, z) = σ(ℓ), [batch], for a pair of images in [−1, 1] and latents."""
        features = tf.concat([run_sequence(self.image_branch, images, training),
                              run_sequence(self.latent_branch, latents, training)], axis=-1)
        return run_sequence(self.joint_layers, features, training)[:, 0]

    def _draw_prior(self, count, seed):
        """z ~ p(z), [count, latent_dim], from one stateless seed."""
        shape = [count, self.config.latent_dim]
        if self.config.prior == "uniform":
            return tf.random.stateless_uniform(shape, seed, -1.0, 1.0)
        return tf.random.stateless_normal(shape, seed)

    # The objective, shared by train_step and test_step.

    def _objective(self, batch, seed, training):
        """Per-example terms of one minibatch: ALI Alg. 1, lines 3-10.

        D's loss is the negated V(D, G) (ALI Eq. 1); G_x and G_z minimise D's loss with the
        real and fake labels swapped. reconstruction_error is the pixel MSE of G_x(ẑ) in [0, 1], with
        G_x in inference mode (batch norm's moving statistics, which it then leaves as they are).
        """
        images = batch["image"]
        x = images * 2.0 - 1.0
        z = self._draw_prior(tf.shape(x)[0], _fold(seed, PRIOR_STREAM))  # line 4: z ~ p(z)
        z_hat = self.infer(x, _fold(seed, ENCODER_STREAM), training)       # line 5: ẑ ~ q(z | x)
        x_tilde = self.generate(z, training)                                # line 6: x̃ ~ p(x | z)
        real = self.discriminate(x, z_hat, training)                        # line 7: ρ_q = σ(real)
        fake = self.discriminate(x_tilde, z, training)                      # line 8: ρ_p = σ(fake)
        reconstructions = (self.generate(z_hat) + 1.0) / 2.0  # a metric: G_x in inference mode
        return {
            "discriminator_loss": gan_losses.discriminator_loss(real, fake),  # line 9: −log ρ_q − log(1 − ρ_p)
            "generator_loss": gan_losses.discriminator_loss(fake, real),      # line 10: −log(1 − ρ_q) − log ρ_p
            "d_real": tf.sigmoid(real),
            "d_fake": tf.sigmoid(fake),
            "reconstruction_error": tf.reduce_mean(tf.square(reconstructions - images), axis=[1, 2, 3]),
        }

    def train_step(self, data):
        global_batch = steps.global_batch_size(data["image"])
        seed = steps.replica_seed(self.seed_generator)
        with tf.GradientTape() as discriminator_tape, tf.GradientTape() as generator_tape:
            terms = self._objective(data, seed, training=True)
            discriminator_loss = tf.reduce_sum(terms["discriminator_loss"]) / global_batch
            generator_loss = tf.reduce_sum(terms["generator_loss"]) / global_batch
        # Alg. 1, lines 11-12: both players step from the same pairs.
        discriminator = self._discriminator_variables
        self.discriminator_optimizer.apply_gradients(
            zip(discriminator_tape.gradient(discriminator_loss, discriminator), discriminator))
        generator = self._generator_variables
        self.optimizer.apply_gradients(zip(generator_tape.gradient(generator_loss, generator), generator))
        return self._update_trackers(terms)

    def test_step(self, data):
        return self._update_trackers(self._objective(data, steps.replica_seed(self.seed_generator), training=False))

    def _update_trackers(self, terms):
        return steps.update_trackers(
            self.trackers, {**terms, "loss": terms["discriminator_loss"] + terms["generator_loss"]})

    @property
    def _generator_variables(self):
        """G_x's and G_z's weights: one player, one optimizer (ALI Alg. 1, line 12)."""
        layers = [*self.generator_layers, *self.encoder_layers, self.encoder_head]
        return [v for layer in layers for v in layer.trainable_variables]

    @property
    def _discriminator_variables(self):
        layers = [*self.image_branch, *self.latent_branch, *self.joint_layers]
        return [v for layer in layers for v in layer.trainable_variables]

    def compile_for_training(self, steps_per_epoch: int):
        """Adam for each player: `optimizer` updates G_x and G_z, `discriminator_optimizer` D."""
        del steps_per_epoch  # a constant learning rate (see ALIConfig.epochs)
        config = self.config
        optimizers = [keras.optimizers.Adam(config.learning_rate, beta_1=config.adam_beta_1,
                                            beta_2=config.adam_beta_2) for _ in range(2)]
        self.compile(optimizer=optimizers[0], jit_compile=config.jit_compile)
        self.discriminator_optimizer = optimizers[1]
        self.optimizer.build(self._generator_variables)  # slots now, so train_step is traced once
        self.discriminator_optimizer.build(self._discriminator_variables)

    # Deterministic paths and the sampler; these back the serving signatures.

    def encode_features(self, images):
        """G_z(x), [N, latent_dim], for images in [0, 1] (μ(x) for a Gaussian encoder): BiGAN's features."""
        return self.infer(images * 2.0 - 1.0)

    def call(self, images, training=False):
        """Reconstructions G_x(G_z(x)) in [0, 1] of images in [0, 1]."""
        return (self.generate(self.encode_features(images), training) + 1.0) / 2.0

    def sample(self, seeds):
        """x = G_x(z) in [0, 1], z ~ p(z) from each int64 seed alone."""
        dimensions = [self.config.latent_dim]
        latents = (per_example_uniform(seeds, dimensions, PRIOR_STREAM) if self.config.prior == "uniform"
                   else per_example_normal(seeds, dimensions, PRIOR_STREAM))
        return (self.generate(latents) + 1.0) / 2.0

    def serving_signatures(self):
        """Samplers from seeds, and encode / reconstruct from images, which refuse NaN and Inf."""
        images = tf.TensorSpec([None, *self.config.image_shape], tf.float32, name="images")
        finite = signatures.checked_finite
        return {
            **signatures.seed_signatures(self.sample),
            "encode": (lambda images: {"latent": self.encode_features(finite(images, "images"))}, [images]),
            "reconstruct": (lambda images: {"images": self(finite(images, "images"))}, [images]),
        }

    # The generator for annealed importance sampling (zoo.common.observation): p(x | z) = N(x; G_x(z), σ² I).

    @property
    def _noise_size(self) -> int:
        return self.config.latent_dim

    @property
    def _uniform_noise(self) -> bool:
        return self.config.prior == "uniform"

    def _generate_unit(self, noise):
        return (self.generate(noise) + 1.0) / 2.0

    def summaries(self, images):
        """TensorBoard grids: 64 samples from fixed seeds, and inputs beside their reconstructions."""
        return {"samples": self.sample(tf.range(64, dtype=tf.int64)),
                "reconstructions": signatures.side_by_side(images, self(images))}


def build(config: ALIConfig) -> ALI:
    model = ALI(config, name="ali")
    model.build()
    return model


def dataset(config: ALIConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=False)


registry.register(registry.ModelSpec(
    "zoo.ali", "ALI / BiGAN (Dumoulin et al. 2017; Donahue et al. 2017): encoder, generator, joint discriminator",
    ALIConfig, build, dataset, tiny=dict(units=8, latent_dim=4, image_shape=(8, 8, 1), batch_size=8),
    evaluation=("sample_quality", "feature_1nn", "ais")))
