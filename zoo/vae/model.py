"""Variational and importance-weighted autoencoders (VAE, IWAE).

Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014, arXiv:1312.6114.
Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016,
arXiv:1509.00519.

One family, two registry entries: `zoo.vae` maximises the ELBO (averaged over k
samples, the "VAE" column of Burda et al., Table 1) and `zoo.iwae` maximises the
k-sample bound L_k = E[log (1/k) Σ_j p(x, h_j) / q(h_j | x)] (Eq. 8). Both use
the paper's architectures (Sec. 5): with one stochastic layer 784-200-200-50,
with two 784-200-200-100 then 100-100-50, tanh units, mirrored in p, and a
Bernoulli likelihood for binarized MNIST.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import bounds, distributions, signatures, steps
from zoo.common.metrics import ActiveUnits
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_normal, per_example_normal_rows

PAPER_ARCHITECTURES = {  # Burda et al. 2016, Sec. 5
    1: {"hidden_units": (200,), "latent_units": (50,)},
    2: {"hidden_units": (200, 100), "latent_units": (100, 50)},
}


@dataclasses.dataclass(frozen=True)
class VAEConfig(config_lib.TrainingConfig):
    # Architecture (Burda et al. 2016, Sec. 5).
    stochastic_layers: int = 1              # Sec. 5: one or two
    hidden_units: tuple[int, ...] | None = None  # per stochastic layer; None: PAPER_ARCHITECTURES
    latent_units: tuple[int, ...] | None = None  # per stochastic layer; None: PAPER_ARCHITECTURES
    deterministic_layers: int = 2           # Sec. 5: two tanh layers per stochastic layer
    likelihood: str = "bernoulli"           # Sec. 5 (binarized data); "gaussian" for grey levels in [0, 1]
    scale_activation: str = "softplus"      # deviation: the authors' code uses exp; softplus cannot overflow
    # Objective.
    objective: str = "elbo"                 # "elbo" (VAE) or "iwae" (L_k, Eq. 8)
    k: int = 1                              # Table 1: k in 1, 5, 50
    # Data and optimisation (Sec. 5).
    dataset: str = "mnist"                  # Sec. 5: MNIST, binarized dynamically
    batch_size: int = 20                    # Sec. 5
    epochs: int = 3280                      # Sec. 5: Σ_{i=0..7} 3^i passes
    learning_rate: float = 1e-3             # Sec. 5: 0.001 · 10^(-i/7) in stage i
    learning_rate_schedule: str = "burda"   # "burda" (Sec. 5) or "constant"
    adam_beta_1: float = 0.9                # Sec. 5
    adam_beta_2: float = 0.999              # Sec. 5
    adam_epsilon: float = 1e-4              # Sec. 5; Keras default 1e-7 differs

    def __post_init__(self):
        super().__post_init__()
        checks = [
            (self.objective in ("elbo", "iwae"), "objective must be 'elbo' or 'iwae'"),
            (self.likelihood in ("bernoulli", "gaussian"), "likelihood must be 'bernoulli' or 'gaussian'"),
            (self.scale_activation in distributions.SCALE_ACTIVATIONS, "scale_activation must be 'softplus' or 'exp'"),
            (self.learning_rate_schedule in ("burda", "constant"), "learning_rate_schedule must be 'burda' or 'constant'"),
            (self.k >= 1, "k must be >= 1"),
            (self.deterministic_layers >= 1, "deterministic_layers must be >= 1"),
        ]
        config_lib.check(self, checks)
        hidden, latent = self.architecture
        if not len(hidden) == len(latent) == self.stochastic_layers:
            raise config_lib.ConfigError(
                f"VAEConfig: stochastic_layers={self.stochastic_layers} needs that many "
                f"hidden_units and latent_units (got {hidden} and {latent}); the paper "
                f"defines 1 and 2 layers, other depths must set both tuples"
            )

    @property
    def architecture(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(hidden units, latent units) per stochastic layer, bottom first."""
        paper = PAPER_ARCHITECTURES.get(self.stochastic_layers, {})
        hidden = self.hidden_units or paper.get("hidden_units", ())
        latent = self.latent_units or paper.get("latent_units", ())
        return tuple(hidden), tuple(latent)


# Images × importance samples one log_likelihood request may ask for. Memory is bounded by
# the chunk (~140 MB at peak for the paper's one-layer model), so this budget bounds time:
# 2^20 samples take ~7 s on 2 CPU cores (docs/serving.md, "Limits").
MAX_SERVED_IMPORTANCE_SAMPLES = 1 << 20
SAMPLES_PER_CHUNK = 1 << 13  # images × importance samples computed at once by log_likelihood


