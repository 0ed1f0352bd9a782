"""The layers of PixelCNN and Gated PixelCNN, each with a whole-image pass and a
one-pixel step for cached sampling.

Whole image (`call`): teacher forcing, every pixel's output at once.

One pixel (`step`, Ramachandran et al. 2017, arXiv:1704.06001, Sec. 3): when
sampling in raster order, only the new pixel changes anything, so each layer
computes its output at that pixel alone from a cache of its input's recent
values. A k×k masked convolution with r = k // 2 reads rows i − r … i of its
input at pixel (i, j), so its cache is a *band* of r + 1 rows used as a circular
buffer, row i in slot i mod (r + 1) (the paper's per-layer queues):

    band: [r + 1, W + 2r, batch, channels], columns zero-padded by r either side.

A slot still holds row i − r − 1 right of the columns written so far in row i;
those taps are exactly the ones the causal mask zeroes, so they are never
cleared. Rows above the image read the band's initial zeros, as the whole-image
pass reads its zero padding. The cost of a pixel is then one pixel's worth of
each layer instead of a whole image's: H·W times less work per image.

References:
  [1] van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks.
      ICML 2016, arXiv:1601.06759.
  [2] van den Oord et al. Conditional Image Generation with PixelCNN Decoders.
      NeurIPS 2016, arXiv:1606.05328.
  [3] Ramachandran, Le Paine, Khorrami, Babaeizadeh, Chang, Zhang,
      Hasegawa-Johnson, Campbell, Huang. Fast Generation for Convolutional
      Autoregressive Models. ICLR 2017 workshop, arXiv:1704.06001.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.masked_conv import MaskedConv2D


# Bands: the per-layer caches of the cached sampler. Per-pixel values are [C, batch]
# ("one column per example"), so every layer at one pixel is a matrix product W x.


def empty_band(radius: int, width: int, channels: int, batch) -> tf.Tensor:
    """The cache of a layer whose kernel reaches `radius` rows up and columns either side:
    [2(r + 1), W + 2r, C, batch].

    A ring of r + 1 rows, stored twice: row i sits in slots i mod (r + 1) and that plus
    r + 1, so rows i − r … i are always the contiguous slots q … q + r, q = (i + 1) mod (r + 1).
    """
    return tf.zeros([2 * (radius + 1), width + 2 * radius, channels, batch])


def band_positions(row, column, radius: int):
    """(the two slots a value at (row, column) is written to, [2, 2], and the corner [4] of
    the window a kernel centred there reads): computed once per pixel for every layer of
    the same radius."""
    slots = radius + 1
    slot = row % slots
    write = tf.stack([tf.stack([slot, column + radius]), tf.stack([slot + slots, column + radius])])
    return write, tf.stack([(row + 1) % slots, column, 0, 0])


def band_write(band, write_positions, values):
    """`band` with `values` [C, batch] at the pixel of `write_positions`."""
    return tf.tensor_scatter_nd_update(band, write_positions, tf.stack([values, values]))


def band_window(band, window_corner, kernel_width: int):
    """The input the top r + 1 rows of a kernel read: [(r + 1)·kernel_width·C, batch]."""
    slots, _, channels, _ = band.shape
    slots //= 2
    window = tf.slice(band, window_corner, [slots, kernel_width, -1, -1])
    return tf.reshape(window, [slots * kernel_width * channels, -1])


def pixel_weights(convolution, rows: int = 1):
    """(Wᵀ, b) of a convolution at one pixel, from its kernel's top `rows` rows (masked if a
    MaskedConv2D): W x + b on a window [rows·k_w·C_in, batch] is the convolution's output there."""
    kernel = convolution.kernel
    if isinstance(convolution, MaskedConv2D):
        kernel = kernel * convolution.mask
    kernel = kernel[:rows]
    matrix = tf.transpose(tf.reshape(kernel, [-1, kernel.shape[-1]]))
    bias = convolution.bias[:, None] if convolution.bias is not None else 0.0
    return matrix, bias


