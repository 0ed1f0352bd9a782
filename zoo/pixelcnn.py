"""Autoregressive image models: PixelCNN and Gated PixelCNN.

van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks. ICML
  2016, arXiv:1601.06759 ("2016a").
van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu. Conditional
  Image Generation with PixelCNN Decoders. NeurIPS 2016, arXiv:1606.05328 ("2016b").

Both factor the image into pixels in raster order (2016a Eq. 1; 2016b Eq. 3 given y):

    p(x | y) = Π_i p(x_i | x_1, …, x_{i−1}, y),

each conditional a Bernoulli (binarized data) or a 256-way softmax over the 8-bit
levels round(255 x) (2016a Sec. 2.2), and the likelihood is exact. One family,
two registry entries:

* `zoo.pixelcnn`: a 7×7 mask-A convolution, then residual blocks 2h → h → h → 2h
  with a 3×3 mask-B convolution inside (2016a Sec. 3.5, Fig. 5, Table 2). Its
  receptive field has a blind spot above and to the right of each pixel.
* `zoo.gated_pixelcnn`: gated layers with a vertical stack (the rows above) and a
  horizontal stack (the row so far), which together see every earlier pixel
  (2016b Sec. 2.2, Fig. 2), with the gate

      y = tanh(W_f ∗ x + V_f h) ⊙ σ(W_g ∗ x + V_g h)    (2016b Eq. 4; Eq. 2 without h),

  h the one-hot class label when `conditional` (Sec. 2.3).

Both output heads are ReLU, 1×1 convolution, ReLU, 1×1 convolution (2016a Table 2).
Channels of a pixel are conditionally independent given the earlier pixels (whole-pixel
conditioning, as in PixelCNN++ Sec. 2.2), not R → G → B as in 2016a Sec. 3.4; the
zoo's data are grey, where the two coincide.

Sampling is the naive loop: one full forward pass per pixel, inside a
`tf.while_loop` so exported SavedModels hold it. `_initial_sampling_state` and
`_sampling_step` are the loop's state and body, which a cached sampler
(Ramachandran et al. 2017, arXiv:1704.06001) replaces.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from zoo import config as config_lib, distributions, registry, signatures
from zoo.masked_conv import MaskedConv2D
from zoo.stateless import per_example_uniform

tfd = tfp.distributions

LABEL_STREAM = -1  # stateless stream of a seed's label; pixel i's noise uses stream i >= 0
_TINY = float(np.finfo(np.float32).tiny)  # smallest uniform draw: keeps the Gumbel noise finite


@dataclasses.dataclass(frozen=True)
class PixelCNNConfig:
    # Network.
    architecture: str = "pixelcnn"          # "pixelcnn" (2016a Sec. 3.5) or "gated" (2016b Sec. 2.2, Fig. 2)
    filters: int = 16                       # h: blocks map 2h → h → h → 2h (2016a Fig. 5); gated stacks carry h
                                            # maps. 2016a Table 4: h = 16 in its best MNIST model (a Diagonal BiLSTM)
    layers: int = 7                         # blocks after the mask-A layer: 7 as in that MNIST model; deviation for
                                            # gated: 2016b Sec. 3.1 uses 20 (CIFAR-10); 7 keeps CPU epochs short
    first_kernel_size: int = 7              # 2016a Table 2: 7×7 conv, mask A
    kernel_size: int = 3                    # n: 2016a Table 2: 3×3 mask B; gated n×n and 1×n (deviation: 2016b
                                            # Sec. 3.1 uses n = 5)
    output_filters: int = 32                # the head's hidden 1×1 conv; 2016a Table 2 gives no width (ours)
    likelihood: str = "bernoulli"           # "bernoulli" (sigmoid, 2016a Table 2, binarized MNIST) or
                                            # "categorical" (256-way softmax, 2016a Sec. 2.2)
    image_shape: tuple[int, ...] = (28, 28, 1)
    conditional: bool = False               # 2016b Sec. 2.3: one-hot label h into every gate (Eq. 4); gated only
    num_classes: int = 10
    # Data and optimisation.
    dataset: str = "binarized_mnist"        # 2016a Table 4: binarized MNIST, PixelCNN 81.30 nats
    batch_size: int = 64                    # ours (not from the papers)
    epochs: int = 20                        # deviation: a budget; the papers train to convergence
    learning_rate: float = 1e-3             # ours: Adam with Kingma & Ba's defaults (not from the papers)
    seed: int = 0                           # seeds the initial weights (training itself draws no noise)
    jit_compile: bool = False               # explicit: Keras "auto" differs on CPU, GPU and Mirrored

    def __post_init__(self):
        checks = [
            (self.architecture in ("pixelcnn", "gated"), "architecture must be 'pixelcnn' or 'gated'"),
            (self.likelihood in ("bernoulli", "categorical"), "likelihood must be 'bernoulli' or 'categorical'"),
            (self.filters >= 1 and self.output_filters >= 1 and self.layers >= 0,
             "filters and output_filters must be >= 1, layers >= 0"),
            (self.first_kernel_size >= 3 and self.first_kernel_size % 2 == 1
             and self.kernel_size >= 3 and self.kernel_size % 2 == 1,
             "first_kernel_size and kernel_size must be odd and >= 3"),
            (len(self.image_shape) == 3 and min(self.image_shape) >= 1,
             "image_shape must be (height, width, channels)"),
            (not self.conditional or self.architecture == "gated",
             "conditional=true conditions the gates (2016b Eq. 4): set architecture=gated"),
            (not self.conditional or self.num_classes >= 2, "num_classes must be >= 2"),
            (not (self.likelihood == "categorical" and self.dataset == "binarized_mnist"),
             "likelihood=categorical models 256 grey levels and binarized_mnist has 2: set dataset=mnist or "
             "fashion_mnist"),
            (self.batch_size >= 1 and self.epochs >= 1, "batch_size and epochs must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise config_lib.ConfigError(f"PixelCNNConfig: {message}")


def _gate(preactivation):
    """tanh(a) ⊙ σ(b) for preactivation = [a | b] (2016b Eq. 2)."""
    values, gates = tf.split(preactivation, 2, axis=-1)
    return tf.tanh(values) * tf.sigmoid(gates)


def _drop_last(features, axis: int):
    """features without its last row (axis 1) or column (axis 2).

    tf.slice rather than indexing: on CPU the gradient of a strided slice costs
    about as much as the convolution next to it.
    """
    size = [-1, -1, -1, -1]
    size[axis] = features.shape[axis] - 1  # height and width are static: the config's image_shape
    return tf.slice(features, [0, 0, 0, 0], size)


def _shift_down(features):
    """Row i gets row i − 1 (row 0 zeros): the vertical stack at row i then sees only rows < i."""
    return tf.pad(_drop_last(features, axis=1), [[0, 0], [1, 0], [0, 0], [0, 0]])


class _ResidualBlock(keras.layers.Layer):
    """x + conv_1×1(ReLU(conv_n×n,B(ReLU(conv_1×1(ReLU(x)))))): 2h → h → h → 2h (2016a Fig. 5)."""

    def __init__(self, filters: int, kernel_size: int, kernel_initializer, **kwargs):
        super().__init__(**kwargs)
        self.convolutions = [
            MaskedConv2D(width, size, "B", kernel_initializer=kernel_initializer, use_bias=use_bias)
            # No bias before the residual sum: grappler's remapper fails (and logs an error) fusing
            # conv + bias + add + ReLU when the sum also feeds the next block's sum.
            for width, size, use_bias in ((filters, 1, True), (filters, kernel_size, True), (2 * filters, 1, False))
        ]

    def build(self, input_shape):
        for convolution in self.convolutions:
            convolution.build(input_shape)
            input_shape = convolution.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs):
        features = inputs
        for convolution in self.convolutions:
            features = convolution(tf.nn.relu(features))
        return inputs + features


class _GatedLayer(keras.layers.Layer):
    """One layer of 2016b Fig. 2: (vertical, horizontal) → (vertical, horizontal), h maps each.

    With r = n // 2, the vertical stack's n×n convolution keeps its top r + 1 rows, so
    v[i, j] sees rows i − r … i of the layer below, columns j − r … j + r; it reaches
    the horizontal stack through a 1×1 convolution after a shift down one row, so
    h[i, j] never sees row i through it. The horizontal 1×n convolution keeps its left
    half, columns j − r … j, and in the first layer (mask A) j − r … j − 1 only. Each
    stack is gated (Eq. 4, the label's one-hot entering through V_f, V_g), and the
    horizontal stack adds a 1×1 convolution of its gate to its input (a residual,
    except in the first layer, whose input is the image at the pixel itself).
    """

    def __init__(self, filters: int, kernel_size: int, first: bool, num_classes: int, kernel_initializer, **kwargs):
        """num_classes: the one-hot labels' width, 0 for an unconditional layer."""
        super().__init__(**kwargs)
        self.filters = filters
        self.radius = kernel_size // 2
        self.first = first
        self.num_classes = num_classes
        conv = dict(kernel_initializer=kernel_initializer)
        self.vertical = keras.layers.Conv2D(2 * filters, (self.radius + 1, kernel_size), **conv)
        self.horizontal = keras.layers.Conv2D(2 * filters, (1, self.radius + 1 - first), **conv)
        self.vertical_to_horizontal = keras.layers.Conv2D(2 * filters, 1, **conv)
        self.horizontal_output = keras.layers.Conv2D(filters, 1, **conv)
        self.label_projections = [  # V_f, V_g of Eq. 4, one pair per stack
            keras.layers.Dense(2 * filters, use_bias=False, kernel_initializer=kernel_initializer)
            for _ in range(2)
        ] if num_classes else []

    def build(self, input_shape):
        """Both stacks enter with `input_shape`."""
        r, (height, width, channels) = self.radius, input_shape[1:]
        self.vertical.build((None, height + r, width + 2 * r, channels))
        self.horizontal.build((None, height, width + r - self.first, channels))
        self.vertical_to_horizontal.build((None, height, width, 2 * self.filters))
        self.horizontal_output.build((None, height, width, self.filters))
        for projection in self.label_projections:
            projection.build((None, self.num_classes))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def call(self, vertical, horizontal, labels=None):
        r = self.radius
        vertical_preactivation = self.vertical(tf.pad(vertical, [[0, 0], [r, 0], [r, r], [0, 0]]))
        if self.label_projections:  # before the link, so the last layer's V_f, V_g still reach the output
            vertical_preactivation += self.label_projections[0](labels)[:, None, None]
        row_so_far = tf.pad(horizontal, [[0, 0], [0, 0], [r, 0], [0, 0]])
        if self.first:
            row_so_far = _drop_last(row_so_far, axis=2)  # mask A: tap j reads column j − 1
        horizontal_preactivation = (self.horizontal(row_so_far)
                                    + self.vertical_to_horizontal(_shift_down(vertical_preactivation)))
        if self.label_projections:
            horizontal_preactivation += self.label_projections[1](labels)[:, None, None]
        horizontal_output = self.horizontal_output(_gate(horizontal_preactivation))
        if not self.first:
            horizontal_output += horizontal
        return _gate(vertical_preactivation), horizontal_output


@keras.saving.register_keras_serializable(package="zoo")
class PixelCNN(keras.Model):
    """p(x) = Π_i p(x_i | x_<i) with a masked convolutional network (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape] in
    [0, 1] (binary for the Bernoulli likelihood), and "label", int64 [batch], when
    `config.conditional`. `model(images, labels)` returns the per-pixel logits.
    """

    def __init__(self, config: PixelCNNConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        initializer = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(config.seed))
        if config.architecture == "gated":
            self.network = [
                _GatedLayer(config.filters, size, first=not index, num_classes=config.num_classes * config.conditional,
                            kernel_initializer=initializer, name=f"gated_{index}")
                for index, size in enumerate([config.first_kernel_size] + [config.kernel_size] * config.layers)
            ]
        else:
            self.network = [
                MaskedConv2D(2 * config.filters, config.first_kernel_size, "A", kernel_initializer=initializer,
                             name="input_conv"),
                *[_ResidualBlock(config.filters, config.kernel_size, initializer, name=f"residual_{index + 1}")
                  for index in range(config.layers)],
            ]
        channels = config.image_shape[-1]
        self.levels = distributions.NUM_LEVELS if config.likelihood == "categorical" else 1
        params = (distributions.CategoricalLayer.params_size(self.levels, (channels,)) if self.levels > 1
                  else distributions.BernoulliLayer.params_size((channels,)))
        self.head = [  # 2016a Table 2: ReLU then 1×1 conv (mask B), twice
            MaskedConv2D(config.output_filters, 1, "B", kernel_initializer=initializer, name="output_hidden"),
            MaskedConv2D(params, 1, "B", kernel_initializer=initializer, name="output_logits"),
        ]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "nll", "bits_per_dim")}

    def build(self, input_shape=None):
        shape = (None, *self.config.image_shape)
        for layer in [*self.network, *self.head]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        super().build(input_shape)

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def dimensions(self) -> int:
        """H·W·C, the denominator of bits per dimension."""
        return math.prod(self.config.image_shape)

    # The network and the likelihood.

    def call(self, images, labels=None):
        """Logits of p(x_i | x_<i, y) at every pixel: [batch, H, W, C], or [batch, H, W, C, 256] (categorical)."""
        if self.config.conditional and labels is None:
            raise ValueError("a conditional PixelCNN needs labels")
        features = 2.0 * images - 1.0  # centred, so the zero padding of the convolutions reads as mid-grey
        if self.config.architecture == "gated":
            one_hot = tf.one_hot(labels, self.config.num_classes) if self.config.conditional else None
            vertical = features
            for layer in self.network:
                vertical, features = layer(vertical, features, labels=one_hot)
        else:
            for layer in self.network:
                features = layer(features)
        for layer in self.head:
            features = layer(tf.nn.relu(features))
        if self.levels > 1:
            features = tf.reshape(features, [-1, *self.config.image_shape, self.levels])
        return features

    def _pixel_distribution(self, logits) -> tfd.Distribution:
        """p(x_i | x_<i) per sub-pixel: Bernoulli on {0, 1}, or Categorical over levels 0 … 255."""
        if self.levels > 1:
            return tfd.Categorical(logits=logits)
        return tfd.Bernoulli(logits=logits, dtype=tf.float32)

    def _values(self, images):
        """Images in [0, 1] as the distribution's values: as they are, or levels round(255 x)."""
        if self.levels > 1:
            return tf.cast(tf.clip_by_value(tf.round(images * (self.levels - 1)), 0.0, self.levels - 1.0), tf.int32)
        return images

    def log_likelihood(self, images, labels=None):
        """log p(x | y) = Σ_i log p(x_i | x_<i, y) per image, exact, in nats: [batch] (2016a Eq. 1)."""
        pixels = tfd.Independent(self._pixel_distribution(self(images, labels)), reinterpreted_batch_ndims=3)
        return pixels.log_prob(self._values(images))

    # The objective: maximum likelihood (2016a Sec. 2), shared by train_step and test_step.

    def _objective(self, data):
        """Per-example −log p(x) in nats and in bits per dimension."""
        nll = -self.log_likelihood(data["image"], data.get("label"))
        return {"loss": nll, "nll": nll, "bits_per_dim": nll / (self.dimensions * math.log(2.0))}

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        global_batch = tf.cast(tf.shape(data["image"])[0], tf.float32) * replicas
        with tf.GradientTape() as tape:
            terms = self._objective(data)
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

    def sample(self, seeds, labels=None):
        """x ~ p(x | y), one image in [0, 1] per int64 seed; y drawn from the seed unless given.

        Pixel i of a sample uses noise seeded by (its seed, i) alone, so a sample
        depends only on its seed (and label), whatever else is in the batch.
        """
        seeds = tf.cast(seeds, tf.int64)
        if self.config.conditional and labels is None:
            labels = per_example_uniform(seeds, [], LABEL_STREAM, 0, self.config.num_classes, tf.int64)
        return self._sample_loop(seeds, labels)

    @tf.function(reduce_retracing=True)
    def _sample_loop(self, seeds, labels):
        height, width, _ = self.config.image_shape
        _, state = tf.while_loop(
            lambda pixel, state: pixel < height * width,
            lambda pixel, state: (pixel + 1, self._sampling_step(pixel, state, seeds, labels)),
            (tf.constant(0, tf.int64), self._initial_sampling_state(tf.shape(seeds)[0])),
        )
        return state["images"]

    def _initial_sampling_state(self, batch):
        """What the loop carries: the images so far (zeros where not yet drawn)."""
        return {"images": tf.zeros([batch, *self.config.image_shape])}

    def _sampling_step(self, pixel, state, seeds, labels):
        """Draws pixel `pixel` (raster index) of every image: one full forward pass (the naive sampler)."""
        height, width, _ = self.config.image_shape
        logits = self(state["images"], labels)[:, pixel // width, pixel % width]
        values = self._draw(logits, self._pixel_uniforms(seeds, pixel))
        at_pixel = tf.reshape(tf.one_hot(pixel, height * width), [1, height, width, 1])
        return {"images": state["images"] + at_pixel * values[:, None, None, :]}

    def _pixel_uniforms(self, seeds, pixel):
        """U(0, 1) noise [batch, C, levels] for one pixel, example b's seeded by (seeds[b], pixel)."""
        shape = [self.config.image_shape[-1], self.levels]
        return tf.map_fn(
            lambda seed: tf.random.stateless_uniform(shape, tf.stack([seed, pixel]), minval=_TINY),
            seeds, fn_output_signature=tf.TensorSpec(shape, tf.float32))

    def _draw(self, logits, uniforms):
        """A pixel's values in [0, 1]: 1[u < σ(ℓ)], or the Gumbel-max level argmax(ℓ − log(−log u)) / 255."""
        if self.levels > 1:
            levels = tf.argmax(logits - tf.math.log(-tf.math.log(uniforms)), axis=-1)
            return tf.cast(levels, tf.float32) / (self.levels - 1)
        return tf.cast(uniforms[..., 0] < tf.sigmoid(logits), tf.float32)

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

        16 rather than the zoo's usual 64: the naive sampler runs H·W forward passes per grid.
        """
        del images  # samples need no data
        grids = {"samples": self.sample(tf.range(16, dtype=tf.int64))}
        if self.config.conditional:
            classes = self.config.num_classes
            grids["per_class"] = self.sample(tf.tile(tf.range(8, dtype=tf.int64), [classes]),
                                             tf.repeat(tf.range(classes, dtype=tf.int64), 8))
        return grids

    def get_config(self):
        return {**super().get_config(), "config": config_lib.to_dict(self.config)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config_lib.from_dict(PixelCNNConfig, config.pop("config")), **config)


def build(config: PixelCNNConfig) -> PixelCNN:
    model = PixelCNN(config, name="gated_pixelcnn" if config.architecture == "gated" else "pixelcnn")
    model.build((None, *config.image_shape))
    return model


def dataset(config: PixelCNNConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=config.likelihood == "bernoulli", labels=config.conditional)


def _register(name: str, description: str, **preset):
    registry.register(registry.ModelSpec(name, description, PixelCNNConfig, build, dataset, preset=preset,
                                         evaluation=("exact_likelihood",)))


_register("zoo.pixelcnn", "PixelCNN (van den Oord et al. 2016a) with residual blocks")
_register("zoo.gated_pixelcnn", "Gated PixelCNN (van den Oord et al. 2016b): vertical and horizontal stacks",
          architecture="gated")