@keras.saving.register_keras_serializable(package="zoo")
class StagedDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr = lr_0 · 10^(-i/7) in stage i, stage i lasting 3^i epochs (Burda et al. 2016, Sec. 5).

    Stage i starts after Σ_{j<i} 3^j = (3^i - 1)/2 epochs.
    """

    def __init__(self, initial_learning_rate: float, steps_per_epoch: int, stages: int = 8):
        self.initial_learning_rate = initial_learning_rate
        self.steps_per_epoch = steps_per_epoch
        self.stages = stages

    def __call__(self, step):
        epoch = tf.cast(step, tf.int64) // self.steps_per_epoch
        stage_starts = tf.constant([(3**i - 1) // 2 for i in range(1, self.stages)], tf.int64)
        stage = tf.reduce_sum(tf.cast(epoch >= stage_starts, tf.float32))
        return self.initial_learning_rate * tf.pow(10.0, -stage / 7.0)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "stages": self.stages,
        }


class _ConditionalDistribution(distributions.ConditionalDistribution):
    """The shared MLP under this family's old class name: a .keras file stores the layers of a list
    attribute under their class's name, so VAE files written before the move keep loading."""


@keras.saving.register_keras_serializable(package="zoo")
class VAE(ConfigSerialization, keras.Model):
    """A VAE/IWAE with L Gaussian stochastic layers h_1..h_L (Burda et al. 2016, Sec. 5).

    Generative model p(x, h) = p(h_L) Π_{i<L} p(h_i | h_{i+1}) p(x | h_1) with
    p(h_L) = N(0, I); inference model q(h | x) = q(h_1 | x) Π_{i>1} q(h_i | h_{i-1}).
    Data contract: batches are dicts with "image", float32 [batch, *image_shape].
    """

    config_class = VAEConfig

    def __init__(self, config: VAEConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        hidden, latent = config.architecture
        depth = config.deterministic_layers
        self.latent_units = latent
        self.inference_networks = [  # q(h_i | h_{i-1}), h_0 = x
            _ConditionalDistribution(
                units, depth, distributions.GaussianLayer((size,), config.scale_activation), name=f"q_h{i + 1}"
            )
            for i, (units, size) in enumerate(zip(hidden, latent))
        ]
        self.latent_decoders = [  # p(h_i | h_{i+1}) for i = 1..L-1, mirroring q
            _ConditionalDistribution(
                hidden[i + 1], depth, distributions.GaussianLayer((latent[i],), config.scale_activation),
                name=f"p_h{i + 1}",
            )
            for i in range(len(latent) - 1)
        ]
        likelihood = (
            distributions.BernoulliLayer(config.image_shape)
            if config.likelihood == "bernoulli"
            else distributions.GaussianLayer(config.image_shape, config.scale_activation)
        )
        self.observation_decoder = _ConditionalDistribution(hidden[0], depth, likelihood, name="p_x")
        self.prior = distributions.standard_normal(latent[-1])
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        self.evaluation_samples = config.k  # k of test_step; see use_importance_samples
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "bound", "elbo", "nll", "reconstruction", "kl")
        }
        self.active_units = [
            ActiveUnits(size, name=f"active_units_{i + 1}") for i, size in enumerate(latent)
        ]

    def build(self, input_shape):
        sizes = [self._pixels, *self.latent_units]
        for network, size in zip(self.inference_networks, sizes):
            network.build((None, size))
        for network, size in zip(self.latent_decoders, self.latent_units[1:]):
            network.build((None, size))
        self.observation_decoder.build((None, self.latent_units[0]))
        super().build(input_shape)

    @property
    def _pixels(self) -> int:
        return math.prod(self.config.image_shape)

    @property
    def metrics(self):
        return [*self.trackers.values(), *self.active_units]

    # The objective (Burda et al. 2016, Sec. 3).

    def _importance_terms(self, images, noise):
        """log w_j = log p(x, h_j) − log q(h_j | x), h_j = μ_q + σ_q ε_j (Eq. 8).

        Args:
          images: [batch, *image_shape].
          noise: per stochastic layer, standard normal ε of shape [k, batch, units].
        Returns a dict of [k, batch] tensors ("log_weights", "reconstruction",
        "kl") and "posterior_means": per layer E_q[h_i | x], [batch, units].
        """
        features = tf.reshape(images, [tf.shape(images)[0], self._pixels])
        samples, posterior_means, log_q = [], [], 0.0
        for network, epsilon in zip(self.inference_networks, noise):
            posterior = network(samples[-1] if samples else features)
            samples.append(distributions.reparameterize(posterior, epsilon))
            log_q += posterior.log_prob(samples[-1])
            mean = tf.broadcast_to(posterior.mean(), tf.shape(samples[-1]))
            posterior_means.append(tf.reduce_mean(mean, axis=0))  # E over h_{<i} ~ q
        log_prior = self.prior.log_prob(samples[-1])
        for network, below, above in zip(self.latent_decoders, samples, samples[1:]):
            log_prior += network(above).log_prob(below)
        reconstruction = self.observation_decoder(samples[0]).log_prob(images)
        return {
            "log_weights": reconstruction + log_prior - log_q,
            "reconstruction": reconstruction,
            "kl": log_q - log_prior,
            "posterior_means": posterior_means,
        }

    def _objective(self, images, k: int):
        """Per-example terms of the training objective with k samples per image."""
        seed = steps.replica_seed(self.seed_generator)
        batch = tf.shape(images)[0]
        noise = [
            tf.random.stateless_normal(
                [k, batch, units], seed=tf.random.experimental.stateless_fold_in(seed, layer)
            )
            for layer, units in enumerate(self.latent_units)
        ]
        terms = self._importance_terms(images, noise)
        log_weights = terms["log_weights"]
        bound = bounds.iwae_bound(log_weights) if self.config.objective == "iwae" else bounds.elbo(log_weights)
        return {
            "bound": bound,
            "elbo": bounds.elbo(log_weights),
            "nll": -bounds.iwae_bound(log_weights),
            "reconstruction": tf.reduce_mean(terms["reconstruction"], axis=0),
            "kl": tf.reduce_mean(terms["kl"], axis=0),
            "posterior_means": terms["posterior_means"],
        }

    def train_step(self, data):
        images = data["image"]
        with tf.GradientTape() as tape:
            terms = self._objective(images, self.config.k)
            loss = -tf.reduce_sum(terms["bound"]) / steps.global_batch_size(images)  # ascend L (Eq. 8 / Eq. 3)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._update_trackers(terms)

    def test_step(self, data):
        terms = self._objective(data["image"], self.evaluation_samples)
        for metric, means in zip(self.active_units, terms["posterior_means"]):
            metric.update_state(means)
        logs = self._update_trackers(terms)
        return {**logs, **{metric.name: metric.result() for metric in self.active_units}}

    def _update_trackers(self, terms):
        return steps.update_trackers(self.trackers, {**terms, "loss": -terms["bound"]})

    def use_importance_samples(self, k: int) -> None:
        """Evaluates (`test_step`) with k importance samples: `nll` is then −L_k (Burda et al. 2016 use 5000)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.evaluation_samples = k

    def compile_for_training(self, steps_per_epoch: int):
        """Adam with the paper's ε and, by default, its staged learning-rate decay."""
        config = self.config
        learning_rate = (
            StagedDecay(config.learning_rate, steps_per_epoch)
            if config.learning_rate_schedule == "burda"
            else config.learning_rate
        )
        optimizer = keras.optimizers.Adam(
            learning_rate, beta_1=config.adam_beta_1, beta_2=config.adam_beta_2, epsilon=config.adam_epsilon
        )
        self.compile(optimizer=optimizer, jit_compile=config.jit_compile)
        optimizer.build(self.trainable_variables)  # slots now, so train_step is traced once

    # Deterministic paths and samplers; these back the serving signatures.

    def _image_mean(self, likelihood):
        return tf.clip_by_value(likelihood.mean(), 0.0, 1.0)

    def encode(self, images):
        """Posterior mean and stddev per layer; layer i > 1 is taken at the mean of layer i − 1."""
        h = tf.reshape(images, [tf.shape(images)[0], self._pixels])
        outputs = {}
        for layer, network in enumerate(self.inference_networks, start=1):
            posterior = network(h).distribution
            outputs[f"mean_{layer}"], outputs[f"stddev_{layer}"] = posterior.loc, posterior.scale
            h = posterior.loc
        return outputs

    def decode(self, latent):
        """E[x | h_1] with h_{i} = E[h_i | h_{i+1}] down from the top latent h_L."""
        h = latent
        for network in reversed(self.latent_decoders):
            h = network(h).mean()
        return self._image_mean(self.observation_decoder(h))

    def call(self, images):
        """Reconstruction decode(E_q[h_L | x]) through the whole stack."""
        return self.decode(self.encode(images)[f"mean_{len(self.latent_units)}"])

    def sample(self, seeds):
        """x ~ p(x) by ancestral sampling, one image per int64 seed; returns E[x | h_1]."""
        top = len(self.latent_units) - 1
        h = per_example_normal(seeds, [self.latent_units[top]], stream=top)
        for layer in reversed(range(top)):
            noise = per_example_normal(seeds, [self.latent_units[layer]], stream=layer)
            h = distributions.reparameterize(self.latent_decoders[layer](h), noise)
        return self._image_mean(self.observation_decoder(h))

    def log_likelihood(self, images, num_importance_samples, seeds):
        """L_k per image, k = num_importance_samples[b], noise from seeds[b] (Eq. 8).

        Sample j of image b is drawn from (seeds[b], j) alone; memory is bounded by
        SAMPLES_PER_CHUNK images × samples (`zoo.common.bounds.iwae_bound_per_example`).
        """
        def log_weights(group, group_seeds, first_sample, count):
            noise = [tf.transpose(per_example_normal_rows(group_seeds, first_sample, count, units, stream=layer),
                                  [1, 0, 2])
                     for layer, units in enumerate(self.latent_units)]
            return self._importance_terms(group, noise)["log_weights"]

        return bounds.iwae_bound_per_example(log_weights, images, num_importance_samples, seeds, SAMPLES_PER_CHUNK)

    def serving_signatures(self):
        """Samplers from seeds, and the paths from images or latents, which refuse NaN and Inf."""
        images = tf.TensorSpec([None, *self.config.image_shape], tf.float32, name="images")
        finite = signatures.checked_finite
        return {
            **signatures.seed_signatures(self.sample),
            "reconstruct": (lambda images: {"images": self(finite(images, "images"))}, [images]),
            "encode": (lambda images: self.encode(finite(images, "images")), [images]),
            "decode": (
                lambda latent: {"images": self.decode(finite(latent, "latent"))},
                [tf.TensorSpec([None, self.latent_units[-1]], tf.float32, name="latent")],
            ),
            "log_likelihood": signatures.log_likelihood_signature(
                self.log_likelihood, self.config.image_shape, MAX_SERVED_IMPORTANCE_SAMPLES),
        }

    # Densities for annealed importance sampling (zoo.common.ais): z = [h_1, …, h_L] side by side.

    def prior_latents(self, shape, seed):
        """z ~ p(h_L) Π_{i<L} p(h_i | h_{i+1}) by ancestral sampling, [*shape, Σ_i units_i]."""
        top = len(self.latent_units) - 1
        layers = {top: tf.random.stateless_normal([*shape, self.latent_units[top]],
                                                  seed=tf.random.experimental.stateless_fold_in(seed, top))}
        for layer in reversed(range(top)):
            layer_seed = tf.random.experimental.stateless_fold_in(seed, layer)
            layers[layer] = self.latent_decoders[layer](layers[layer + 1]).sample(seed=layer_seed)
        return tf.concat([layers[layer] for layer in range(top + 1)], axis=-1)

    def log_prior(self, latents):
        """log p(h_L) + Σ_{i<L} log p(h_i | h_{i+1}) (Sec. 5), [...] for latents [..., Σ_i units_i]."""
        layers = tf.split(latents, self.latent_units, axis=-1)
        log_prior = self.prior.log_prob(layers[-1])
        for network, below, above in zip(self.latent_decoders, layers, layers[1:]):
            log_prior += network(above).log_prob(below)
        return log_prior

    def log_decoder(self, images, latents):
        """log p(x_b | h_1), [chains, batch], for images [batch, ...] and latents [chains, batch, Σ_i units_i]."""
        return self.observation_decoder(latents[..., :self.latent_units[0]]).log_prob(images)

    def decoder_sample(self, latents, seed):
        """x ~ p(x | h_1) (binary draws for the Bernoulli likelihood), [batch, *image_shape]."""
        return self.observation_decoder(latents[..., :self.latent_units[0]]).sample(seed=seed)

    def summaries(self, images):
        """TensorBoard grids: 64 prior samples, and inputs beside their reconstructions."""
        return {
            "prior_samples": self.sample(tf.range(64, dtype=tf.int64)),
            "reconstructions": signatures.side_by_side(images, self(images)),
        }



def build(config: VAEConfig) -> VAE:
    model = VAE(config, name="iwae" if config.objective == "iwae" else "vae")
    model.build((None, *config.image_shape))
    return model


def dataset(config: VAEConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=config.likelihood == "bernoulli")


TINY = {"hidden_units": (16,), "latent_units": (4,), "image_shape": (6, 6, 1), "batch_size": 8}

registry.register(registry.ModelSpec(
    "zoo.vae", "VAE (Kingma & Welling 2014) on the IWAE architectures", VAEConfig, build, dataset, tiny=TINY,
    evaluation=("likelihood", "ais")))
registry.register(registry.ModelSpec(
    "zoo.iwae", "IWAE (Burda et al. 2016), k = 50", VAEConfig, build, dataset,
    preset={"objective": "iwae", "k": 50},  # Table 1: k = 50 is the headline column
    tiny={**TINY, "k": 2}, evaluation=("likelihood", "ais")))
