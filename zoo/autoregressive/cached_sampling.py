"""Cached sampling for PixelCNN and Gated PixelCNN: every layer one pixel at a time.

Ramachandran, Le Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell,
Huang. Fast Generation for Convolutional Autoregressive Models. ICLR 2017 workshop,
arXiv:1704.06001 ("[3]"); the layers are those of `pixelcnn_layers` ([1] van den Oord et
al. 2016a, arXiv:1601.06759; [2] 2016b, arXiv:1606.05328).

When sampling in raster order only the new pixel changes anything, so each layer computes
its output at that pixel alone from a cache of its input's recent values (the paper's
per-layer queues, [3] Sec. 3). A masked n×n convolution with r = n // 2 reads rows
i − r … i of its input at pixel (i, j); its cache (`MaskedConvolutionCache`) holds the r
rows above and the current row, and the kernel's rows above the centre are applied to
the rows above once per row (the row's *context*), so a pixel costs only the centre
row's taps. A residual block (`ResidualBlockSteps`) is one such convolution between 1×1
ones on the pixel alone. A gated layer (`GatedLayerSteps`) runs its vertical stack once
per row and its horizontal stack once per pixel. The current row's buffer keeps the
previous row's values right of the pixel until they are overwritten: those are exactly
the taps the causal mask zeroes. Rows above the image are the caches' initial zeros, as
the whole-image pass reads its zero padding.

A pixel's values are [batch, C] and a row buffer's [batch, W + 2r, C], so a layer at one
pixel is one matrix product and on a whole row one more: no transposes inside the loop.

`CachedResidualSampler` and `CachedGatedSampler` are the samplers of
`zoo.autoregressive.base.raster_sample` built from these caches; they draw exactly the
images of `NaiveSampler` from the same uniforms.
"""

from __future__ import annotations

import tensorflow as tf

from zoo.autoregressive.masked_conv import MaskedConv2D
from zoo.autoregressive.pixelcnn_layers import GatedLayer, ResidualBlock, gate


# One layer at one pixel.


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


class ResidualBlockSteps:
    """A ResidualBlock ([1] Fig. 5) one pixel at a time: its 1×1 convolutions on the pixel alone,
    its n×n one from a `MaskedConvolutionCache` (the block's cache)."""

    def __init__(self, block: ResidualBlock):
        reduce, spatial, expand = block.convolutions
        self.reduce, self.expand = pixel_weights(reduce), pixel_weights(expand)
        self.spatial = MaskedConvolutionCache(spatial)

    def empty(self, width: int, batch) -> dict:
        return self.spatial.empty(width, batch)

    def next_row(self, cache) -> dict:
        return self.spatial.next_row(cache)

    def step(self, inputs, cache, pixel: Pixel):
        """The block at the pixel: inputs [batch, 2h] → (outputs [batch, 2h], cache)."""
        cache = self.spatial.write(cache, pixel, tf.nn.relu(affine(self.reduce, tf.nn.relu(inputs))))
        return inputs + affine(self.expand, tf.nn.relu(self.spatial.output(cache, pixel))), cache


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
        """The cache at the start of row 0, above which the vertical pre-activation is zero (the shift down)."""
        r, filters = self.layer.radius, 2 * self.layer.filters
        _, horizontal_label = self.layer.label_terms(labels)
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
        vertical_label, horizontal_label = self.layer.label_terms(labels)
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


# The samplers. Their state: the image so far by rows, [H, batch, W, C] (a row is written
# once, when it is finished), the current row's values [batch, W, C], and the layers' caches.


def _initial_state(image_shape, batch, caches) -> dict:
    height, width, channels = image_shape
    return {"images": tf.zeros([height, batch, width, channels]), "row": tf.zeros([batch, width, channels]),
            "caches": caches}


def _with_row(state, row):
    """The images [H, batch, W, C] with the current row's values as row `row`."""
    return tf.tensor_scatter_nd_update(state["images"], [[row]], state["row"][None])


def _drawn(state, pixel: Pixel, values, caches) -> dict:
    """The state once the pixel's `values` [batch, C] are drawn."""
    return {"images": state["images"], "row": row_write(state["row"], pixel, 0, values), "caches": caches}


