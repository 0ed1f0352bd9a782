"""The layers of PixelCNN and Gated PixelCNN: residual blocks and gated layers, each a
whole-image pass (teacher forcing, every pixel's output at once).

Their one-pixel counterparts, for cached sampling, are in `cached_sampling`
(`ResidualBlockSteps`, `GatedLayerSteps`).

References:
  [1] van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks.
      ICML 2016, arXiv:1601.06759.
  [2] van den Oord et al. Conditional Image Generation with PixelCNN Decoders.
      NeurIPS 2016, arXiv:1606.05328.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.autoregressive.masked_conv import MaskedConv2D


def gate(preactivation):
    """tanh(a) ⊙ σ(b) for preactivation = [a | b] ([2], Eq. 2)."""
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


class ResidualBlock(keras.layers.Layer):
    """x + conv_1×1(ReLU(conv_n×n,B(ReLU(conv_1×1(ReLU(x)))))): 2h → h → h → 2h ([1], Fig. 5)."""

    def __init__(self, filters: int, kernel_size: int, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.radius = kernel_size // 2
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


class GatedLayer(keras.layers.Layer):
    """One layer of [2] Fig. 2: (vertical, horizontal) → (vertical, horizontal), h maps each.

    With r = n // 2, the vertical stack's n×n convolution keeps its top r + 1 rows, so
    v[i, j] sees rows i − r … i of the layer below, columns j − r … j + r; it reaches
    the horizontal stack through a 1×1 convolution after a shift down one row, so
    h[i, j] never sees row i through it. The horizontal 1×n convolution keeps its left
    half, columns j − r … j, and in the first layer (mask A) j − r … j − 1 only. Each
    stack is gated ([2] Eq. 4, the label's one-hot entering through V_f, V_g), and the
    horizontal stack adds a 1×1 convolution of its gate to its input (a residual,
    except in the first layer, whose input is the image at the pixel itself).

    `cached_sampling.GatedLayerSteps` runs it one pixel at a time.
    """

    def __init__(self, filters: int, kernel_size: int, first: bool, num_classes: int,
                 kernel_initializer="glorot_uniform", **kwargs):
        """num_classes: the one-hot labels' width, 0 for an unconditional layer."""
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
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

    def label_terms(self, labels):
        """(V_f h, V_g h) of the vertical and the horizontal stack, [batch, 2h] each, or zeros."""
        if not self.label_projections:
            return 0.0, 0.0
        return tuple(projection(labels) for projection in self.label_projections)

    def call(self, vertical, horizontal, labels=None):
        r = self.radius
        vertical_label, horizontal_label = self.label_terms(labels)
        # The label enters before the link, so the last layer's V_f, V_g still reach the output.
        vertical_preactivation = self.vertical(tf.pad(vertical, [[0, 0], [r, 0], [r, r], [0, 0]]))
        vertical_preactivation += _broadcast_over_pixels(vertical_label)
        row_so_far = tf.pad(horizontal, [[0, 0], [0, 0], [r, 0], [0, 0]])
        if self.first:
            row_so_far = _drop_last(row_so_far, axis=2)  # mask A: tap j reads column j − 1
        horizontal_preactivation = (self.horizontal(row_so_far)
                                    + self.vertical_to_horizontal(_shift_down(vertical_preactivation))
                                    + _broadcast_over_pixels(horizontal_label))
        horizontal_output = self.horizontal_output(gate(horizontal_preactivation))
        if not self.first:
            horizontal_output += horizontal
        return gate(vertical_preactivation), horizontal_output


def _broadcast_over_pixels(term):
    return term[:, None, None] if isinstance(term, tf.Tensor) else term

