"""The Neural Statistician: a variational autoencoder over datasets.

Edwards, Storkey. Towards a Neural Statistician. ICLR 2017, arXiv:1606.02185.

Each dataset D (here a set of items of one class) has a context c, and each item its
own latents z = (z_1 … z_L):

    c ~ p(c) = N(0, I),   z_L ~ p(z_L | c),   z_l ~ p(z_l | z_{l+1}, c),   x ~ p(x | z_{1:L}, c).

Four networks (Sec. 3): the statistic network q(c | D) encodes every item with a shared
encoder, averages the encodings over the set (mean pooling, so that q(c | D) ignores the
order of the items) and maps the average to a diagonal Gaussian; the inference network
q(z_L | x, c), q(z_l | z_{l+1}, x, c); the latent decoder p(z_l | z_{l+1}, c); the
observation decoder p(x | z_{1:L}, c), a Bernoulli per pixel for binarized images and a
diagonal Gaussian for vectors (2-D points, 1-D samples). The item encoder is shared by the
statistic and inference networks, as in Sec. 5.3. With `sample_dropout` training leaves random items out
of the average and the statistic network sees how many it averaged (Sec. 5.3: this reduces overfitting and
lets q(c | D) adjust to the number of items, which one-shot classification needs).

The bound on log p(D) (Sec. 3.2, Eqs. 7–10) is

    L_D = E_q(c|D)[ Σ_x ( E_q(z|x,c) log p(x | z, c) − Σ_l E KL(q(z_l | z_{l+1}, x, c) ‖ p(z_l | z_{l+1}, c)) ) ]
          − KL(q(c | D) ‖ p(c)),

every KL between Gaussians in closed form given the sampled layers above it. Training
minimises −L_D divided by the set size (nats per item; the sets of a dataset have one size).
The paper's main text gives no reweighting of the terms, and none is applied here.

Evaluation: with k samples (c_j, z_j) ~ q the importance-weighted bound on log p(D)

    L_k(D) = log (1/k) Σ_j p(c_j) Π_x [p(x | z_xj, c_j) p(z_xj | c_j) / q(z_xj | x, c_j)] / q(c_j | D),

which is L_D's single-sample estimate at k = 1 and tightens with k (Burda et al. 2016, Eq. 8, over
the pair (c, z)). Few-shot classification compares context posteriors (`context`; `training.few_shot`).

Networks are MLPs of ReLU units over flattened items (the paper's Omniglot model is convolutional).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import bounds, distributions, signatures, steps
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_normal
from zoo.neural_statistician import pictures

CONTEXT_STREAM, ITEM_STREAM = 0, 1  # streams of a request seed (zoo.common.stateless); items use ITEM_STREAM + l
# for z_l and ITEM_STREAM + L for the noise of vector observations


@dataclasses.dataclass(frozen=True)
class NeuralStatisticianConfig(config_lib.TrainingConfig):
    # Data: sets of items of one class (training.data); the train role's classes apart from the evaluation roles'.
    dataset: str = "mnist"        # binarized dynamically; training on digits 0–6, evaluation sets of 7–9
    set_size: int = 5             # items per set (ours; the paper's Omniglot sets are small, Sec. 5.3)
    item_size: int = 0            # 0: items are images of image_shape; D > 0: vectors of D values (points, 1-D
                                  # samples), and image_shape is then the canvas a set is drawn on
    # Networks (Sec. 5: three dense layers per network; the statistic network three before pooling, three after).
    hidden_units: int = 256
    hidden_layers: int = 3        # of the item encoder, the post-pooling network and each conditional network
    context_units: int = 64       # c (Sec. 5.2: 64 for spatial MNIST; 512 for Omniglot, Sec. 5.3)
    latent_units: int = 16        # per stochastic layer of z (Sec. 5.3: 16)
    stochastic_layers: int = 1    # L (Sec. 5.2: 3 for spatial MNIST)
    k: int = 1                    # samples of (c, z) per set in training
    sample_dropout: float = 0.0   # Sec. 5.3: the chance that training leaves an item out of the pooling (one stays)
    # Optimisation (Sec. 5: Adam, batches of 16 sets; the learning rate is not given, ours 1e-3).
    batch_size: int = 16
    epochs: int = 300             # Sec. 5.2–5.3: 300
    learning_rate: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (self.set_size >= 1, f"set_size must be >= 1, got {self.set_size}"),
            (self.item_size >= 0, f"item_size must be >= 0 (0: image items), got {self.item_size}"),
            (0.0 <= self.sample_dropout < 1.0, f"sample_dropout must be in [0, 1), got {self.sample_dropout}"),
            (min(self.hidden_units, self.hidden_layers, self.context_units, self.latent_units,
                 self.stochastic_layers, self.k) >= 1,
             "hidden_units, hidden_layers, context_units, latent_units, stochastic_layers and k must be >= 1"),
        ])

    @property
    def item_shape(self) -> tuple[int, ...]:
        """The shape of one item: the image shape, or (item_size,) for vectors."""
        return (self.item_size,) if self.item_size else tuple(self.image_shape)


def _mlp(units: int, depth: int, name: str) -> keras.Sequential:
    return keras.Sequential([keras.layers.Dense(units, activation="relu") for _ in range(depth)], name=name)


@keras.saving.register_keras_serializable(package="zoo")
class NeuralStatistician(ConfigSerialization, keras.Model):
    """q(c | D), q(z | x, c), p(z | c) and p(x | z, c) (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, set_size, *item_shape] (binary pixels
    for image items), and "label", the set's class [batch], which the model does not read.
    """

    config_class = NeuralStatisticianConfig

    def __init__(self, config: NeuralStatisticianConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config

        def conditional(head, name):
            return distributions.ConditionalDistribution(config.hidden_units, config.hidden_layers, head, "relu",
                                                         name=name)

        latent = (config.latent_units,)
        self.item_encoder = _mlp(config.hidden_units, config.hidden_layers, "item_encoder")
        self.statistic_network = conditional(distributions.GaussianLayer((config.context_units,)), "q_c")
        self.inference_networks = [conditional(distributions.GaussianLayer(latent), f"q_z{layer + 1}")
                                   for layer in range(config.stochastic_layers)]
        self.latent_decoders = [conditional(distributions.GaussianLayer(latent), f"p_z{layer + 1}")
                                for layer in range(config.stochastic_layers)]
        observation = (distributions.GaussianLayer(config.item_shape) if config.item_size
                       else distributions.BernoulliLayer(config.item_shape))
        self.observation_decoder = conditional(observation, "p_x")
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        self.evaluation_samples = config.k
        names = ["loss", "elbo", "nll", "reconstruction", "kl_z", "kl_c", "nll_per_item"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def _item_features(self) -> int:
        return math.prod(self.config.item_shape)

    def build(self, input_shape=None):
        config = self.config
        self.item_encoder.build((None, None, self._item_features))  # [sets, items, features]
        counted = 1 if config.sample_dropout else 0  # the pooled encodings, and with sample dropout their count
        self.statistic_network.build((None, config.hidden_units + counted))
        for layer in range(config.stochastic_layers):
            above = config.latent_units if layer < config.stochastic_layers - 1 else 0
            self.inference_networks[layer].build((None, config.hidden_units + config.context_units + above))
            self.latent_decoders[layer].build((None, config.context_units + above))
        self.observation_decoder.build((None, config.context_units + config.stochastic_layers * config.latent_units))
        super().build(input_shape)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # The four networks.

    def _encode(self, items):
        """Items [B, S, *item_shape] → the shared encodings [B, S, hidden]."""
        flat = tf.reshape(items, tf.concat([tf.shape(items)[:2], [self._item_features]], 0))
        return self.item_encoder(flat)

    def context_posterior(self, encodings, pooled=None):
        """q(c | D) from the items' encodings [B, S, hidden]: their mean over the set (over the items where
        `pooled` [B, S] is true, when given), then the post-pooling network (Sec. 3.1, the statistic network).
        A model trained with sample dropout sees the number of items averaged beside their mean (Sec. 5.3).
        Batch [B]."""
        weights = tf.ones(tf.shape(encodings)[:2]) if pooled is None else tf.cast(pooled, tf.float32)
        count = tf.reduce_sum(weights, axis=1, keepdims=True)
        features = tf.reduce_sum(encodings * weights[..., None], axis=1) / count
        return self.statistic_network(tf.concat([features, count], -1) if self.config.sample_dropout else features)

    def _sample_dropout(self, items, seed):
        """Which items training pools, [B, S] (Sec. 5.3, "sample dropout"): each is left out with probability
        `sample_dropout`, except each set's item with the largest draw, which always stays."""
        draws = tf.random.stateless_uniform(tf.shape(items)[:2], seed)
        return (draws >= self.config.sample_dropout) | (draws >= tf.reduce_max(draws, axis=1, keepdims=True))

    def _latents(self, context, encodings, noises):
        """z_L … z_1 ~ q(z | x, c) top-down, with per-layer closed-form KLs against p(z | c).

        context [K, B, 1, C] and encodings [B, S, hidden] broadcast against each other; noises is a list
        of L tensors [K, B, S, latent], top layer first. Returns (latents, first layer first, and
        Σ_l KL(q(z_l | z_{l+1}, x, c) ‖ p(z_l | z_{l+1}, c)), log q(z | x, c) and log p(z | c), each
        [K, B, S])."""
        shape = tf.shape(noises[0])[:-1]
        context = tf.broadcast_to(context, tf.concat([shape, tf.shape(context)[-1:]], 0))
        encodings = tf.broadcast_to(encodings, tf.concat([shape, tf.shape(encodings)[-1:]], 0))
        latents, kl, log_q, log_p = [], 0.0, 0.0, 0.0
        above = []
        for layer, noise in zip(reversed(range(self.config.stochastic_layers)), noises):
            posterior = self.inference_networks[layer](tf.concat([encodings, context, *above], -1))
            prior = self.latent_decoders[layer](tf.concat([context, *above], -1))
            latent = distributions.reparameterize(posterior, noise)
            kl += distributions.kl_between_gaussians(posterior, prior)
            log_q += posterior.log_prob(latent)
            log_p += prior.log_prob(latent)
            latents.insert(0, latent)
            above = [latent]
        return latents, kl, log_q, log_p

    def _observation(self, context, latents):
        """p(x | z_{1:L}, c) for latents (first layer first) [..., latent] and a context broadcast to them."""
        context = tf.broadcast_to(context, tf.concat([tf.shape(latents[0])[:-1], tf.shape(context)[-1:]], 0))
        return self.observation_decoder(tf.concat([context, *latents], -1))

    def _prior_latents(self, context, noises):
        """z_L … z_1 ~ p(z | c) (the latent decoder), first layer first, for context [..., C] and noises
        [..., latent] (top layer first)."""
        latents, above = [], []
        for layer, noise in zip(reversed(range(self.config.stochastic_layers)), noises):
            latent = distributions.reparameterize(self.latent_decoders[layer](tf.concat([context, *above], -1)), noise)
            latents.insert(0, latent)
            above = [latent]
        return latents

    # The bound (Eqs. 7–10) and its importance-weighted version.

    def _terms(self, items, context_noise, latent_noises, pooled=None):
        """Per-set terms for items [B, S, *item_shape], context noise [K, B, C] and latent noises (top layer
        first) [K, B, S, latent]; q(c | D) pools the items where `pooled` [B, S] is true (all when None).
        log w_j = log p(c_j) − log q(c_j | D) + Σ_x [log p(x | z, c_j) + log p(z | c_j)
        − log q(z | x, c_j)]; `nll` = −L_k; `elbo` = mean_j of Σ_x [log p(x | z, c_j) − KL_z] − KL_c."""
        encodings = self._encode(items)
        context_posterior = self.context_posterior(encodings, pooled)
        context_prior = distributions.standard_normal(self.config.context_units)
        contexts = distributions.reparameterize(context_posterior, context_noise)  # [K, B, C]
        latents, kl_z, log_q_z, log_p_z = self._latents(contexts[:, :, None], encodings, latent_noises)
        log_likelihood = self._observation(contexts[:, :, None], latents).log_prob(items)  # [K, B, S]
        log_weights = (context_prior.log_prob(contexts) - context_posterior.log_prob(contexts)
                       + tf.reduce_sum(log_likelihood + log_p_z - log_q_z, axis=-1))
        reconstruction = tf.reduce_mean(tf.reduce_sum(log_likelihood, -1), 0)
        kl_z = tf.reduce_mean(tf.reduce_sum(kl_z, -1), 0)
        kl_c = distributions.kl_between_gaussians(context_posterior, context_prior)
        elbo = reconstruction - kl_z - kl_c
        nll = -bounds.iwae_bound(log_weights)
        set_size = tf.cast(tf.shape(items)[1], tf.float32)
        return {"loss": -elbo / set_size, "elbo": elbo, "nll": nll, "reconstruction": reconstruction,
                "kl_z": kl_z, "kl_c": kl_c, "nll_per_item": nll / set_size, "log_weights": log_weights}

    def _noise(self, k, items, seed):
        """(context noise [k, B, C], latent noises [k, B, S, latent] top layer first) from one seed."""
        seeds = tf.random.experimental.stateless_split(seed, 1 + self.config.stochastic_layers)
        batch, set_size = tf.shape(items)[0], tf.shape(items)[1]
        context = tf.random.stateless_normal([k, batch, self.config.context_units], seed=seeds[0])
        latents = [tf.random.stateless_normal([k, batch, set_size, self.config.latent_units], seed=layer_seed)
                   for layer_seed in tf.unstack(seeds[1:])]
        return context, latents

    def bound_terms(self, items, seed, k: int = 1):
        """The per-set terms (see `_terms`) with k samples of (c, z) drawn from an int32 [2] seed."""
        return self._terms(items, *self._noise(k, items, seed))

    def training_terms(self, items, seed):
        """The terms of a training step: `bound_terms` with `config.k` samples, q(c | D) pooling the items
        that sample dropout keeps."""
        noise_seed, dropout_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        pooled = self._sample_dropout(items, dropout_seed) if self.config.sample_dropout else None
        return self._terms(items, *self._noise(self.config.k, items, noise_seed), pooled)

    def train_step(self, data):
        items = data["image"]
        seed = tf.cast(steps.replica_seed(self.seed_generator), tf.int32)
        with tf.GradientTape() as tape:
            terms = self.training_terms(items, seed)
            loss = tf.reduce_sum(terms["loss"]) / steps.global_batch_size(items)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return steps.update_trackers(self.trackers, terms)

    def test_step(self, data):
        seed = tf.cast(steps.replica_seed(self.seed_generator), tf.int32)
        return steps.update_trackers(self.trackers, self.bound_terms(data["image"], seed, self.evaluation_samples))

    def use_importance_samples(self, k: int) -> None:
        """Evaluates (`test_step`) with k samples of (c, z) per set: `nll` is then −L_k(D)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.evaluation_samples = k

    def compile_for_training(self, steps_per_epoch: int):
        del steps_per_epoch  # a constant learning rate
        optimizer = keras.optimizers.Adam(self.config.learning_rate)
        self.compile(optimizer=optimizer, jit_compile=self.config.jit_compile)
        optimizer.build(self.trainable_variables)  # slots now, so train_step is traced once

    # Contexts, sampling and pictures; these back the serving signatures.

    def context(self, items):
        """q(c | D) of sets [N, S, *item_shape] (any S >= 1): (mean, stddev), each [N, context_units]."""
        posterior = self.context_posterior(self._encode(items)).distribution
        return posterior.loc, posterior.scale

    def _draw_items(self, contexts, seeds, set_size):
        """A set of `set_size` items per context [N, C], noise seeded per example, [N, set_size, *item_shape]:
        z ~ p(z | c), then for vectors x ~ p(x | z, c) and for images its mean (the pixel probabilities)."""
        layers = self.config.stochastic_layers
        noises = [per_example_normal(seeds, [set_size, self.config.latent_units], stream=ITEM_STREAM + layer)
                  for layer in range(layers)]
        context = tf.tile(contexts[:, None], [1, set_size, 1])
        observation = self._observation(context, self._prior_latents(context, noises))
        if not self.config.item_size:
            return observation.mean()
        gaussian = observation.distribution
        return gaussian.loc + gaussian.scale * per_example_normal(seeds, [set_size, *self.config.item_shape],
                                                                  stream=ITEM_STREAM + layers)

    def sample_set(self, seeds, set_size: int | None = None):
        """A fresh context c ~ p(c) per seed and a set of items drawn under it, [N, set_size, *item_shape]."""
        contexts = per_example_normal(seeds, [self.config.context_units], stream=CONTEXT_STREAM)
        return self._draw_items(contexts, seeds, set_size or self.config.set_size)

    def sample_from_set(self, items, seeds, set_size: int | None = None):
        """New items of the sets [N, S, *item_shape]: c ~ q(c | D) per seed, then items under it
        ([N, set_size, *item_shape], set_size defaulting to S)."""
        mean, stddev = self.context(items)
        contexts = mean + stddev * per_example_normal(seeds, [self.config.context_units], stream=CONTEXT_STREAM)
        return self._draw_items(contexts, seeds, set_size or tf.shape(items)[1])

    def picture(self, items):
        """Sets [N, S, *item_shape] drawn as images [N, H, W', C] in [0, 1]: image items side by side, 2-D
        points on an image_shape canvas, 1-D samples as a histogram (`pictures`)."""
        if not self.config.item_size:
            return pictures.side_by_side_items(items)
        if self.config.item_size == 2:
            return pictures.point_clouds(items, self.config.image_shape)
        return pictures.histograms(items[..., 0], self.config.image_shape)

    def sample(self, seeds):
        """One set per seed from a fresh context, drawn as an image (`picture`)."""
        return self.picture(self.sample_set(seeds))

    def serving_signatures(self):
        item_spec = tf.TensorSpec([None, None, *self.config.item_shape], tf.float32, name="images")

        def sample_from_set(images, seed):
            items = self.sample_from_set(self._checked_set(images), seed)
            return {"items": items, "images": self.picture(items)}

        def context(images):
            mean, stddev = self.context(self._checked_set(images))
            return {"mean": mean, "stddev": stddev}

        def sample_set(seed):
            items = self.sample_set(seed)
            return {"images": self.picture(items), "items": items}

        declared = signatures.seed_signatures(self.sample)
        declared["serving_default"] = (sample_set, [signatures.SEED])  # the set itself beside its picture
        declared["sample_from_set"] = (sample_from_set, [item_spec, signatures.SEED])
        declared["context"] = (context, [item_spec])
        return declared

    @staticmethod
    def _checked_set(images):
        """A request's sets, refused (INVALID_ARGUMENT) when empty or not finite."""
        message = "images must hold at least one item per set: [N, set_size >= 1, ...]"
        with tf.control_dependencies([tf.debugging.assert_positive(tf.shape(images)[1], message=message)]):
            return signatures.checked_finite(images, "images")

    def summaries(self, images):
        """Up to eight given sets (evaluation classes) each followed by three sets drawn from its context
        posterior, a row per given set; and sets drawn from fresh contexts."""
        given = images[:8]
        count = tf.shape(given)[0]
        drawn = self.sample_from_set(tf.repeat(given, 3, axis=0), tf.range(3 * count, dtype=tf.int64))
        given_pictures = self.picture(given)
        picture_shape = tf.shape(given_pictures)[1:]
        drawn_pictures = tf.reshape(self.picture(drawn), tf.concat([[count, 3], picture_shape], 0))
        rows = tf.concat([given_pictures[:, None], drawn_pictures], axis=1)
        return {"given_sets_then_sets_from_their_context": tf.reshape(rows, tf.concat([[-1], picture_shape], 0)),
                "sets_from_fresh_contexts": self.sample(tf.range(16, dtype=tf.int64))}


def build(config: NeuralStatisticianConfig) -> NeuralStatistician:
    model = NeuralStatistician(config, name="neural_statistician")
    model.build()
    return model


def dataset(config: NeuralStatisticianConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=not config.item_size, set_size=config.set_size,
                                item_shape=(config.item_size,) if config.item_size else ())


TINY = {"hidden_units": 16, "hidden_layers": 1, "context_units": 3, "latent_units": 2, "batch_size": 4}

registry.register(registry.ModelSpec(
    "zoo.neural_statistician", "Neural Statistician (Edwards & Storkey 2017): sets of MNIST digits, few-shot "
    "classification of held-out digits", NeuralStatisticianConfig, build, dataset,
    # Sec. 5.3 (Omniglot): z of 16 and sample dropout (its rate not given; ours 0.5). Ours: c of 64, not 512, for
    # 7 training classes; one hidden layer of 512 per network, not a convolutional stack (docs/neural_statistician.md).
    preset={"latent_units": 16, "context_units": 64, "sample_dropout": 0.5, "hidden_units": 512, "hidden_layers": 1},
    tiny={**TINY, "image_shape": (6, 6, 1), "set_size": 3},
    evaluation=("likelihood", "few_shot", "context_clusters")))
registry.register(registry.ModelSpec(
    "zoo.neural_statistician_omniglot", "Neural Statistician (Edwards & Storkey 2017, Sec. 5.3): sets of Omniglot "
    "characters (TFDS omniglot: background alphabets for training, the others for few-shot tests)",
    NeuralStatisticianConfig, build, dataset,
    # Sec. 5.3: c of 512, z of 16, sets of 5, sample dropout; ours: the image preset's dense layers, no augmentation.
    preset={"dataset": "omniglot", "latent_units": 16, "context_units": 512, "sample_dropout": 0.5,
            "hidden_units": 512, "hidden_layers": 1},
    tiny={**TINY, "image_shape": (6, 6, 1), "set_size": 3},
    evaluation=("likelihood", "few_shot", "context_clusters")))
registry.register(registry.ModelSpec(
    "zoo.neural_statistician_synthetic", "Neural Statistician (Edwards & Storkey 2017, Sec. 5.1): synthetic 1-D "
    "sets of four distribution families", NeuralStatisticianConfig, build, dataset,
    preset={"dataset": "synthetic_1d", "item_size": 1, "set_size": 200, "hidden_units": 128, "context_units": 3,
            "latent_units": 32, "stochastic_layers": 1, "epochs": 50},  # Sec. 5.1
    tiny={**TINY, "set_size": 10}, evaluation=("likelihood", "context_clusters")))
registry.register(registry.ModelSpec(
    "zoo.neural_statistician_spatial", "Neural Statistician (Edwards & Storkey 2017, Sec. 5.2): spatial MNIST, "
    "each digit a set of 50 points", NeuralStatisticianConfig, build, dataset,
    preset={"dataset": "spatial_mnist", "item_size": 2, "set_size": 50, "hidden_units": 256, "context_units": 64,
            "latent_units": 2, "stochastic_layers": 3, "epochs": 300},  # Sec. 5.2
    tiny={**TINY, "set_size": 10, "stochastic_layers": 2}, evaluation=("likelihood", "context_clusters")))