def affine(weights, inputs):
    """W x + b for weights = (W, b) from `pixel_weights`."""
    matrix, bias = weights
    return tf.matmul(matrix, inputs) + bias


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

    def empty_cache(self, width: int, batch):
        """The band of the n×n convolution's input."""
        return empty_band(self.radius, width, self.convolutions[1].filters, batch)

    def pixel_weights(self):
        reduce, spatial, expand = self.convolutions
        return [pixel_weights(reduce), pixel_weights(spatial, self.radius + 1), pixel_weights(expand)]

    def step(self, weights, inputs, cache, positions):
        """The block at one pixel: inputs [2h, batch] → (outputs [2h, batch], cache).

        `weights` from `pixel_weights()`, `positions` from `band_positions` for the pixel.
        """
        reduce, spatial, expand = weights
        cache = band_write(cache, positions[0], tf.nn.relu(affine(reduce, tf.nn.relu(inputs))))
        features = affine(spatial, band_window(cache, positions[1], 2 * self.radius + 1))
        return inputs + affine(expand, tf.nn.relu(features)), cache


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

    Cached sampling splits the layer along its two stacks: `vertical_row` runs once
    per image row (the vertical stack of a row needs the whole row), `step` once per
    pixel (the horizontal stack, reading the vertical stack's row above).
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

    def _label_terms(self, labels):
        """(V_f h, V_g h) of the vertical and the horizontal stack, [batch, 2h] each, or zeros."""
        if not self.label_projections:
            return 0.0, 0.0
        return tuple(projection(labels) for projection in self.label_projections)

    def call(self, vertical, horizontal, labels=None):
        r = self.radius
        vertical_label, horizontal_label = self._label_terms(labels)
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

    # Cached sampling.

    def empty_cache(self, width: int, channels: int, batch):
        """{"vertical": the band of the vertical stack's input, [2(r + 1), batch, W + 2r, C];
        "row": the horizontal stack's input in the current row, [W + r, C, batch];
        "context": what the vertical stack adds to each pixel of the current row, [W, 2h, batch]}."""
        r = self.radius
        return {"vertical": tf.zeros([2 * (r + 1), batch, width + 2 * r, channels]),
                "row": tf.zeros([width + r, channels, batch]),
                "context": tf.zeros([width, 2 * self.filters, batch])}

    def first_row_context(self, cache, labels=None):
        """The cache with row 0's context: above row 0 the vertical pre-activation is zero (`_shift_down`)."""
        _, horizontal_label = self._label_terms(labels)
        width, _, batch = tf.unstack(tf.shape(cache["context"]))
        context = tf.broadcast_to((self.vertical_to_horizontal.bias + self.horizontal.bias)[:, None],
                                  [2 * self.filters, batch])
        if isinstance(horizontal_label, tf.Tensor):
            context += tf.transpose(horizontal_label)
        return {**cache, "context": tf.tile(context[None], [width, 1, 1])}

    def vertical_row(self, cache, row, inputs, labels=None):
        """Writes row `row` of the vertical stack's input, [batch, W, C], and runs the stack there.

        Returns (this layer's vertical output on that row, [batch, W, h], the cache whose
        "context" now serves row + 1: V₂ₕ ∗ (vertical pre-activation) + V_g h + the horizontal bias).
        """
        r, slots = self.radius, self.radius + 1
        padded = tf.pad(inputs, [[0, 0], [r, r], [0, 0]])
        slot = row % slots
        band = tf.tensor_scatter_nd_update(cache["vertical"], [[slot], [slot + slots]], tf.stack([padded, padded]))
        rows = tf.slice(band, [(row + 1) % slots, 0, 0, 0], [slots, -1, -1, -1])
        vertical_label, horizontal_label = self._label_terms(labels)
        preactivation = self.vertical(tf.transpose(rows, [1, 0, 2, 3]))[:, 0] + _broadcast_over_row(vertical_label)
        context = (self.vertical_to_horizontal(preactivation[:, None])[:, 0] + self.horizontal.bias
                   + _broadcast_over_row(horizontal_label))
        return gate(preactivation), {**cache, "vertical": band, "context": tf.transpose(context, [1, 2, 0])}

    def pixel_weights(self):
        """The horizontal stack at one pixel (its bias is in the context)."""
        horizontal, _ = pixel_weights(self.horizontal)
        return [(horizontal, 0.0), pixel_weights(self.horizontal_output)]

    def step(self, weights, cache, column, inputs=None):
        """The horizontal stack at (current row, column): inputs [C, batch] → (outputs [h, batch], cache).

        `inputs`, the horizontal input at this pixel, is written first. The first layer has none:
        it reads only the pixels before this one, which `write_input` wrote as they were drawn.
        """
        horizontal, output = weights
        row_values = cache["row"]
        if inputs is not None:
            row_values = tf.tensor_scatter_nd_update(row_values, [[column + self.radius]], inputs[None])
        taps, channels = self.radius + 1 - self.first, row_values.shape[1]
        window = tf.reshape(tf.slice(row_values, [column, 0, 0], [taps, -1, -1]), [taps * channels, -1])
        preactivation = affine(horizontal, window) + tf.gather(cache["context"], column)
        outputs = affine(output, gate_rows(preactivation))
        if not self.first:
            outputs += inputs
        return outputs, {**cache, "row": row_values}

    def write_input(self, cache, column, inputs):
        """The first layer's horizontal input at (current row, column), once drawn: [C, batch]."""
        return {**cache, "row": tf.tensor_scatter_nd_update(cache["row"], [[column + self.radius]], inputs[None])}


def gate_rows(preactivation):
    """`gate` on [2h, batch] values: tanh of the first h rows ⊙ σ of the last h."""
    values, gates = tf.split(preactivation, 2, axis=0)
    return tf.tanh(values) * tf.sigmoid(gates)


def _broadcast_over_pixels(term):
    return term[:, None, None] if isinstance(term, tf.Tensor) else term


def _broadcast_over_row(term):
    return term[:, None] if isinstance(term, tf.Tensor) else term
