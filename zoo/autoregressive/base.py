"""What every autoregressive image model of the zoo shares: the exact likelihood as the
objective, the raster-order sampling loop and the serving signatures.

An image is a sequence of pixels in raster order (rows top to bottom, left to right),
and the model is the chain rule over it (van den Oord et al. 2016a, arXiv:1601.06759, Eq. 1):

    log p(x | y) = Σ_i log p(x_i | x_1, …, x_{i−1}, y),

each conditional computed by a network that never lets pixel i see pixels ≥ i.
Training maximises it exactly (no bound) and sampling draws the pixels one at a
time, each from its conditional given those drawn before it.

A model of the family is two parts:

* its network, `call(images, labels=None)`: the parameters of every pixel's
  conditional, [batch, H, W, …], in one pass (teacher forcing);
* its pixel likelihood, the attribute `likelihood`: `log_prob(parameters, images)` → log p(x | y)
  per image in nats, `noise_size`, the U(0, 1) draws one pixel takes, and
  `draw(parameters at one pixel, uniforms)` → that pixel's values in [0, 1], [batch, C],
  by inversion (`pixel_likelihood.PixelLogitsLikelihood`, or PixelCNN++'s
  `logistic_mixture.DiscretizedLogisticMixtureLayer`).

Sampling is `raster_sample`, a plain function over a sampler object with four
methods (`initial_state`, `start_row`, `step`, `images`): `NaiveSampler` here, the
cached samplers of PixelCNN in `cached_sampling`. A model lists its samplers in
`samplers()`; every sampler of a model draws the same images from the same seeds.

`AutoregressiveImageModel` stays a (thin) base class: the three models of the family
(PixelCNN, PixelCNN++, PixelRNN) train, sample and serve identically, and the
alternative, the same seven methods (`train_step`, `test_step`, `metrics`, `sample`,
`serving_signatures`, `summaries`, `compile_for_training`) forwarding to functions
in each model, would be three copies of one family's code. It asks nothing of a subclass
beyond Keras's `call` and the `likelihood` attribute; PixelCNN adds its cached sampler to
`samplers()`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from zoo.common import signatures, steps
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_uniform

LABEL_STREAM, PIXEL_STREAM = -1, 0  # the stateless streams of a seed's label and of its pixels' uniforms
TINY = float(np.finfo(np.float32).tiny)  # smallest uniform draw: keeps log u and logit u finite


def raster_sample(sampler, uniforms, labels):
    """Images drawn pixel by pixel in raster order: rows top to bottom, then the pixels of a row
    left to right, as two nested `tf.while_loop`s (so exported SavedModels hold the loop).

    Args:
      sampler: `initial_state(batch, labels)` → the loop's state (any nest of tensors);
        `start_row(row, state, labels)` → state, before a row's first pixel;
        `step(row, column, state, uniforms [batch, noise_size], labels)` → state with that
        pixel drawn; `images(state)` → the images, [batch, H, W, C] in [0, 1].
      uniforms: every pixel's U(0, 1) draws, [batch, H, W, noise_size].
      labels: int64 [batch], or None for an unconditional model.
    """
    _, height, width, _ = uniforms.shape
    uniforms = tf.transpose(uniforms, [1, 2, 0, 3])  # [H, W, batch, noise]: one gather per pixel

    def next_row(row, state):
        row_uniforms = tf.gather(uniforms, row)

        def next_pixel(column, state):
            return column + 1, sampler.step(row, column, state, tf.gather(row_uniforms, column), labels)

        _, state = tf.while_loop(lambda column, _: column < width, next_pixel,
                                 (tf.constant(0), sampler.start_row(row, state, labels)))
        return row + 1, state

    _, state = tf.while_loop(lambda row, _: row < height, next_row,
                             (tf.constant(0), sampler.initial_state(tf.shape(uniforms)[2], labels)))
    return sampler.images(state)


class NaiveSampler:
    """One full forward pass of the model per pixel, of which only that pixel's parameters are
    used: the reference the faster samplers match. Its state is the image drawn so far."""

    def __init__(self, model):
        self.model = model
        self.image_shape = model.config.image_shape

    def initial_state(self, batch, labels):
        return tf.zeros([batch, *self.image_shape])

    def start_row(self, row, images, labels):
        return images

    def step(self, row, column, images, uniforms, labels):
        height, width, _ = self.image_shape
        parameters = self.model(images, labels)[:, row, column]
        at_pixel = tf.reshape(tf.one_hot(row * width + column, height * width), [1, height, width, 1])
        return images + at_pixel * self.model.likelihood.draw(parameters, uniforms)[:, None, None, :]

    def images(self, images):
        return images


def build_in_order(layers, image_shape) -> None:
    """Builds `layers`, each on the output shape of the one before, the first on images of `image_shape`."""
    shape = (None, *image_shape)
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)


class AutoregressiveImageModel(ConfigSerialization, keras.Model):
    """p(x | y) = Π_i p(x_i | x_<i, y) over the pixels in raster order (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape] in
    [0, 1], and "label", int64 [batch], when `config.conditional`. The config also
    needs `num_classes` and the fields of `zoo.config.TrainingConfig`.
    """

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "nll", "bits_per_dim")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def one_hot_labels(self, labels):
        """The labels of a conditional model, one-hot [batch, classes]; None otherwise."""
        if not self.config.conditional:
            return None
        if labels is None:
            raise ValueError(f"a conditional {type(self).__name__} needs labels")
        return tf.one_hot(labels, self.config.num_classes)

    def log_likelihood(self, images, labels=None, training=False):
        """log p(x | y) = Σ_i log p(x_i | x_<i, y) per image, exact, in nats: [batch] (2016a Eq. 1).

        `training` turns on what only training uses (PixelCNN++'s dropout)."""
        return self.likelihood.log_prob(self(images, labels, training=training), images)

    # The objective: maximum likelihood, shared by train_step and test_step.

    def _objective(self, data, training=False):
        """Per-example −log p(x | y) in nats and in bits per dimension."""
        nll = -self.log_likelihood(data["image"], data.get("label"), training=training)
        dimensions = math.prod(self.config.image_shape)
        return {"loss": nll, "nll": nll, "bits_per_dim": nll / (dimensions * math.log(2.0))}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            terms = self._objective(data, training=True)
            loss = tf.reduce_sum(terms["nll"]) / steps.global_batch_size(data["image"])
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return steps.update_trackers(self.trackers, terms)

    def test_step(self, data):
        return steps.update_trackers(self.trackers, self._objective(data))

    def compile_for_training(self, steps_per_epoch: int):
        """Adam at a constant learning rate."""
        del steps_per_epoch  # no schedule
        self.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), jit_compile=self.config.jit_compile)
        self.optimizer.build(self.trainable_variables)  # slots now, so train_step is traced once

    # Sampling, pixel by pixel in raster order; this backs the serving signatures.

    def samplers(self) -> dict:
        """name → sampler class, built on the model inside the sampling graph."""
        return {"naive": NaiveSampler}

    @property
    def default_sampler(self) -> str:
        """The fastest sampler: the one serving uses."""
        return "cached" if "cached" in self.samplers() else "naive"

    def sample(self, seeds, labels=None, sampler: str | None = None, jit_compile: bool = False):
        """x ~ p(x | y), one image in [0, 1] per int64 seed; y drawn from the seed unless given.

        Every uniform a sample uses, H·W·noise_size of them and its label's, is drawn
        up front from its own seed alone (a stateless stream per seed), so a sample
        depends only on its seed (and label), whatever else is in the batch.

        `jit_compile=True` runs the raster loop compiled by XLA: at batch 1 on CPU 10–30×
        faster than the graph executor, whose fixed cost per small op dominates a cached
        step (docs/results.md). The uniforms are still drawn outside XLA (XLA's
        stateless generators give other numbers for the same seed), so both modes draw
        the same images up to float rounding of the pixel probabilities. The serving
        signatures run uncompiled: `tensorflow_model_server` compiles XLA on CPU only
        behind a flag.
        """
        sampler = sampler or self.default_sampler
        if sampler not in self.samplers():
            raise ValueError(f"unknown sampler {sampler!r}; {self.name} has {sorted(self.samplers())}")
        seeds = tf.cast(seeds, tf.int64)
        if self.config.conditional and labels is None:
            labels = per_example_uniform(seeds, [], LABEL_STREAM, 0, self.config.num_classes, tf.int64)
        loop = self._compiled_sample_loop if jit_compile else self._sample_loop
        return loop(self._pixel_uniforms(seeds), labels, sampler)

    @tf.function(reduce_retracing=True)
    def _pixel_uniforms(self, seeds):
        """Every pixel's uniforms, [batch, H, W, noise_size], each example's from its seed (in a
        graph: eagerly, the per-seed map would run op by op)."""
        height, width, _ = self.config.image_shape
        return per_example_uniform(seeds, [height, width, self.likelihood.noise_size], PIXEL_STREAM, TINY, 1.0)

    def _raster_loop(self, uniforms, labels, sampler: str):
        # The sampler is built here, in the graph, so that it reads the weights as they are when called.
        return raster_sample(self.samplers()[sampler](self), uniforms, labels)

    _sample_loop = tf.function(_raster_loop, reduce_retracing=True)
    _compiled_sample_loop = tf.function(_raster_loop, reduce_retracing=True, jit_compile=True)

    # Serving and TensorBoard.

    def serving_signatures(self):
        label = tf.TensorSpec([None], tf.int64, name="label")
        images = tf.TensorSpec([None, *self.config.image_shape], tf.float32, name="images")
        declared = signatures.seed_signatures(self.sample)
        if self.config.conditional:
            classes = self.config.num_classes
            declared["sample_conditional"] = (
                lambda seed, label: {"images": self.sample(seed, signatures.checked_labels(label, classes))},
                [signatures.SEED, label])
            declared["log_likelihood"] = (
                lambda images, label: {"log_likelihood": self.log_likelihood(
                    signatures.checked_finite(images, "images"), signatures.checked_labels(label, classes))},
                [images, label])
        else:
            declared["log_likelihood"] = (
                lambda images: {"log_likelihood": self.log_likelihood(signatures.checked_finite(images, "images"))},
                [images])
        return declared

    @property
    def _default_save_signature(self):
        """None: SavedModels serve `serving_signatures()`. Keras's fallback, `self(images)`, is traced
        whenever the model is saved and would call a conditional model without its labels."""
        return None

    def summaries(self, images):
        """TensorBoard grids from fixed seeds: 16 samples, and a row of 8 per class when conditional.

        16 rather than the zoo's usual 64: sampling runs H·W sequential steps per grid,
        compiled by XLA (`sample`'s jit_compile).
        """
        del images  # samples need no data
        grids = {"samples": self.sample(tf.range(16, dtype=tf.int64), jit_compile=True)}
        if self.config.conditional:
            grids["per_class"] = self.sample(*signatures.class_rows(self.config.num_classes), jit_compile=True)
        return grids
