"""The layers of PixelCNN and Gated PixelCNN, each with a whole-image pass and a
one-pixel step for cached sampling.

Whole image (`call`): teacher forcing, every pixel's output at once.

One pixel (Ramachandran et al. 2017, arXiv:1704.06001, Sec. 3): when sampling in
raster order, only the new pixel changes anything, so each layer computes its
output at that pixel alone from a cache of its input's recent values (the paper's
per-layer queues). A masked n×n convolution with r = n // 2 reads rows i − r … i
of its input at pixel (i, j); its cache (`MaskedConvolutionCache`) holds the r rows
above and the current row, and the kernel's rows above the centre are applied to
the rows above once per row (the row's *context*), so a pixel costs only the centre
row's taps. A gated layer (`GatedLayerSteps`) runs its vertical stack once per row
and its horizontal stack once per pixel. The current row's buffer keeps the
previous row's values right of the pixel until they are overwritten: those are
exactly the taps the causal mask zeroes. Rows above the image are the caches'
initial zeros, as the whole-image pass reads its zero padding. A pixel then costs
one pixel's worth of each layer instead of a whole image's.

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

from zoo.autoregressive.masked_conv import MaskedConv2D


# The caches of the cached sampler. A pixel's values are [batch, C] and a row buffer's
# [batch, W + 2r, C], so a layer at one pixel is one matrix product and on a whole row
# one more: no transposes inside the loop.


class Pixel:
    """Where a sampling step at `column` of the current row writes and reads the row buffers,
    computed once per pixel and shared by every layer."""

    def __init__(self, column, batch):
        self.column = column
        self._examples = tf.range(batch)
        self._write_indices = {}

    def write_indices(self, radius: int):
        """[[b, j + r]] for every example b: the pixel's slots in a row buffer padded by r on the left."""
        if radius not in self._write_indices:
            columns = tf.fill(tf.shape(self._examples), self.column + radius)
            self._write_indices[radius] = tf.stack([self._examples, columns], axis=1)
        return self._write_indices[radius]


def row_write(row_buffer, pixel: Pixel, radius: int, values):
    """A row buffer [batch, W + 2r, C] padded by `radius` on the left, with `values` [batch, C] at the pixel."""
    return tf.tensor_scatter_nd_update(row_buffer, pixel.write_indices(radius), values)


def row_window(row_buffer, pixel: Pixel, taps: int):
    """Columns j − r … j − r + taps − 1 of a row buffer padded by r on the left: [batch, taps·C]."""
    channels = row_buffer.shape[-1]
    return tf.reshape(tf.slice(row_buffer, tf.stack([0, pixel.column, 0]), [-1, taps, -1]), [-1, taps * channels])


def row_taps(rows, kernel_width: int):
    """Every pixel's window of `rows` [batch, n, W + 2r, C] (columns padded by r = kernel_width // 2):
    [batch, W, n·kernel_width·C], taps in the kernel's (row, column, channel) order."""
    _, count, padded_width, _ = rows.shape
    width = padded_width - (kernel_width - 1)
    return tf.concat([rows[:, index, offset:offset + width] for index in range(count)
                      for offset in range(kernel_width)], axis=-1)


def _matrix(kernel):
    """A kernel [k_h, k_w, C_in, C_out] as the matrix [k_h·k_w·C_in, C_out] that acts on flattened windows."""
    return tf.reshape(kernel, [-1, kernel.shape[-1]])


def _row_bias(convolution):
    """The bias as a [1, filters] row (or 0). Not the [filters] vector: grappler would fuse
    matmul + bias into oneDNN's _FusedMatMul, which re-lays out the weights (loop
    inputs, not constants) at every call, about 10× a plain matmul at one pixel."""
    return convolution.bias[None] if convolution.bias is not None else 0.0


def pixel_weights(convolution):
    """(W, b) of a convolution at one pixel (masked if a MaskedConv2D): x W + b, x its
    flattened window (for a 1×1 convolution, the pixel's [batch, C_in] values)."""
    kernel = convolution.kernel
    if isinstance(convolution, MaskedConv2D):
        kernel = kernel * convolution.mask
    return _matrix(kernel), _row_bias(convolution)


def affine(weights, inputs):
    """x W + b for weights = (W, b) from `pixel_weights`."""
    matrix, bias = weights
    return tf.matmul(inputs, matrix) + bias


def on_row(function, inputs, width: int):
    """`function` of per-pixel values [batch·W, …] applied to a row [batch, W, …]."""
    outputs = function(tf.reshape(inputs, [-1, *inputs.shape[2:]]))
    return tf.reshape(outputs, [-1, width, *outputs.shape[1:]])


