"""PixelCNN++: a PixelCNN with a discretized logistic mixture likelihood, two shifted streams and
three resolutions.

Salimans, Karpathy, Chen, Kingma. PixelCNN++: Improving the PixelCNN with Discretized
  Logistic Mixture Likelihood and Other Modifications. ICLR 2017, arXiv:1701.05517.
  Authors' code: github.com/openai/pixel-cnn ("authors' code").

The image is factored pixel by pixel in raster order, p(x | y) = Π_i p(x_i | x_<i, y), exactly as
in the PixelCNN (`zoo.autoregressive.base`), with the paper's modifications:

* Sec. 2.1–2.2: each conditional is a mixture of K discretized logistics over the 256 levels of a
  whole pixel (Eqs. 2–3), `logistic_mixture.DiscretizedLogisticMixture`, its parameters a 1×1
  layer ("nin") of elu(ul) at the pixel;
* Fig. 2: two streams replace masked convolutions. With "down" convolutions (k_h × k_w, padded
  k_h − 1 rows above and centred across, so output (i, j) reads rows i − k_h + 1 … i) and
  "down-right" ones (also padded k_w − 1 columns left, reading columns j − k_w + 1 … j), and a
  first layer shifted one row down (and one column right), u[i, j] sees the rows above row i and
  ul[i, j] those plus row i left of column j: within its reach every earlier pixel, no blind spot;
* Sec. 2.3: stride-2 convolutions downsample and transposed stride-2 convolutions upsample, three
  resolutions (28 → 14 → 7 for MNIST; odd sizes round up, ⌈H/2⌉, and the upsampling crops back)
  of `resnet_blocks` gated ResNet blocks each;
* Sec. 2.4: every layer of the upward pass feeds the matching layer of the downward pass;
* Sec. 2.5: dropout on the residual path of every block, in training only.

A gated ResNet block (authors' code, nn.gated_resnet), concat_elu(x) = elu([x, −x]):

    c = conv(concat_elu(x)) + nin(concat_elu(a)),   [p, q] = conv'(dropout(concat_elu(c))) + V h,
    x ← x + p ⊙ σ(q),

a the short-cut input (u for the ul stream on the way up; the upward pass's outputs on the way
down) and h the one-hot label when `conditional`. The model's `likelihood` is the mixture layer;
sampling is the family's naive raster-order loop (`base.raster_sample` with `base.NaiveSampler`:
one forward pass per pixel), each pixel drawn by inverting the mixture's CDFs at that pixel's
1 + C stateless uniforms (`DiscretizedLogisticMixtureLayer.draw`).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.autoregressive.base import AutoregressiveImageModel
from zoo.common import logistic_mixture

RESOLUTIONS = 3  # Sec. 2.3, Fig. 2: full, 1/2 and 1/4 size, with two downsamplings between
DOWN_KERNEL, DOWN_RIGHT_KERNEL = (2, 3), (2, 2)  # authors' code: down_shifted_conv2d, down_right_shifted_conv2d


@dataclasses.dataclass(frozen=True)
class PixelCNNPPConfig(config_lib.TrainingConfig):
    # Network (Sec. 2, Fig. 2).
    filters: int = 8                        # deviation: the authors' code uses 160 (train.py --nr_filters) on
                                            # CIFAR-10; 8 keeps a CPU epoch of MNIST near 20 minutes (16: ~45)
    resnet_blocks: int = 5                  # per resolution and stream: Fig. 2, 6 blocks of 5 ResNet layers;
                                            # authors' code --nr_resnet 5
    num_mixtures: int = 10                  # K: authors' code --nr_logistic_mix 10 (Sec. 2.1)
    dropout: float = 0.5                    # Sec. 2.5; authors' code --dropout_p 0.5
    image_shape: tuple[int, ...] = (28, 28, 1)  # deviation: the paper models CIFAR-10 (32×32×3); the zoo's data
                                                # are grey
    conditional: bool = False               # authors' code --class_conditional: V h in every block
    num_classes: int = 10
    # Data and optimisation.
    dataset: str = "mnist"                  # 8-bit grey levels (the paper: CIFAR-10, Sec. 3)
    batch_size: int = 64                    # deviation: authors' code 12 per GPU × 8 GPUs; ours for one CPU
    epochs: int = 20                        # deviation: a budget; the authors' code runs up to 5000 epochs
    learning_rate: float = 1e-3             # authors' code --learning_rate 0.001
    learning_rate_decay: float = 0.999995   # authors' code --lr_decay: the rate is multiplied by it every step
    adam_beta_1: float = 0.95               # authors' code: adam_updates(mom1=0.95)
    adam_beta_2: float = 0.9995             # authors' code: adam_updates(mom2=0.9995)
    adam_epsilon: float = 1e-4              # authors' code adds 1e-8 inside the square root, ≈ 1e-4 outside it

    def __post_init__(self):
        super().__post_init__()
        checks = [
            (len(self.image_shape) == 3 and min(self.image_shape) >= 1,
             "image_shape must be (height, width, channels)"),
            (self.filters >= 1 and self.resnet_blocks >= 1 and self.num_mixtures >= 1,
             "filters, resnet_blocks and num_mixtures must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (not self.dataset.startswith("binarized"),
             f"dataset={self.dataset} has 2 levels and the discretized logistic models 256: set dataset=mnist "
             "or fashion_mnist"),
            (not self.conditional or self.num_classes >= 2, "num_classes must be >= 2"),
            (0.0 < self.learning_rate_decay <= 1.0, "learning_rate_decay must be in (0, 1]"),
            (self.batch_size >= 1 and self.epochs >= 1, "batch_size and epochs must be >= 1"),
        ]
        config_lib.check(self, checks)


def _concat_elu(features):
    """elu([x, −x]) over the channels (authors' code): both signs pass, twice the maps."""
    return tf.nn.elu(tf.concat([features, -features], axis=-1))


def _shift(features, axis: int):
    """One row down (axis 1) or one column right (axis 2), zeros entering."""
    paddings = [[0, 0]] * 4
    paddings[axis] = [1, 0]
    kept = features[:, :-1] if axis == 1 else features[:, :, :-1]
    return tf.pad(kept, paddings)


class ShiftedConv2D(keras.layers.Layer):
    """A convolution whose output (i, j) reads inputs in rows ≤ i only, centred across ("down"), or
    in rows ≤ i and columns ≤ j ("down_right"), by padding above and to the left (Fig. 2).

    With `strides=2` it halves the grid, rounding up (Sec. 2.3). `transposed` doubles it, cropped to
    `output_size`: input (i, j) reaches outputs 2i, 2i + 1 (rows) and 2j, 2j + 1 (columns;
    2j − 1 … 2j + 1 for "down") only, so an upsampled map sees no more than the low-resolution
    position it came from, which saw only pixels before (2i, 2j) in raster order.
    """

    def __init__(self, filters: int, kernel_size, stream: str, strides: int = 1, transposed: bool = False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides, self.transposed = filters, tuple(kernel_size), strides, transposed
        self.centred = stream == "down"
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = (self.filters, input_shape[-1]) if self.transposed else (input_shape[-1], self.filters)
        self.kernel = self.add_weight(shape=(*self.kernel_size, *channels), initializer=self.kernel_initializer,
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, inputs, output_size=None):
        (kernel_height, kernel_width), stride = self.kernel_size, self.strides
        margin = (kernel_width - 1) // 2 if self.centred else kernel_width - 1  # columns left of j read
        if self.transposed:
            (rows, columns), (height, width) = inputs.shape[1:3], output_size
            full = [tf.shape(inputs)[0], (rows - 1) * stride + kernel_height, (columns - 1) * stride + kernel_width,
                    self.filters]
            outputs = tf.nn.conv2d_transpose(inputs, self.kernel, tf.stack(full), stride, "VALID")
            first = margin if self.centred else 0
            outputs = outputs[:, :height, first:first + width]
        else:
            padded = tf.pad(inputs, [[0, 0], [kernel_height - 1, 0], [margin, kernel_width - 1 - margin], [0, 0]])
            outputs = tf.nn.conv2d(padded, self.kernel, stride, "VALID")
        return tf.nn.bias_add(outputs, self.bias)


class GatedResnet(keras.layers.Layer):
    """x + p ⊙ σ(q), [p, q] = conv'(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(a))))) + V h.

    The authors' nn.gated_resnet; `auxiliary_channels` is a's width (0: no short-cut input) and
    `num_classes` h's (0: unconditional).
    """

    def __init__(self, filters: int, stream: str, auxiliary_channels: int, num_classes: int, dropout: float,
                 dropout_seed: int, kernel_initializer, gate_initializer, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.auxiliary_channels, self.num_classes = filters, auxiliary_channels, num_classes
        size = DOWN_KERNEL if stream == "down" else DOWN_RIGHT_KERNEL
        self.inner = ShiftedConv2D(filters, size, stream, kernel_initializer=kernel_initializer)
        self.gate = ShiftedConv2D(2 * filters, size, stream, kernel_initializer=gate_initializer)
        self.shortcut = (keras.layers.Dense(filters, use_bias=False, kernel_initializer=kernel_initializer)
                         if auxiliary_channels else None)  # no bias: the inner convolution's shifts the same sum
        self.label_projection = (keras.layers.Dense(2 * filters, use_bias=False, kernel_initializer=kernel_initializer)
                                 if num_classes else None)
        self.dropout = keras.layers.Dropout(dropout, seed=dropout_seed)

    def build(self, input_shape):
        doubled = (*input_shape[:-1], 2 * self.filters)  # concat_elu doubles the maps
        self.inner.build(doubled)
        self.gate.build(doubled)
        if self.shortcut is not None:
            self.shortcut.build((None, 2 * self.auxiliary_channels))
        if self.label_projection is not None:
            self.label_projection.build((None, self.num_classes))

    def call(self, features, auxiliary=None, labels=None, training=False):
        hidden = self.inner(_concat_elu(features))
        if self.shortcut is not None:
            hidden += self.shortcut(_concat_elu(auxiliary))
        gates = self.gate(self.dropout(_concat_elu(hidden), training=training))
        if self.label_projection is not None:
            gates += self.label_projection(labels)[:, None, None, :]
        values, logits = tf.split(gates, 2, axis=-1)
        return features + values * tf.sigmoid(logits)


@keras.saving.register_keras_serializable(package="zoo")
class PixelCNNPP(AutoregressiveImageModel):
    """p(x | y) = Π_i p(x_i | x_<i, y), each a discretized logistic mixture (see module docstring).

    `model(images, labels, training)` returns elu(ul), [batch, H, W, filters], the features that
    `likelihood`'s 1×1 layer maps to each pixel's mixture parameters; batches follow
    `AutoregressiveImageModel`'s data contract.
    """

    config_class = PixelCNNPPConfig

    def __init__(self, config: PixelCNNPPConfig, **kwargs):
        super().__init__(config, **kwargs)
        seeds = keras.random.SeedGenerator(config.seed)
        initializer = keras.initializers.GlorotUniform(seed=seeds)
        # Authors' code: init_scale=0.1 on the gate's convolution, so every block starts near the identity.
        gate_initializer = keras.initializers.VarianceScaling(0.01, seed=seeds)
        dropout_seeds = np.random.default_rng(config.seed)  # one seed per block, fixed by config.seed
        filters, classes = config.filters, config.num_classes * config.conditional

        def conv(kernel_size, stream, **options):
            return ShiftedConv2D(filters, kernel_size, stream, kernel_initializer=initializer, **options)

        def block_pair(u_shortcut, ul_shortcut):
            """A u block and a ul block, their short-cut inputs `u_shortcut` and `ul_shortcut` maps wide."""
            return [GatedResnet(filters, stream, shortcut, classes, config.dropout, int(dropout_seeds.integers(2**31)),
                                initializer, gate_initializer)
                    for stream, shortcut in (("down", u_shortcut), ("down_right", ul_shortcut))]

        # u: a 2×3 down conv shifted down; ul: a 1×3 down conv shifted down plus a 2×1 down-right conv
        # shifted right (authors' code).
        self.first = [conv((2, 3), "down"), conv((1, 3), "down"), conv((2, 1), "down_right")]
        self.upward = [[block_pair(0, filters) for _ in range(config.resnet_blocks)] for _ in range(RESOLUTIONS)]
        self.downsample = [[conv(DOWN_KERNEL, "down", strides=2), conv(DOWN_RIGHT_KERNEL, "down_right", strides=2)]
                           for _ in range(RESOLUTIONS - 1)]
        # Downward, coarsest first; each finer resolution has one block more, taking the upsampled map's short-cut.
        self.downward = [[block_pair(filters, 2 * filters) for _ in range(config.resnet_blocks + bool(level))]
                         for level in range(RESOLUTIONS)]
        self.upsample = [[conv(DOWN_KERNEL, "down", strides=2, transposed=True),
                          conv(DOWN_RIGHT_KERNEL, "down_right", strides=2, transposed=True)]
                         for _ in range(RESOLUTIONS - 1)]
        self.likelihood = logistic_mixture.DiscretizedLogisticMixtureLayer(config.num_mixtures, config.image_shape[-1])
        self.likelihood.projection.kernel_initializer = initializer  # the layer takes no initializer; seed it too

    def build(self, input_shape=None):
        images = tf.zeros([1, *self.config.image_shape])
        self.call(images, tf.zeros([1], tf.int64) if self.config.conditional else None)  # builds every layer
        self.likelihood.build((None, *self.config.image_shape[:2], self.config.filters))
        super().build(input_shape)

    def call(self, images, labels=None, training=False):
        """elu(ul) at every pixel, seeing only the pixels before it (Fig. 2): [batch, H, W, filters]."""
        one_hot = self.one_hot_labels(labels)
        features = 2.0 * images - 1.0  # [−1, 1], the units of the likelihood
        # Authors' code: a channel of ones tells the image from the convolutions' zero padding.
        features = tf.concat([features, tf.ones_like(features[..., :1])], axis=-1)
        above, row, column = self.first
        u = _shift(above(features), axis=1)
        ul = _shift(row(features), axis=1) + _shift(column(features), axis=2)
        upward = [(u, ul)]  # every layer's (u, ul), for the short-cuts of Sec. 2.4
        for level, blocks in enumerate(self.upward):
            if level:
                down, down_right = self.downsample[level - 1]
                u, ul = down(u), down_right(ul)
                upward.append((u, ul))
            for u_block, ul_block in blocks:
                u = u_block(u, labels=one_hot, training=training)
                ul = ul_block(ul, u, labels=one_hot, training=training)
                upward.append((u, ul))
        u, ul = upward.pop()
        for level, blocks in enumerate(self.downward):
            if level:
                size = tuple(upward[-1][0].shape[1:3])  # the next short-cut's: the finer resolution
                up, up_right = self.upsample[level - 1]
                u, ul = up(u, output_size=size), up_right(ul, output_size=size)
            for u_block, ul_block in blocks:  # the last upward layer feeds the first downward one, and so on
                u_shortcut, ul_shortcut = upward.pop()
                u = u_block(u, u_shortcut, labels=one_hot, training=training)
                ul = ul_block(ul, tf.concat([u, ul_shortcut], axis=-1), labels=one_hot, training=training)
        return tf.nn.elu(ul)

    def compile_for_training(self, steps_per_epoch: int):
        """Adam with the authors' moments and ε, its rate decayed by `learning_rate_decay` every step."""
        del steps_per_epoch  # the decay is per step
        config = self.config
        schedule = keras.optimizers.schedules.ExponentialDecay(config.learning_rate, 1, config.learning_rate_decay)
        optimizer = keras.optimizers.Adam(schedule, beta_1=config.adam_beta_1, beta_2=config.adam_beta_2,
                                          epsilon=config.adam_epsilon)
        self.compile(optimizer=optimizer, jit_compile=config.jit_compile)
        optimizer.build(self.trainable_variables)  # slots now, so train_step is traced once


def build(config: PixelCNNPPConfig) -> PixelCNNPP:
    model = PixelCNNPP(config, name="pixelcnn_pp")
    model.build((None, *config.image_shape))
    return model


def dataset(config: PixelCNNPPConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=False, labels=config.conditional)


registry.register(registry.ModelSpec(
    "zoo.pixelcnn_pp", "PixelCNN++ (Salimans et al. 2017): discretized logistic mixture, two streams, "
    "three resolutions", PixelCNNPPConfig, build, dataset, evaluation=("exact_likelihood",),
    tiny=dict(image_shape=(4, 4, 1), filters=4, resnet_blocks=1, num_mixtures=2, batch_size=8)))
