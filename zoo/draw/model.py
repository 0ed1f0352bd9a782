"""DRAW: the Deep Recurrent Attentive Writer.

Gregor, Danihelka, Graves, Rezende, Wierstra. DRAW: A Recurrent Neural Network For
Image Generation. ICML 2015, arXiv:1502.04623.

An encoder LSTM reads the image and the error of the canvas so far, a diagonal
Gaussian q(z_t | h_enc_t) is sampled, a decoder LSTM turns z_t into an additive write
onto the canvas, T times (Sec. 2, Eq. 3–8); x ~ Bernoulli(σ(c_T)), or for 8-bit colour a
discretized logistic centred on σ(c_T). The loss is −log p(x | c_T) plus
Σ_t KL(q(z_t | ·) ‖ N(0, I)) in closed form (Sec. 2, Eq. 9–12).
Read and write attend through Gaussian filterbanks (Sec. 3.2–3.3, `zoo.draw.attention`)
or, with `attention=False`, see and write the whole image (Sec. 3.1).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import bounds, distributions, logistic_mixture, signatures, steps
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_normal, per_example_normal_rows
from zoo.draw import attention


@dataclasses.dataclass(frozen=True)
class DRAWConfig(config_lib.TrainingConfig):
    # Architecture: Gregor et al. 2015, Table 3, the MNIST model row.
    glimpses: int = 64                  # Table 3: T = 64
    encoder_units: int = 256            # Table 3: LSTM #h = 256
    decoder_units: int = 256            # Table 3: LSTM #h = 256
    latent_units: int = 100             # Table 3: #z = 100
    attention: bool = True              # Sec. 3.2; false: "DRAW without attention" (Sec. 3.1, Table 2)
    read_size: int = 2                  # Table 3: read size 2 × 2
    write_size: int = 5                 # Table 3: write size 5 × 5
    likelihood: str = "bernoulli"       # Sec. 2, Eq. 9: D(x | c_T) Bernoulli for binary images; "discretized_logistic"
                                        # for 8-bit colour (ours: the paper does not name its SVHN/CIFAR likelihood)
    # Data and optimisation.
    dataset: str = "binarized_mnist"    # Sec. 4.1: the fixed binarization of Larochelle & Murray 2011
    batch_size: int = 100               # ours: not given in the paper
    learning_rate: float = 1e-3         # ours: the paper uses Adam without stating a rate; Adam's own default
    gradient_clip_norm: float | None = 10.0  # ours: early writes divide by a small γ̂ (Sec. 3.3) and can jolt
                                             # the gradient; None: no clipping

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (self.glimpses >= 1, f"glimpses must be >= 1, got {self.glimpses}"),
            (min(self.encoder_units, self.decoder_units, self.latent_units) >= 1, "units must be >= 1"),
            (self.read_size >= 1 and self.write_size >= 1, "read_size and write_size must be >= 1"),
            (self.gradient_clip_norm is None or self.gradient_clip_norm > 0, "gradient_clip_norm must be > 0 or none"),
            (self.likelihood in LIKELIHOODS, f"likelihood must be one of {', '.join(LIKELIHOODS)}, "
                                             f"got {self.likelihood!r}; pass e.g. --set likelihood=bernoulli"),
        ])


LIKELIHOODS = ("bernoulli", "discretized_logistic")
PIXEL_LOG_SCALE_INIT = math.log(0.1)  # ours: the colour likelihood's initial scale, a tenth of the [−1, 1] range

# Images × importance samples one log_likelihood request may ask for, and computed at once.
# A DRAW sample costs T steps of two LSTMs: at the paper's size a chunk of 2048 samples took
# 5.0 s on 2 loaded CPU cores (benchmarks/draw_step.py), so the budget is two chunks.
MAX_SERVED_IMPORTANCE_SAMPLES = 1 << 12
SAMPLES_PER_CHUNK = 1 << 11

CANVAS_STRIP_SEEDS = 8  # summaries: rows of canvas sequences, one per seed
CANVAS_STRIP_STEPS = 8  # and columns, steps spread evenly over 1 … T


def _map_context(function, context):
    """`function` applied to each tensor of a context (a nest of [batch, ...] tensors), or None."""
    return None if context is None else tf.nest.map_structure(function, context)


@keras.saving.register_keras_serializable(package="zoo")
class DRAW(ConfigSerialization, keras.Model):
    """DRAW with (or without) attention (Sec. 2–3), for binary or 8-bit images.

    Data contract: batches are dicts with "image", float32 [batch, *image_shape], in {0, 1} for the
    Bernoulli likelihood and in {0, 1/255, …, 1} for the discretized logistic.
    """

    config_class = DRAWConfig

    def __init__(self, config: DRAWConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        shape = config.image_shape
        if config.attention:
            self.reader = attention.AttentiveRead(shape, config.read_size, name="read")
            self.writer = attention.AttentiveWrite(shape, config.write_size, name="write")
        else:
            self.reader = attention.FullRead(shape, name="read")
            self.writer = attention.FullWrite(shape, name="write")
        self.encoder = keras.layers.LSTMCell(config.encoder_units, name="encoder")
        self.decoder = keras.layers.LSTMCell(config.decoder_units, name="decoder")
        self.posterior = distributions.GaussianLayer((config.latent_units,), name="q_z")
        self.prior = distributions.standard_normal(config.latent_units)
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        self.evaluation_samples = 1  # k of test_step; see use_importance_samples
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "elbo", "nll", "bits_per_dim", "reconstruction", "kl")}

    def build(self, input_shape):
        config = self.config
        self.reader.build((None, config.decoder_units))
        self.encoder.build((None, self.reader.output_size + config.decoder_units))
        self.posterior.build((None, config.encoder_units))
        self.decoder.build((None, self._decoder_input_units()))
        self.writer.build((None, config.decoder_units))
        if config.likelihood == "discretized_logistic":
            self.pixel_log_scale = self.add_weight(
                shape=(config.image_shape[-1],), name="pixel_log_scale",
                initializer=keras.initializers.Constant(PIXEL_LOG_SCALE_INIT))
        super().build(input_shape)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # The drawing loop (Sec. 2). A conditional variant (AlignDRAW) passes a `context` of the
    # condition's features, [batch, ...] tensors, and overrides the two hooks that read it.

    @staticmethod
    def _zero_state(batch, units):
        return [tf.zeros([batch, units]), tf.zeros([batch, units])]  # LSTM [h, cell]; ours: zeros, not learned

    def _step_prior(self, t: int, previous_decoder_output, context):
        """p(z_t | z_<t): N(0, I) at every step (Sec. 2.3)."""
        del t, previous_decoder_output, context
        return self.prior

    def _decoder_input_units(self) -> int:
        return self.config.latent_units

    def _decoder_input(self, z, previous_decoder_output, context):
        """(what the decoder LSTM reads at step t, attention weights over the condition or None): z_t (Eq. 7)."""
        del previous_decoder_output, context
        return z, None

    def _draw_from_posterior(self, images, noise, context=None):
        """T steps of Eq. 3–8 with z_t = μ_t + σ_t ε_t, ε_t = noise[:, t].

        Args:
          images: [batch, *image_shape].
          noise: [batch, T, latent_units], standard normal.
          context: the condition's features (`_step_prior`, `_decoder_input`); None for DRAW.
        Returns the canvas c_T [batch, *image_shape] (logits) and, per example, Σ_t of the closed-form
        KL(q(z_t | ·) ‖ p(z_t | z_<t)) (Eq. 11) and of log p(z_t | z_<t) − log q(z_t | ·).
        """
        batch = tf.shape(images)[0]
        canvas = tf.zeros_like(images)
        encoder_state = self._zero_state(batch, self.config.encoder_units)
        decoder_state = self._zero_state(batch, self.config.decoder_units)
        kl, log_prior_ratio = 0.0, 0.0
        for t in range(self.config.glimpses):
            error_images = images - tf.sigmoid(canvas)                                          # Eq. 3
            glimpse = self.reader(images, error_images, decoder_state[0])                        # Eq. 4
            encoded, encoder_state = self.encoder(tf.concat([glimpse, decoder_state[0]], -1), encoder_state)  # Eq. 5
            posterior = self.posterior(encoded)
            prior = self._step_prior(t, decoder_state[0], context)
            z = distributions.reparameterize(posterior, noise[:, t])                             # Eq. 6
            decoder_input, _ = self._decoder_input(z, decoder_state[0], context)
            decoded, decoder_state = self.decoder(decoder_input, decoder_state)                  # Eq. 7
            canvas = canvas + self.writer(decoded)                                               # Eq. 8
            kl += distributions.kl_between_gaussians(posterior, prior)
            log_prior_ratio += prior.log_prob(z) - posterior.log_prob(z)
        return canvas, kl, log_prior_ratio

    def _draw_from_prior(self, noise, context=None):
        """The canvases c_1 … c_T (logits) drawn with z_t = μ_t + σ_t noise[:, t] from p(z_t | z_<t)
        (Sec. 2.3), the attention weights over the condition at each step ([] for DRAW), and the
        decoder's outputs h_dec_1 … h_dec_T (which place the write windows)."""
        batch = tf.shape(noise)[0]
        canvas = tf.zeros([batch, *self.config.image_shape])
        decoder_state = self._zero_state(batch, self.config.decoder_units)
        canvases, weights, outputs = [], [], []
        for t in range(self.config.glimpses):
            z = distributions.reparameterize(self._step_prior(t, decoder_state[0], context), noise[:, t])
            decoder_input, step_weights = self._decoder_input(z, decoder_state[0], context)
            decoded, decoder_state = self.decoder(decoder_input, decoder_state)
            canvas = canvas + self.writer(decoded)
            canvases.append(canvas)
            outputs.append(decoded)
            if step_weights is not None:
                weights.append(step_weights)
        return canvases, weights, outputs

    def _log_likelihood_of(self, canvas, images):
        """log D(x | c_T) (Sec. 2, Eq. 9), summed over pixels: D = Bernoulli(σ(c_T)), or for 8-bit colour
        each channel a logistic centred on σ(c_T), with a learned scale per channel, rounded to the 256
        levels (`logistic_mixture`, one component)."""
        if self.config.likelihood == "bernoulli":
            likelihood = distributions.tfd.Bernoulli(logits=canvas, dtype=tf.float32)
            return distributions.tfd.Independent(likelihood, reinterpreted_batch_ndims=3).log_prob(images)
        locs = 2.0 * tf.sigmoid(canvas) - 1.0  # the logistic works in [−1, 1]
        log_scales = tf.maximum(self.pixel_log_scale, logistic_mixture.LOG_SCALE_FLOOR) + tf.zeros_like(locs)
        pixels = logistic_mixture.DiscretizedLogisticMixture(
            tf.zeros_like(canvas[..., :1]), locs[..., None, :], log_scales[..., None, :])
        return tf.reduce_sum(pixels.log_prob(images), axis=[1, 2])

    # The objective (Sec. 2, Eq. 9–12) and importance sampling over z_1 … z_T.

    def _importance_terms(self, images, noise, context=None):
        """Per [k, batch]: log w = log p(x | z_1..T) + Σ_t [log p(z_t | z_<t) − log q(z_t | ·)],
        the reconstruction log p(x | c_T) and the closed-form KL Σ_t (Eq. 11).

        Args:
          images: [batch, *image_shape].
          noise: [k, batch, T, latent_units], standard normal.
          context: the condition's features, or None.
        """
        k = tf.shape(noise)[0]

        def repeated(values):  # [batch, ...] → [k * batch, ...], sample-major
            return tf.reshape(tf.tile(values[None], tf.concat([[k], tf.ones_like(tf.shape(values))], 0)),
                              tf.concat([[-1], tf.shape(values)[1:]], 0))

        images = repeated(images)
        canvas, kl, log_prior_ratio = self._draw_from_posterior(
            images, tf.reshape(noise, [-1, self.config.glimpses, self.config.latent_units]),
            _map_context(repeated, context))
        reconstruction = self._log_likelihood_of(canvas, images)
        terms = {"log_weights": reconstruction + log_prior_ratio, "reconstruction": reconstruction, "kl": kl}
        return {name: tf.reshape(value, [k, -1]) for name, value in terms.items()}

    def _training_noise(self, batch):
        """ε [1, batch, T, latent_units]: a fresh draw for every step t (Eq. 6), from this step's seed."""
        return tf.random.stateless_normal([1, batch, self.config.glimpses, self.config.latent_units],
                                          seed=steps.replica_seed(self.seed_generator))

    def _context(self, data):
        """The condition's features from a batch: None, DRAW draws unconditionally."""
        del data
        return None

    def _objective(self, data, k: int):
        """Per-example terms: the ELBO −(L^x + L^z) (Eq. 12) of one posterior sample, and −L_k.

        With k > 1, L_k comes from `_log_likelihood`, whose memory is bounded whatever k is.
        """
        images, context = data["image"], self._context(data)
        batch = tf.shape(images)[0]
        terms = self._importance_terms(images, self._training_noise(batch), context)
        reconstruction, kl = terms["reconstruction"][0], terms["kl"][0]
        if k == 1:
            bound = terms["log_weights"][0]
        else:
            seeds = tf.random.stateless_uniform([batch], seed=steps.replica_seed(self.seed_generator),
                                                minval=None, maxval=None, dtype=tf.int64)
            bound = self._log_likelihood(images, context, tf.fill([batch], k), seeds)
        dimensions = math.prod(self.config.image_shape)
        return {"elbo": reconstruction - kl, "nll": -bound, "bits_per_dim": -bound / (dimensions * math.log(2.0)),
                "reconstruction": reconstruction, "kl": kl}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            terms = self._objective(data, 1)
            loss = -tf.reduce_sum(terms["elbo"]) / steps.global_batch_size(data["image"])  # ⟨L^x + L^z⟩ (Eq. 12)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._update_trackers(terms)

    def test_step(self, data):
        return self._update_trackers(self._objective(data, self.evaluation_samples))

    def _update_trackers(self, terms):
        return steps.update_trackers(self.trackers, {**terms, "loss": -terms["elbo"]})

    def use_importance_samples(self, k: int) -> None:
        """Evaluates (`test_step`) with k importance samples over z_1 … z_T: `nll` is then −L_k."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.evaluation_samples = k

    def compile_for_training(self, steps_per_epoch: int):
        """Adam, as in the paper, with the config's rate and gradient clipping."""
        del steps_per_epoch  # a constant rate
        optimizer = keras.optimizers.Adam(self.config.learning_rate, global_clipnorm=self.config.gradient_clip_norm)
        self.compile(optimizer=optimizer, jit_compile=self.config.jit_compile)
        optimizer.build(self.trainable_variables)  # slots now, so train_step is traced once

    # Deterministic paths and samplers; these back the serving signatures.

    def call(self, images):
        """Reconstruction σ(c_T) with every z_t at its posterior mean."""
        return self._reconstruction(images)

    def _reconstruction(self, images, context=None):
        noise = tf.zeros([tf.shape(images)[0], self.config.glimpses, self.config.latent_units])
        return tf.sigmoid(self._draw_from_posterior(images, noise, context)[0])

    def _prior_noise(self, seeds):
        """z_1 … z_T ~ N(0, I), [len(seeds), T, latent_units]: one draw of [T, z] per seed."""
        return per_example_normal(seeds, [self.config.glimpses, self.config.latent_units], stream=0)

    def sample(self, seeds):
        """x ~ p(x), one image per int64 seed; returns σ(c_T): the Bernoulli means, or the logistics' centres."""
        return tf.sigmoid(self._draw_from_prior(self._prior_noise(seeds))[0][-1])

    def canvas_sequence(self, seeds):
        """σ(c_t) after every step t = 1 … T of the sampler, [len(seeds), T, *image_shape]."""
        return tf.sigmoid(tf.stack(self._draw_from_prior(self._prior_noise(seeds))[0], axis=1))

    def log_likelihood(self, images, num_importance_samples, seeds):
        """L_k per image (Burda et al. 2016, Eq. 8), k = num_importance_samples[b], q over z_1 … z_T.

        Sample j of image b is drawn from (seeds[b], j) alone; memory is bounded by
        SAMPLES_PER_CHUNK images × samples (`zoo.common.bounds.iwae_bound_per_example`).
        """
        return self._log_likelihood(images, None, num_importance_samples, seeds)

    def _log_likelihood(self, images, context, num_importance_samples, seeds):
        """`log_likelihood` given the condition's features (None for DRAW)."""
        glimpses, units = self.config.glimpses, self.config.latent_units

        def log_weights(group, group_seeds, first_sample, count):  # group: indices into the batch
            rows = per_example_normal_rows(group_seeds, first_sample, count, glimpses * units, stream=0)
            noise = tf.reshape(tf.transpose(rows, [1, 0, 2]), [count, -1, glimpses, units])
            group_context = _map_context(lambda values: tf.gather(values, group), context)
            return self._importance_terms(tf.gather(images, group), noise, group_context)["log_weights"]

        examples = tf.range(tf.shape(images)[0])
        return bounds.iwae_bound_per_example(log_weights, examples, num_importance_samples, seeds, SAMPLES_PER_CHUNK)

    def serving_signatures(self):
        """Samplers and canvas sequences from seeds; reconstructions and L_k of images, which refuse NaN and Inf."""
        images = tf.TensorSpec([None, *self.config.image_shape], tf.float32, name="images")
        return {
            **signatures.seed_signatures(self.sample),
            "canvas_sequence": (lambda seed: {"images": self.canvas_sequence(seed)}, [signatures.SEED]),
            "reconstruct": (lambda images: {"images": self(signatures.checked_finite(images, "images"))}, [images]),
            "log_likelihood": signatures.log_likelihood_signature(
                self.log_likelihood, self.config.image_shape, MAX_SERVED_IMPORTANCE_SAMPLES),
        }

    def _canvas_strips(self, noise, context=None):
        """TensorBoard strips of the sampler: a row per example, CANVAS_STRIP_STEPS steps spread over 1 … T,
        as "canvas_sequences" and, with attention, as "write_windows", each step's write window outlined."""
        canvases, _, outputs = self._draw_from_prior(noise, context)
        shown = np.linspace(0, self.config.glimpses - 1, CANVAS_STRIP_STEPS).round().astype(int)
        steps_shown = tf.sigmoid(tf.stack([canvases[t] for t in shown], axis=1))  # [N, steps, H, W, C]
        strips = {"canvas_sequences": steps_shown}
        if self.config.attention:
            boxes = tf.stack([self.writer.window.box(outputs[t]) for t in shown], axis=1)
            flat = attention.draw_boxes(tf.reshape(steps_shown, [-1, *self.config.image_shape]),
                                        tf.reshape(boxes, [-1, 4]))
            strips["write_windows"] = flat
        return {name: tf.reshape(value, [-1, *self.config.image_shape]) for name, value in strips.items()}

    def summaries(self, images):
        """TensorBoard grids: 64 prior samples, inputs beside their reconstructions, and the canvas strips
        of seeds 0 … CANVAS_STRIP_SEEDS − 1 (`_canvas_strips`)."""
        return {
            "prior_samples": self.sample(tf.range(64, dtype=tf.int64)),
            "reconstructions": signatures.side_by_side(images, self(images)),
            **self._canvas_strips(self._prior_noise(tf.range(CANVAS_STRIP_SEEDS, dtype=tf.int64))),
        }