class MaskedConvolutionCache:
    """A masked n×n convolution, r = n // 2, one pixel at a time.

    Its cache holds {"above": its input on the r rows above, [batch, r, W + 2r, C_in];
    "row": its input in the current row so far, [batch, W + 2r, C_in]; "context": what
    the kernel's rows above the centre contribute to each pixel of the current row, bias
    included, [batch, W, filters]}, columns zero-padded by r either side as the
    whole-image pass pads them. The context is computed once per row; a pixel then costs
    the centre row's taps j − r … j alone (mask A has zeroed tap j, mask B keeps it).

    The row buffer is never cleared: each row overwrites it left to right, and until
    then its stale values lie right of the pixel, where the mask's taps are zero.
    """

    def __init__(self, convolution: MaskedConv2D):
        kernel = convolution.kernel * convolution.mask
        self.radius = kernel.shape[0] // 2
        self.channels = kernel.shape[2]
        self.above_weights = (_matrix(kernel[:self.radius]), _row_bias(convolution))
        self.row_weights = _matrix(kernel[self.radius:self.radius + 1, :self.radius + 1])

    def _context(self, above):
        width = above.shape[2] - 2 * self.radius
        return on_row(lambda taps: affine(self.above_weights, taps), row_taps(above, 2 * self.radius + 1), width)

    def empty(self, width: int, batch) -> dict:
        r = self.radius
        above = tf.zeros([batch, r, width + 2 * r, self.channels])
        return {"above": above, "row": tf.zeros([batch, width + 2 * r, self.channels]),
                "context": self._context(above)}

    def next_row(self, cache) -> dict:
        """The cache at the start of the next row: the finished row joins the rows above."""
        above = tf.concat([cache["above"][:, 1:], cache["row"][:, None]], axis=1)
        return {**cache, "above": above, "context": self._context(above)}

    def write(self, cache, pixel: Pixel, values) -> dict:
        """`cache` with its input `values` [batch, C_in] at the pixel."""
        return {**cache, "row": row_write(cache["row"], pixel, self.radius, values)}

    def output(self, cache, pixel: Pixel):
        """The convolution's output at the pixel, [batch, filters], once its input there is written."""
        return (tf.matmul(row_window(cache["row"], pixel, self.radius + 1), self.row_weights)
                + tf.gather(cache["context"], pixel.column, axis=1))


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

    def pixel_step(self):
        """The block one pixel at a time: (empty_cache(width, batch), next_row(cache),
        step(inputs [2h, batch], cache, pixel) → (outputs [2h, batch], cache))."""
        reduce, spatial, expand = self.convolutions
        reduce, spatial, expand = pixel_weights(reduce), MaskedConvolutionCache(spatial), pixel_weights(expand)

        def step(inputs, cache, pixel):
            cache = spatial.write(cache, pixel, tf.nn.relu(affine(reduce, tf.nn.relu(inputs))))
            return inputs + affine(expand, tf.nn.relu(spatial.output(cache, pixel))), cache

        return spatial.empty, spatial.next_row, step


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

    `GatedLayerSteps` runs it one pixel at a time.
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



class GatedLayerSteps:
    """A GatedLayer for cached sampling, split along its two stacks: the vertical stack runs
    once per row (a row's vertical output needs the whole row), the horizontal stack once
    per pixel, reading what the vertical stack gave the row above.

    A cache is {"above": the vertical input on the r rows above, [batch, r, W + 2r, C];
    "row": the horizontal input in the current row, [batch, W + r, C]; "context": what the
    vertical stack (through the shift down and V₂ₕ), the label and the horizontal bias add
    to each pixel of the current row, [batch, W, 2h]}.
    """

    def __init__(self, layer: GatedLayer):
        self.layer = layer
        self.vertical = pixel_weights(layer.vertical)
        self.vertical_to_horizontal = pixel_weights(layer.vertical_to_horizontal)
        self.horizontal = _matrix(layer.horizontal.kernel)
        self.horizontal_output = pixel_weights(layer.horizontal_output)

    def empty(self, width: int, channels: int, batch, labels=None) -> dict:
        """The cache at the start of row 0, above which the vertical pre-activation is zero (`_shift_down`)."""
        r, filters = self.layer.radius, 2 * self.layer.filters
        _, horizontal_label = self.layer._label_terms(labels)
        context = (self.vertical_to_horizontal[1] + _row_bias(self.layer.horizontal)
                   + tf.zeros([batch, filters]) + horizontal_label)
        return {"above": tf.zeros([batch, r, width + 2 * r, channels]),
                "row": tf.zeros([batch, width + r, channels]),
                "context": tf.tile(context[:, None], [1, width, 1])}

    def next_row(self, cache, inputs, labels=None):
        """Runs the vertical stack on the row just finished, given its input there, [batch, W, C].

        Returns (this layer's vertical output on that row, [batch, W, h], the cache of the next row).
        """
        r, width = self.layer.radius, inputs.shape[1]
        rows = tf.concat([cache["above"], tf.pad(inputs, [[0, 0], [r, r], [0, 0]])[:, None]], axis=1)
        vertical_label, horizontal_label = self.layer._label_terms(labels)
        preactivation = on_row(lambda taps: affine(self.vertical, taps), row_taps(rows, 2 * r + 1), width)
        preactivation += _broadcast_over_row(vertical_label)
        context = (on_row(lambda pre: affine(self.vertical_to_horizontal, pre), preactivation, width)
                   + _row_bias(self.layer.horizontal) + _broadcast_over_row(horizontal_label))
        return gate(preactivation), {**cache, "above": rows[:, 1:], "context": context}

    def step(self, cache, pixel: Pixel, inputs=None):
        """The horizontal stack at the pixel: inputs [batch, h] → (outputs [batch, h], cache).

        `inputs`, the horizontal input at this pixel, is written first. The first layer has none:
        it reads only the pixels before this one, which `write_input` wrote as they were drawn.
        """
        row = cache["row"] if inputs is None else row_write(cache["row"], pixel, self.layer.radius, inputs)
        window = row_window(row, pixel, self.layer.radius + 1 - self.layer.first)
        preactivation = tf.matmul(window, self.horizontal) + tf.gather(cache["context"], pixel.column, axis=1)
        outputs = affine(self.horizontal_output, gate(preactivation))
        if not self.layer.first:
            outputs += inputs
        return outputs, {**cache, "row": row}

    def write_input(self, cache, pixel: Pixel, inputs):
        """The first layer's horizontal input at the pixel, once drawn: [batch, C]."""
        return {**cache, "row": row_write(cache["row"], pixel, self.layer.radius, inputs)}


def _broadcast_over_row(term):
    return term[:, None] if isinstance(term, tf.Tensor) else term


def _broadcast_over_pixels(term):
    return term[:, None, None] if isinstance(term, tf.Tensor) else term