def _final_images(state):
    height = state["images"].shape[0]
    return tf.transpose(_with_row(state, height - 1), [1, 0, 2, 3])


def _draw_pixel(model, head, features, uniforms):
    """The head at one pixel, features [batch, F] → logits, then the pixel's values drawn from them."""
    for weights in head:
        features = affine(weights, tf.nn.relu(features))
    return model.likelihood.draw(model.likelihood.logits(features), uniforms)


class CachedResidualSampler:
    """PixelCNN ([1] Sec. 3.5): the mask-A convolution and every residual block at the new pixel
    alone, from caches of their inputs' recent rows; at a row's start each cache moves down."""

    def __init__(self, model):
        first, *blocks = model.network
        self.model = model
        self.image_shape = model.config.image_shape
        self.first = MaskedConvolutionCache(first)
        self.blocks = [ResidualBlockSteps(block) for block in blocks]
        self.head = [pixel_weights(layer) for layer in model.head]

    def initial_state(self, batch, labels):
        del labels  # the residual network is unconditional
        width = self.image_shape[1]
        caches = [self.first.empty(width, batch), *[block.empty(width, batch) for block in self.blocks]]
        return _initial_state(self.image_shape, batch, caches)

    def start_row(self, row, state, labels):
        def next_row():  # every layer wrote the finished row pixel by pixel
            image_cache, *block_caches = state["caches"]
            caches = [self.first.next_row(image_cache),
                      *[block.next_row(cache) for block, cache in zip(self.blocks, block_caches)]]
            return {**state, "images": _with_row(state, row - 1), "caches": caches}

        return tf.cond(row > 0, next_row, lambda: state)

    def step(self, row, column, state, uniforms, labels):
        pixel = Pixel(column, tf.shape(uniforms)[0])
        image_cache, *block_caches = state["caches"]
        features = self.first.output(image_cache, pixel)
        for index, block in enumerate(self.blocks):
            features, block_caches[index] = block.step(features, block_caches[index], pixel)
        values = _draw_pixel(self.model, self.head, features, uniforms)
        image_cache = self.first.write(image_cache, pixel, 2.0 * values - 1.0)  # centred, as `call` sees it
        return _drawn(state, pixel, values, [image_cache, *block_caches])

    def images(self, state):
        return _final_images(state)


class CachedGatedSampler:
    """Gated PixelCNN ([2] Sec. 2.2): at a row's start the vertical stacks run on the row just
    finished; at each pixel the horizontal stacks run at the new pixel alone."""

    def __init__(self, model):
        self.model = model
        self.image_shape = model.config.image_shape
        self.layers = [GatedLayerSteps(layer) for layer in model.network]
        self.head = [pixel_weights(layer) for layer in model.head]

    def initial_state(self, batch, labels):
        width, channels = self.image_shape[1:]
        one_hot = self.model.one_hot_labels(labels)
        caches = [layer.empty(width, self.model.config.filters if index else channels, batch, one_hot)
                  for index, layer in enumerate(self.layers)]
        return _initial_state(self.image_shape, batch, caches)

    def start_row(self, row, state, labels):
        def next_row():
            inputs, caches = 2.0 * state["row"] - 1.0, []  # the finished row, centred as `call` sees it
            one_hot = self.model.one_hot_labels(labels)
            for layer, cache in zip(self.layers, state["caches"]):
                inputs, cache = layer.next_row(cache, inputs, one_hot)
                caches.append(cache)
            return {**state, "images": _with_row(state, row - 1), "caches": caches}

        return tf.cond(row > 0, next_row, lambda: state)

    def step(self, row, column, state, uniforms, labels):
        pixel = Pixel(column, tf.shape(uniforms)[0])
        features, caches = None, []
        for layer, cache in zip(self.layers, state["caches"]):
            features, cache = layer.step(cache, pixel, features)
            caches.append(cache)
        values = _draw_pixel(self.model, self.head, features, uniforms)
        caches[0] = self.layers[0].write_input(caches[0], pixel, 2.0 * values - 1.0)
        return _drawn(state, pixel, values, caches)

    def images(self, state):
        return _final_images(state)