def build(config: DRAWConfig) -> DRAW:
    model = DRAW(config, name="draw" if config.attention else "draw_without_attention")
    model.build((None, *config.image_shape))
    return model


def dataset(config: DRAWConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=config.likelihood == "bernoulli")


TINY = {"glimpses": 3, "encoder_units": 8, "decoder_units": 8, "latent_units": 4, "read_size": 2, "write_size": 3,
        "image_shape": (6, 6, 1), "batch_size": 8}

registry.register(registry.ModelSpec(
    "zoo.draw", "DRAW (Gregor et al. 2015) with read and write attention", DRAWConfig, build, dataset,
    tiny=TINY, evaluation=("likelihood",)))
registry.register(registry.ModelSpec(
    "zoo.draw_two_digit_mnist", "DRAW (Gregor et al. 2015, Sec. 4.2) drawing two MNIST digits on a 60×60 canvas",
    DRAWConfig, build, dataset,
    # Sec. 4.2: two digits at random places on a 60×60 canvas. The network is the MNIST model row of
    # Table 3 (the config defaults: T = 64, 256 LSTM units, #z = 100, read 2×2, write 5×5), from memory:
    # Table 3 as recalled has no row of its own for the two-digit task; not re-checked against the PDF.
    preset={"dataset": "two_digit_mnist", "image_shape": (60, 60, 1)},
    tiny=TINY, evaluation=("likelihood",)))



