"""What every autoregressive image model of the zoo shares: the exact likelihood, its
training steps, the raster-order sampler and the serving signatures.

An image is a sequence of pixels in raster order (rows top to bottom, left to
right), and the model is the chain rule over it (van den Oord et al. 2016a, Eq. 1):

    log p(x | y) = Σ_i log p(x_i | x_1, …, x_{i−1}, y),

each conditional computed by a network that never lets pixel i see pixels ≥ i.
Training maximises it exactly (no bound) and sampling draws the pixels one at a
time, each from its conditional given those drawn before it.

A family subclasses `AutoregressiveImageModel` and provides:

* `call(images, labels=None)`: the parameters of every pixel's conditional,
  [batch, H, W, …], in one pass (teacher forcing);
* `log_likelihood(images, labels=None, training=False)`: log p(x | y) per image,
  in nats, from a `tfd` distribution built on those parameters (`training` turns
  on what only training uses, e.g. dropout);
* `pixel_noise_size`: how many U(0, 1) draws one pixel's sampler uses, and
  `draw(parameters, uniforms)`: the values in [0, 1] of one pixel, [batch, C],
  from that pixel's parameters [batch, …] and its uniforms [batch, pixel_noise_size];
* optionally `samplers()`, adding faster `Sampler`s beside "naive" (one full
  forward pass per pixel), e.g. "cached", the activation caches of Ramachandran
  et al. 2017.

Its config needs `image_shape`, `conditional`, `num_classes`, `learning_rate` and
`jit_compile`; the family's class sets `config_class`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from zoo import config as config_lib
from zoo.common import signatures
from zoo.common.stateless import per_example_uniform

LABEL_STREAM, PIXEL_STREAM = -1, 0  # the stateless streams of a seed's label and of its pixels' uniforms
TINY = float(np.finfo(np.float32).tiny)  # smallest uniform draw: keeps log u and logit u finite


@dataclasses.dataclass(frozen=True)
class Sampler:
    """The raster-order loop of one sampler: its state, and what it does per row and per pixel.

    Attributes:
      initial_state: (batch, labels) → the loop's state (any nest of tensors).
      step: (row, column, state, uniforms [batch, pixel_noise_size], labels) → state with
        pixel (row, column) drawn.
      start_row: (row, state, labels) → state, before a row's first pixel.
      images: state → the images drawn, [batch, H, W, C] in [0, 1].
    """

    initial_state: Callable
    step: Callable
    start_row: Callable = lambda row, state, labels: state
    images: Callable = lambda state: state


class AutoregressiveImageModel(keras.Model):
    """p(x | y) = Π_i p(x_i | x_<i, y) over the pixels in raster order (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape] in
    [0, 1], and "label", int64 [batch], when `config.conditional`.
    """

    config_class: type = None  # the family's config dataclass, for from_config

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "nll", "bits_per_dim")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def dimensions(self) -> int:
        """H·W·C, the denominator of bits per dimension."""
        return math.prod(self.config.image_shape)

    def one_hot_labels(self, labels):
        """The labels of a conditional model, one-hot [batch, classes]; None otherwise."""
        if not self.config.conditional:
            return None
        if labels is None:
            raise ValueError(f"a conditional {type(self).__name__} needs labels")
        return tf.one_hot(labels, self.config.num_classes)

    # The objective: maximum likelihood, shared by train_step and test_step.

    def _objective(self, data, training=False):
        """Per-example −log p(x | y) in nats and in bits per dimension."""
        nll = -self.log_likelihood(data["image"], data.get("label"), training=training)
        return {"loss": nll, "nll": nll, "bits_per_dim": nll / (self.dimensions * math.log(2.0))}

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        global_batch = tf.cast(tf.shape(data["image"])[0], tf.float32) * replicas
        with tf.GradientTape() as tape:
            terms = self._objective(data, training=True)
            loss = tf.reduce_sum(terms["nll"]) / global_batch
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._update_trackers(terms)

    def test_step(self, data):
        return self._update_trackers(self._objective(data))

    def _update_trackers(self, terms):
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def compile_for_training(self, steps_per_epoch: int):
        """Adam at a constant learning rate."""
        del steps_per_epoch  # no schedule
        self.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), jit_compile=self.config.jit_compile)
        self.optimizer.build(self.trainable_variables)  # slots now, so train_step is traced once

    # Sampling, pixel by pixel in raster order; this backs the serving signatures.

    def samplers(self) -> dict:
        """name → a function returning the `Sampler` of that name; every sampler of a model
        draws the same images from the same seeds."""
        return {"naive": self._naive_sampler}

    @property
    def default_sampler(self) -> str:
        """The fastest sampler: the one serving uses."""
        return "cached" if "cached" in self.samplers() else "naive"

    def sample(self, seeds, labels=None, sampler: str | None = None, jit_compile: bool = False):
        """x ~ p(x | y), one image in [0, 1] per int64 seed; y drawn from the seed unless given.

        Every uniform a sample uses, H·W·pixel_noise_size of them and its label's, is
        drawn up front from its own seed alone (a stateless stream per seed), so a
        sample depends only on its seed (and label), whatever else is in the batch.

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
        """Every pixel's uniforms, [batch, H, W, pixel_noise_size], each example's from its seed (in a
        graph: eagerly, the per-seed map would run op by op)."""
        height, width, _ = self.config.image_shape
        return per_example_uniform(seeds, [height, width, self.pixel_noise_size], PIXEL_STREAM, TINY, 1.0)

    def _raster_loop(self, uniforms, labels, sampler):
        """Rows top to bottom, then pixels left to right, as two nested `tf.while_loop`s;
        uniforms [batch, H, W, pixel_noise_size]."""
        height, width, _ = self.config.image_shape
        batch = tf.shape(uniforms)[0]
        uniforms = tf.transpose(uniforms, [1, 2, 0, 3])  # [H, W, batch, noise]: one gather per pixel
        loop = self.samplers()[sampler]()

        def next_row(row, state):
            row_uniforms = tf.gather(uniforms, row)

            def next_pixel(column, state):
                return column + 1, loop.step(row, column, state, tf.gather(row_uniforms, column), labels)

            _, state = tf.while_loop(lambda column, _: column < width, next_pixel,
                                     (tf.constant(0), loop.start_row(row, state, labels)))
            return row + 1, state

        _, state = tf.while_loop(lambda row, _: row < height, next_row,
                                 (tf.constant(0), loop.initial_state(batch, labels)))
        return loop.images(state)

    _sample_loop = tf.function(_raster_loop, reduce_retracing=True)
    _compiled_sample_loop = tf.function(_raster_loop, reduce_retracing=True, jit_compile=True)

    def _naive_sampler(self) -> Sampler:
        """One full forward pass per pixel, of which that pixel's parameters are used."""
        height, width, _ = self.config.image_shape

        def step(row, column, images, uniforms, labels):
            parameters = self(images, labels)[:, row, column]
            at_pixel = tf.reshape(tf.one_hot(row * width + column, height * width), [1, height, width, 1])
            return images + at_pixel * self.draw(parameters, uniforms)[:, None, None, :]

        return Sampler(initial_state=lambda batch, labels: tf.zeros([batch, *self.config.image_shape]), step=step)

    # Serving and TensorBoard.

    def serving_signatures(self):
        seed, label = signatures.SEED, tf.TensorSpec([None], tf.int64, name="label")
        images = tf.TensorSpec([None, *self.config.image_shape], tf.float32, name="images")
        declared = {
            "serving_default": (lambda seed: {"images": self.sample(seed)}, [seed]),
            "sample_png": (lambda seed: {"images_bytes": signatures.png_bytes(self.sample(seed))}, [seed]),
        }
        if self.config.conditional:
            classes = self.config.num_classes
            declared["sample_conditional"] = (
                lambda seed, label: {"images": self.sample(seed, signatures.checked_labels(label, classes))},
                [seed, label])
            declared["log_likelihood"] = (
                lambda images, label: {
                    "log_likelihood": self.log_likelihood(images, signatures.checked_labels(label, classes))},
                [images, label])
        else:
            declared["log_likelihood"] = (lambda images: {"log_likelihood": self.log_likelihood(images)}, [images])
        return declared

    @property
    def _default_save_signature(self):
        """None: SavedModels serve `serving_signatures()`. Keras's fallback, `self(images)`, is traced
        whenever the model is saved and would call a conditional model without its labels."""
        return None

    def summary_images(self, images):
        """TensorBoard grids from fixed seeds: 16 samples, and a row of 8 per class when conditional.

        16 rather than the zoo's usual 64: sampling runs H·W sequential steps per grid,
        compiled by XLA (`sample`'s jit_compile).
        """
        del images  # samples need no data
        grids = {"samples": self.sample(tf.range(16, dtype=tf.int64), jit_compile=True)}
        if self.config.conditional:
            classes = self.config.num_classes
            grids["per_class"] = self.sample(tf.tile(tf.range(8, dtype=tf.int64), [classes]),
                                             tf.repeat(tf.range(classes, dtype=tf.int64), 8), jit_compile=True)
        return grids

    def get_config(self):
        return {**super().get_config(), "config": config_lib.to_dict(self.config)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config_lib.from_dict(cls.config_class, config.pop("config")), **config)
