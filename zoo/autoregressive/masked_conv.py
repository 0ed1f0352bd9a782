"""Masked convolutions for autoregressive image models (PixelCNN, PixelRNN).

A pixel may depend only on the pixels before it in raster order (rows top to
bottom, left to right within a row), and, for colour images, channel R on
nothing of its own pixel, G on R, B on R and G ([1], Sec. 3.4, Fig. 2):

    p(x) = Π_i p(x_{i,R} | x_{<i}) p(x_{i,G} | x_{<i}, x_{i,R}) p(x_{i,B} | x_{<i}, x_{i,R}, x_{i,G}).

Multiplying a convolution kernel by a fixed binary mask enforces this. For a
kernel centred at (c_y, c_x), the mask keeps every tap in the rows above the
centre and the taps left of the centre in its row, and drops every tap after
the centre. At the centre tap the feature maps of every layer are split into
`colour_groups` contiguous blocks (R | G | B); output block g sees input
blocks h < g under mask A (the first layer, which must not see the pixel it
predicts) and h ≤ g under mask B (every later layer, whose inputs at the centre
already exclude what they must not see). With `colour_groups = 1` the centre
tap is dropped (A) or kept (B) whole: whole-pixel conditioning, as for grey
images or for PixelCNN++, which models the channels of a pixel jointly ([2],
Sec. 2.2).

References:
  [1] van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks.
      ICML 2016, arXiv:1601.06759.
  [2] Salimans, Karpathy, Chen, Kingma. PixelCNN++: Improving the PixelCNN with
      Discretized Logistic Mixture Likelihood and Other Modifications. ICLR 2017,
      arXiv:1701.05517.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

MASK_TYPES = ("A", "B")


def _pair(kernel_size) -> tuple[int, int]:
    if isinstance(kernel_size, int):
        return (kernel_size, kernel_size)
    return tuple(int(k) for k in kernel_size)


def _colour_group(channels: int, colour_groups: int) -> np.ndarray:
    """Group of each channel when `channels` are split into contiguous blocks."""
    if channels % colour_groups:
        raise ValueError(
            f"{channels} channels cannot be split into {colour_groups} colour groups; "
            "use a multiple of colour_groups"
        )
    return np.arange(channels) // (channels // colour_groups)


def causal_mask(kernel_size, in_channels: int, out_channels: int, mask_type: str,
                colour_groups: int = 1) -> np.ndarray:
    """The binary mask M of a masked convolution ([1], Sec. 3.4), shape [k_h, k_w, in, out].

    With the centre (c_y, c_x) = ((k_h − 1) // 2, (k_w − 1) // 2), the tap that
    "same" padding aligns with the output pixel, and g(·) the colour group of
    a channel (contiguous blocks of `channels / colour_groups`):

        M[r, c, i, o] = 1                 if r < c_y, or r = c_y and c < c_x,
                        [g(o) > g(i)]     at (c_y, c_x) for mask A,
                        [g(o) ≥ g(i)]     at (c_y, c_x) for mask B,
                        0                 otherwise.

    Args:
      kernel_size: int or (k_h, k_w).
      in_channels, out_channels: both multiples of `colour_groups`.
      mask_type: "A" (excludes the centre pixel's own and later groups) or "B".
      colour_groups: 3 for R, G, B sub-pixel conditioning; 1 for whole pixels.

    Returns:
      float32 numpy array.
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type={mask_type!r}; expected one of {MASK_TYPES}")
    k_h, k_w = _pair(kernel_size)
    c_y, c_x = (k_h - 1) // 2, (k_w - 1) // 2
    mask = np.zeros((k_h, k_w, in_channels, out_channels), np.float32)
    mask[:c_y] = 1.0
    mask[c_y, :c_x] = 1.0
    in_group = _colour_group(in_channels, colour_groups)[:, None]
    out_group = _colour_group(out_channels, colour_groups)[None, :]
    centre = out_group > in_group if mask_type == "A" else out_group >= in_group
    mask[c_y, c_x] = centre
    return mask


@keras.saving.register_keras_serializable(package="zoo")
class MaskedConv2D(keras.layers.Layer):
    """y = (W ⊙ M) ∗ x + b: a stride-1, "same"-padded convolution whose kernel W is
    multiplied by the constant causal mask M = `causal_mask(...)` ([1], Sec. 3.4).

    M is built once in `build`; `call` multiplies it into the kernel, so the
    trainable kernel keeps its masked-out entries (they receive zero gradient)
    and no variable is ever assigned. Input is channels-last [batch, H, W, C].

    Args:
      filters: output channels, a multiple of `colour_groups`.
      kernel_size: int or (k_h, k_w); [1]'s PixelCNN uses 7×7 for the first layer
        (mask A), then 3×3 and 1×1 (mask B) (Table 1).
      mask_type: "A" or "B".
      colour_groups: 3 to condition R → G → B within a pixel ([1]); 1 for grey
        images or whole-pixel conditioning ([2]).
      activation, use_bias, kernel_initializer, bias_initializer: as in
        `keras.layers.Conv2D`.
    """

    def __init__(self, filters: int, kernel_size, mask_type: str, colour_groups: int = 1,
                 activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type={mask_type!r}; expected one of {MASK_TYPES}")
        _colour_group(filters, colour_groups)
        self.filters = filters
        self.kernel_size = _pair(kernel_size)
        self.mask_type = mask_type
        self.colour_groups = colour_groups
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        mask = causal_mask(self.kernel_size, in_channels, self.filters, self.mask_type,
                           self.colour_groups)
        self.kernel = self.add_weight(
            shape=mask.shape, initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = (
            self.add_weight(shape=(self.filters,), initializer=self.bias_initializer, name="bias")
            if self.use_bias else None
        )
        with tf.init_scope():  # an eager constant, safe to capture in any later tf.function
            self.mask = tf.constant(mask)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})

    def call(self, inputs):
        kernel = tf.convert_to_tensor(self.kernel)
        outputs = tf.nn.conv2d(inputs, kernel * tf.cast(self.mask, kernel.dtype),
                               strides=1, padding="SAME")
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "mask_type": self.mask_type,
            "colour_groups": self.colour_groups,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