def _register_colour_model(name, description, colour_dataset, glimpses, units, latent_units, window):
    """A colour model of Sec. 4.3 (SVHN) or 4.4 (CIFAR-10): its row of Table 3 on 8-bit 32×32×3 images. The
    paper shows samples only; the likelihood (a discretized logistic, reported as bits/dim) is ours."""
    registry.register(registry.ModelSpec(
        name, description, DRAWConfig, build, dataset,
        preset={"dataset": colour_dataset, "image_shape": (32, 32, 3), "likelihood": "discretized_logistic",
                "glimpses": glimpses, "encoder_units": units, "decoder_units": units, "latent_units": latent_units,
                "read_size": window, "write_size": window},
        tiny={**TINY, "image_shape": (6, 6, 3)}, evaluation=("likelihood",)))


# Table 3's SVHN and CIFAR rows, from memory, not re-checked against the PDF.
_register_colour_model("zoo.draw_svhn", "DRAW (Gregor et al. 2015, Sec. 4.3) drawing 32×32 colour house numbers (SVHN)",
                       "svhn_cropped", glimpses=32, units=800, latent_units=100, window=12)
_register_colour_model("zoo.draw_cifar10", "DRAW (Gregor et al. 2015, Sec. 4.4) drawing 32×32 CIFAR-10 images",
                       "cifar10", glimpses=64, units=400, latent_units=200, window=5)
