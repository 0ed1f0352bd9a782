"""Adversarial Variational Bayes (AVB): a VAE whose encoder is implicit, its KL term estimated by an adversary.

Mescheder, Nowozin, Geiger. Adversarial Variational Bayes: Unifying Variational Autoencoders
and Generative Adversarial Networks. ICML 2017, arXiv:1701.04722.

The encoder draws z = f_φ(x, ε) with the noise ε entering the network, so q(z | x) has no
density to evaluate. An adversary T_ψ(x, z) is trained with the logistic loss to tell pairs
(x, z ~ q(z | x)) from pairs (x, z ~ p(z)) (Eq. 3):

    max_ψ  E_x E_q(z|x)[log σ(T_ψ(x, z))] + E_x E_p(z)[log(1 − σ(T_ψ(x, z)))],

whose optimum is T*(x, z) = log q(z | x) − log p(z) (Prop. 1). The encoder and decoder then
maximise the bound with T in place of the log-ratio (Eq. 7):

    max_θ,φ  E_x E_ε[−T_ψ(x, f_φ(x, ε)) + log p_θ(x | f_φ(x, ε))].

Adaptive contrast (Sec. 4, `adaptive_contrast`): the KL is taken against r_α(z | x), the Gaussian
with q's mean μ(x) and variance σ²(x), for which it is closer to zero and easier to estimate:

    KL(q(z | x) ‖ p(z)) = KL(q̃(z̃ | x) ‖ N(0, I)) + KL(r_α(z | x) ‖ p(z)),   z̃ = (z − μ(x)) / σ(x).

T sees the normalised z̃ against N(0, I); the second term is a KL between two Gaussians, in closed
form (it equals E_q[log r_α − log p] exactly, as both log-densities are quadratic in z and q has
r_α's first two moments). The encoder makes the moments available: z = a_0(x) + Σ_i a_i(x) ⊙ v_i(ε_i),
with each noise network v_i a function of its own noise only (the authors' MNIST encoder), so
E[z | x] = a_0(x) + Σ_i a_i(x) ⊙ E[v_i] and Var[z | x] = Σ_i a_i(x)² ⊙ Var[v_i], the noise
networks' moments estimated from `contrast_samples` draws.

The decoder is a Bernoulli per pixel, the prior N(0, I): log p(x) is estimated by annealed
importance sampling (`zoo.common.ais`, the "ais" evaluation), as in the paper (Sec. 6.2).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from zoo import config as config_lib, registry
from zoo.common import bounds, distributions, signatures, steps
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_normal
from zoo.gan import losses as gan_losses

tfd = tfp.distributions

VARIANCE_FLOOR = 1e-4  # added to Var[z | x] before normalising z̃ (the authors' code)
LATENT_STREAM, NOISE_STREAM = 0, 1  # streams of a request seed (zoo.common.stateless)
NOISE, MOMENTS, PRIOR = 0, 1, 2  # streams of a training step's seed


@dataclasses.dataclass(frozen=True)
class AVBConfig(config_lib.TrainingConfig):
    # The authors' MNIST settings (LMescheder/AdversarialVariationalBayes, experiments/avb_mnist_32_ac/run.py
    # and the fully connected encoder avb/avb/models/full0_ac.py).
    latent_units: int = 32                  # z-dim 32 (the README's result is for 32 with adaptive contrast)
    noise_units: int = 64                   # eps-dim 64: the noise of each noise network
    noise_basis: int = 32                   # eps-nbasis 32: noise networks v_1 … v_32
    noise_hidden_units: int = 128           # three 128-unit ELU layers per noise network
    noise_hidden_layers: int = 3
    encoder_units: int = 768                # one 768-unit softplus layer before a_0 … a_B
    decoder_units: int = 300                # ours: two softplus layers, as wide as the authors' full0 encoder
    decoder_layers: int = 2
    adversary_units: int = 300              # ours: T(x, z) an MLP of [x, z], ELU units
    adversary_layers: int = 2
    adaptive_contrast: bool = False         # Sec. 4; the README's numbers are with it on
    contrast_samples: int = 64              # ours: draws of each v_i for its moments (the authors use the batch)
    adversary_steps: int = 1                # adversary updates per VAE update (the authors' train.py: 1)
    dataset: str = "mnist"                  # binarized dynamically
    batch_size: int = 64                    # batch-size 64
    epochs: int = 100                       # ours: a budget (the authors train 2.5 M steps)
    learning_rate: float = 1e-4             # encoder and decoder (learning-rate 1e-4)
    adversary_learning_rate: float = 2e-4   # learning-rate-adversary 2e-4
    adam_beta_1: float = 0.5                # the authors' Adam

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (min(self.latent_units, self.noise_units, self.noise_basis, self.noise_hidden_units,
                 self.encoder_units, self.decoder_units, self.adversary_units) >= 1, "every width must be >= 1"),
            (min(self.noise_hidden_layers, self.decoder_layers, self.adversary_layers) >= 1,
             "noise_hidden_layers, decoder_layers and adversary_layers must be >= 1"),
            (self.contrast_samples >= 2, "contrast_samples must be >= 2 (a variance needs two draws)"),
            (self.adversary_steps >= 1, "adversary_steps must be >= 1"),
        ])


@keras.saving.register_keras_serializable(package="zoo")
class NoiseNetworks(keras.layers.Layer):
    """v_i(ε_i), i = 1 … B: B MLPs of their noise alone (ELU hidden layers, linear output), run at once.

    Noise [B, ..., noise_units] → [B, ..., latent_units]; network i has its own weights (a leading B axis).
    """

    def __init__(self, basis: int, latent_units: int, hidden_units: int, hidden_layers: int, **kwargs):
        super().__init__(**kwargs)
        self.basis, self.latent_units = basis, latent_units
        self.hidden_units, self.hidden_layers = hidden_units, hidden_layers

    def build(self, input_shape):
        sizes = [input_shape[-1], *[self.hidden_units] * self.hidden_layers, self.latent_units]
        self.kernels = [self.add_weight(shape=(self.basis, fan_in, fan_out), initializer="glorot_uniform",
                                        name=f"kernel_{layer}")
                        for layer, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:]))]
        self.biases = [self.add_weight(shape=(self.basis, 1, fan_out), initializer="zeros", name=f"bias_{layer}")
                       for layer, fan_out in enumerate(sizes[1:])]

    def call(self, noise):
        shape = tf.shape(noise)
        values = tf.reshape(noise, [self.basis, -1, shape[-1]])
        for layer, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            values = tf.matmul(values, kernel) + bias
            if layer < len(self.kernels) - 1:
                values = tf.nn.elu(values)
        return tf.reshape(values, tf.concat([shape[:-1], [self.latent_units]], 0))

    def get_config(self):
        return {**super().get_config(), "basis": self.basis, "latent_units": self.latent_units,
                "hidden_units": self.hidden_units, "hidden_layers": self.hidden_layers}


def _mlp(units: int, layers: int, activation: str, outputs: int) -> list[keras.layers.Layer]:
    return [*[keras.layers.Dense(units, activation=activation) for _ in range(layers)], keras.layers.Dense(outputs)]


def _run(layers, values):
    for layer in layers:
        values = layer(values)
    return values


@keras.saving.register_keras_serializable(package="zoo")
class AVB(ConfigSerialization, keras.Model):
    """Implicit encoder f_φ(x, ε), Bernoulli decoder p_θ(x | z), adversary T_ψ(x, z) (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape] in {0, 1}.
    """

    config_class = AVBConfig

    def __init__(self, config: AVBConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        latent, basis = config.latent_units, config.noise_basis
        self.encoder_trunk = [keras.layers.Dense(config.encoder_units, activation="softplus")]
        self.encoder_offset = keras.layers.Dense(  # a_0(x); starts near 0 (the authors' initialisation)
            latent, kernel_initializer=keras.initializers.TruncatedNormal(stddev=1e-5))
        self.encoder_scales = keras.layers.Dense(latent * basis)  # a_1(x) … a_B(x), before elu(· − 5) + 1
        self.noise_networks = NoiseNetworks(basis, latent, config.noise_hidden_units, config.noise_hidden_layers)
        self.decoder = distributions.ConditionalDistribution(
            config.decoder_units, config.decoder_layers, distributions.BernoulliLayer(config.image_shape), "softplus",
            name="p_x")
        self.adversary = _mlp(config.adversary_units, config.adversary_layers, "elu", 1)
        self.prior = distributions.standard_normal(latent)
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        names = ["loss", "reconstruction", "kl_estimate", "elbo_estimate", "adversary_loss", "t_posterior", "t_prior"]
        names += ["contrast_kl"] * config.adaptive_contrast
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.evaluation_samples = 1  # k of the importance-sampled bound in test_step; see use_importance_samples
        self.bound_tracker = keras.metrics.Mean(name="nll")

    @property
    def _pixels(self) -> int:
        return math.prod(self.config.image_shape)

    def build(self, input_shape=None):
        config = self.config
        features = (None, self._pixels)
        for layer in self.encoder_trunk:
            layer.build(features)
            features = (None, layer.units)
        self.encoder_offset.build(features)
        self.encoder_scales.build(features)
        self.noise_networks.build((config.noise_basis, None, config.noise_units))
        self.decoder.build((None, config.latent_units))
        shape = (None, self._pixels + config.latent_units)
        for layer in self.adversary:
            layer.build(shape)
            shape = (None, layer.units)
        super().build(input_shape)

    @property
    def metrics(self):
        return [*self.trackers.values(), self.bound_tracker]

    # The three networks.

    def _flat(self, images):
        return tf.reshape(images, [tf.shape(images)[0], self._pixels]) * 2.0 - 1.0  # centred, as the authors'

    def posterior(self, images, noise, moment_noise=None):
        """z ~ q(z | x) with its mean and variance: (z [batch, D], E[z | x], Var[z | x]).

        noise: [B, batch, noise_units], one draw per example and noise network; moment_noise:
        [B, M, noise_units], the draws from which each v_i's mean and variance are estimated
        (without it, the moments are None).
        """
        features = _run(self.encoder_trunk, self._flat(images))
        offset = self.encoder_offset(features)
        scales = tf.reshape(self.encoder_scales(features), [-1, self.config.noise_basis, self.config.latent_units])
        scales = tf.nn.elu(scales - 5.0) + 1.0  # a_i(x) > 0, small at first (the authors' code)
        basis = tf.transpose(self.noise_networks(noise), [1, 0, 2])  # [batch, B, D]
        latents = offset + tf.reduce_sum(scales * basis, axis=1)
        if moment_noise is None:
            return latents, None, None
        basis_mean, basis_variance = tf.nn.moments(self.noise_networks(moment_noise), axes=[1])  # over the M draws
        mean = offset + tf.reduce_sum(scales * basis_mean, axis=1)
        variance = tf.reduce_sum(tf.square(scales) * basis_variance, axis=1)
        return latents, mean, variance

    def adversary_score(self, images, latents):
        """T_ψ(x, z), [batch]: at its optimum log q(z | x) − log p(z) (Prop. 1)."""
        return _run(self.adversary, tf.concat([self._flat(images), latents], -1))[:, 0]

    # The objective: Eq. 3 for the adversary, Eq. 7 for the encoder and decoder (Sec. 4 with contrast).

    def _terms(self, images, seed):
        config = self.config
        batch = tf.shape(images)[0]

        def normal(shape, stream):
            return tf.random.stateless_normal(shape, seed=tf.random.experimental.stateless_fold_in(seed, stream))

        latents, mean, variance = self.posterior(
            images, normal([config.noise_basis, batch, config.noise_units], NOISE),
            normal([config.noise_basis, config.contrast_samples, config.noise_units], MOMENTS))
        terms = {}
        if config.adaptive_contrast:
            scale = tf.sqrt(variance + VARIANCE_FLOOR)
            contrast = tfd.Independent(tfd.Normal(mean, scale), reinterpreted_batch_ndims=1)
            terms["contrast_kl"] = distributions.kl_between_gaussians(contrast, self.prior)  # KL(r_α ‖ p)
            compared = (latents - mean) / scale  # z̃ against N(0, I)
        else:
            compared = latents
        t_posterior = self.adversary_score(images, compared)
        t_prior = self.adversary_score(images, normal([batch, config.latent_units], PRIOR))
        reconstruction = self.decoder(latents).log_prob(images)
        kl_estimate = t_posterior + terms.get("contrast_kl", 0.0)
        terms.update({
            "adversary_loss": gan_losses.discriminator_loss(t_posterior, t_prior),  # −(Eq. 3): q pairs are "real"
            "t_posterior": t_posterior, "t_prior": t_prior,
            "reconstruction": reconstruction, "kl_estimate": kl_estimate,
            "elbo_estimate": reconstruction - kl_estimate, "loss": kl_estimate - reconstruction,  # −(Eq. 7)
        })
        return terms

    def train_step(self, data):
        """Algorithm 1: `adversary_steps` updates of T on Eq. 3, then one of the encoder and decoder on Eq. 7."""
        images = data["image"]
        seed = steps.replica_seed(self.seed_generator)
        global_batch = steps.global_batch_size(images)
        for step in range(self.config.adversary_steps):
            with tf.GradientTape() as tape:
                terms = self._terms(images, tf.random.experimental.stateless_fold_in(seed, step))
                loss = tf.reduce_sum(terms["adversary_loss"]) / global_batch
            self._descend(self.adversary_optimizer, tape, loss, self._adversary_variables)
        with tf.GradientTape() as tape:
            terms = self._terms(images, tf.random.experimental.stateless_fold_in(seed, -1))
            loss = tf.reduce_sum(terms["loss"]) / global_batch
        self._descend(self.optimizer, tape, loss, self._autoencoder_variables)
        return steps.update_trackers(self.trackers, terms)

    @staticmethod
    def _descend(optimizer, tape, loss, variables):
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    def test_step(self, data):
        """The terms of Eq. 7, and `nll`: −L_k with r_α(z | x) as the proposal (`importance_sampled_bound`)."""
        images = data["image"]
        seed = steps.replica_seed(self.seed_generator)
        logs = steps.update_trackers(self.trackers, self._terms(images, seed))
        self.bound_tracker.update_state(-self.importance_sampled_bound(images, self.evaluation_samples,
                                                                       tf.random.experimental.stateless_fold_in(seed, 3)))
        return {**logs, "nll": self.bound_tracker.result()}

    def importance_sampled_bound(self, images, k: int, seed):
        """L_k = log (1/k) Σ_j p(x | z_j) p(z_j) / r_α(z_j | x), z_j ~ r_α(z | x), [batch].

        q has no density, but r_α, the Gaussian with q's mean and variance (Sec. 4), is a proposal like any
        other: E[exp L_1] = p(x), so L_k is a stochastic lower bound on log p(x) that tightens with k (Burda
        et al. 2016, Eq. 8). Unlike `elbo_estimate`, it does not rest on the adversary being optimal.
        """
        config = self.config
        noise = tf.random.stateless_normal([config.noise_basis, tf.shape(images)[0], config.noise_units],
                                           seed=tf.random.experimental.stateless_fold_in(seed, NOISE))
        moment_noise = tf.random.stateless_normal([config.noise_basis, config.contrast_samples, config.noise_units],
                                                  seed=tf.random.experimental.stateless_fold_in(seed, MOMENTS))
        _, mean, variance = self.posterior(images, noise, moment_noise)
        proposal = tfd.Independent(tfd.Normal(mean, tf.sqrt(variance + VARIANCE_FLOOR)), reinterpreted_batch_ndims=1)
        latents = proposal.sample(k, seed=tf.random.experimental.stateless_fold_in(seed, PRIOR))  # [k, batch, D]
        log_weights = self.log_decoder(images, latents) + self.log_prior(latents) - proposal.log_prob(latents)
        return bounds.iwae_bound(log_weights)

    def use_importance_samples(self, k: int) -> None:
        """Evaluates (`test_step`) with k importance samples from r_α: `nll` is then −L_k."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.evaluation_samples = k

    @property
    def _adversary_variables(self):
        return [variable for layer in self.adversary for variable in layer.trainable_variables]

    @property
    def _autoencoder_variables(self):
        adversary = {id(variable) for variable in self._adversary_variables}
        return [variable for variable in self.trainable_variables if id(variable) not in adversary]

    def compile_for_training(self, steps_per_epoch: int):
        """Adam for the encoder and decoder (`optimizer`) and for the adversary, with the authors' rates."""
        del steps_per_epoch  # constant learning rates
        config = self.config
        self.compile(optimizer=keras.optimizers.Adam(config.learning_rate, beta_1=config.adam_beta_1),
                     jit_compile=config.jit_compile)
        self.adversary_optimizer = keras.optimizers.Adam(config.adversary_learning_rate, beta_1=config.adam_beta_1)
        self.optimizer.build(self._autoencoder_variables)  # slots now, so train_step is traced once
        self.adversary_optimizer.build(self._adversary_variables)

    # Samplers and paths; these back the serving signatures.

    def _image_mean(self, latents):
        return self.decoder(latents).mean()

    def encode(self, images, seeds):
        """z ~ q(z | x), one draw per image from its seed: [N, D]."""
        noise = per_example_normal(seeds, [self.config.noise_basis, self.config.noise_units], stream=NOISE_STREAM)
        return self.posterior(images, tf.transpose(noise, [1, 0, 2]))[0]

    def sample(self, seeds):
        """E[x | z] for z ~ N(0, I), one image per int64 seed."""
        return self._image_mean(per_example_normal(seeds, [self.config.latent_units], stream=LATENT_STREAM))

    def serving_signatures(self):
        images = tf.TensorSpec([None, *self.config.image_shape], tf.float32, name="images")
        finite = signatures.checked_finite
        return {
            **signatures.seed_signatures(self.sample),
            "encode": (lambda images, seed: {"latent": self.encode(finite(images, "images"), seed)},
                       [images, signatures.SEED]),
            "reconstruct": (lambda images, seed: {"images": self._image_mean(self.encode(finite(images, "images"),
                                                                                         seed))},
                            [images, signatures.SEED]),
            "decode": (lambda latent: {"images": self._image_mean(finite(latent, "latent"))},
                       [tf.TensorSpec([None, self.config.latent_units], tf.float32, name="latent")]),
        }

    def summaries(self, images):
        """TensorBoard grids: 64 prior samples, and inputs beside reconstructions through one z ~ q(z | x)."""
        seeds = tf.range(tf.shape(images)[0], dtype=tf.int64)
        return {"prior_samples": self.sample(tf.range(64, dtype=tf.int64)),
                "reconstructions": signatures.side_by_side(images, self._image_mean(self.encode(images, seeds)))}

    # Densities for annealed importance sampling (zoo.common.ais): the decoder is explicit.

    def prior_latents(self, shape, seed):
        return tf.random.stateless_normal([*shape, self.config.latent_units], seed=seed)

    def log_prior(self, latents):
        return self.prior.log_prob(latents)

    def log_decoder(self, images, latents):
        return self.decoder(latents).log_prob(images)

    def decoder_sample(self, latents, seed):
        return self.decoder(latents).sample(seed=seed)


def build(config: AVBConfig) -> AVB:
    model = AVB(config, name="avb")
    model.build()
    return model


def dataset(config: AVBConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=True)


TINY = dict(latent_units=3, noise_units=4, noise_basis=2, noise_hidden_units=8, noise_hidden_layers=1,
            encoder_units=16, decoder_units=16, decoder_layers=1, adversary_units=16, adversary_layers=1,
            contrast_samples=8, image_shape=(6, 6, 1), batch_size=8)

registry.register(registry.ModelSpec(
    "zoo.avb", "Adversarial Variational Bayes (Mescheder et al. 2017): implicit encoder, adversary for the KL",
    AVBConfig, build, dataset, tiny=TINY, evaluation=("likelihood", "ais")))
