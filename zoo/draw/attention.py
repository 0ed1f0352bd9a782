"""DRAW's read and write operations, with and without selective attention.

Gregor, Danihelka, Graves, Rezende, Wierstra. DRAW: A Recurrent Neural Network For
Image Generation. ICML 2015, arXiv:1502.04623, Sec. 3.

An N × N grid of 2-D Gaussian filters is placed on a B × A image (B rows, A columns)
by five numbers a linear layer emits from the decoder state (Eq. 21):
(g̃_X, g̃_Y, log σ², log δ̃, log γ) = W(h_dec). The grid centre (g_X, g_Y) and the
stride δ are scaled to the image (Eq. 22); filter i of the grid is centred at

    μ_X^i = g_X + (i − N/2 − 0.5) δ,   μ_Y^j = g_Y + (j − N/2 − 0.5) δ,   i, j = 1 … N   (Eq. 19)

and the filterbank matrices are

    F_X[i, a] = exp(−(a − μ_X^i)² / 2σ²) / Z_X,   F_Y[j, b] = exp(−(b − μ_Y^j)² / 2σ²) / Z_Y   (Sec. 3.2)

with Z_X, Z_Y normalising each row to sum to one. Pixel coordinates a, b run from 1,
so g̃ = 0 is the image centre (A + 1)/2. Images carry a channel axis; every channel is
filtered alike. AlignDRAW (Mansimov et al. 2016) reads and writes the same way.
"""

from __future__ import annotations

import keras
import tensorflow as tf

FILTER_NORMALISER_FLOOR = 1e-8
"""Smallest row sum Z a filterbank is divided by: a grid placed far off the image has rows of
near-zero weights, which then stay near zero instead of becoming 0/0."""


def filterbank(centre: tf.Tensor, stride: tf.Tensor, variance: tf.Tensor, grid_size: int, length: int) -> tf.Tensor:
    """F [batch, N, length] for one image axis (Eq. 19; Sec. 3.2).

    Args:
      centre: [batch] grid centre g in pixel coordinates 1 … length.
      stride: [batch] δ, pixels between neighbouring filters.
      variance: [batch] σ², the isotropic variance of every filter.
      grid_size: N.
      length: pixels along the axis (A or B).
    """
    grid = tf.range(1, grid_size + 1, dtype=tf.float32) - grid_size / 2 - 0.5
    means = centre[:, None] + grid[None, :] * stride[:, None]               # μ^i, Eq. 19
    pixels = tf.range(1, length + 1, dtype=tf.float32)
    squared_distance = tf.square(pixels[None, None, :] - means[:, :, None])  # (a − μ^i)²
    weights = tf.exp(-squared_distance / (2.0 * variance[:, None, None]))
    return weights / tf.maximum(tf.reduce_sum(weights, axis=-1, keepdims=True), FILTER_NORMALISER_FLOOR)


@keras.saving.register_keras_serializable(package="zoo")
class AttentionWindow(keras.layers.Layer):
    """h_dec → (F_Y [batch, N, B], F_X [batch, N, A], γ [batch]): a linear layer, then Eq. 22."""

    def __init__(self, image_shape, grid_size: int, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.grid_size = grid_size
        self.parameters = keras.layers.Dense(5)  # g̃_X, g̃_Y, log σ², log δ̃, log γ (Eq. 21)

    def build(self, input_shape):
        self.parameters.build(input_shape)

    def call(self, decoder_state):
        centre_x, centre_y, log_variance, log_stride, log_intensity = tf.unstack(
            self.parameters(decoder_state), axis=-1)
        return self.filterbanks(centre_x, centre_y, log_variance, log_stride, log_intensity)

    def _grid(self, centre_x, centre_y, log_stride):
        """(g_X, g_Y, δ) in pixel coordinates (Eq. 22), each [batch]."""
        height, width = self.image_shape[:2]
        g_x = (width + 1) / 2 * (centre_x + 1)
        g_y = (height + 1) / 2 * (centre_y + 1)
        return g_x, g_y, (max(width, height) - 1) / max(self.grid_size - 1, 1) * tf.exp(log_stride)

    def filterbanks(self, centre_x, centre_y, log_variance, log_stride, log_intensity):
        """Eq. 22 from the raw parameters of Eq. 21, each [batch]."""
        height, width = self.image_shape[:2]
        g_x, g_y, stride = self._grid(centre_x, centre_y, log_stride)
        variance = tf.exp(log_variance)
        return (filterbank(g_y, stride, variance, self.grid_size, height),
                filterbank(g_x, stride, variance, self.grid_size, width),
                tf.exp(log_intensity))

    def box(self, decoder_state):
        """[batch, 4]: (y_min, x_min, y_max, x_max) of the filter centres μ^1 … μ^N (Eq. 19), as fractions
        of the image (0 and 1 the centres of its first and last pixels), for drawing the window."""
        centre_x, centre_y, _, log_stride, _ = tf.unstack(self.parameters(decoder_state), axis=-1)
        g_x, g_y, stride = self._grid(centre_x, centre_y, log_stride)
        half = (self.grid_size - 1) / 2 * stride
        height, width = self.image_shape[:2]
        return tf.stack([(g_y - half - 1) / max(height - 1, 1), (g_x - half - 1) / max(width - 1, 1),
                         (g_y + half - 1) / max(height - 1, 1), (g_x + half - 1) / max(width - 1, 1)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape, "grid_size": self.grid_size}


def draw_boxes(images: tf.Tensor, boxes: tf.Tensor, intensity: float = 0.5) -> tf.Tensor:
    """Images [batch, H, W, C] with each example's box (y_min, x_min, y_max, x_max, fractions) outlined
    at `intensity` in every channel (`tf.image.draw_bounding_boxes`, which takes 1, 3 or 4 channels)."""
    channels = images.shape[-1]
    single = tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [-1, *images.shape[1:3], 1])
    outlined = tf.image.draw_bounding_boxes(single, tf.repeat(boxes, channels, axis=0)[:, None, :],
                                            tf.constant([[intensity]], tf.float32))
    return tf.transpose(tf.reshape(outlined, [-1, channels, *images.shape[1:3]]), [0, 2, 3, 1])


def read_window(images: tf.Tensor, filter_y: tf.Tensor, filter_x: tf.Tensor) -> tf.Tensor:
    """F_Y x F_Xᵀ per channel: [batch, B, A, C] → [batch, N, N, C] (Sec. 3.3, without γ)."""
    return tf.einsum("bjh,bhwc,biw->bjic", filter_y, images, filter_x)


def write_window(patch: tf.Tensor, filter_y: tf.Tensor, filter_x: tf.Tensor) -> tf.Tensor:
    """F_Yᵀ w F_X per channel: [batch, N, N, C] → [batch, B, A, C] (Sec. 3.3, without 1/γ)."""
    return tf.einsum("bjh,bjic,biw->bhwc", filter_y, patch, filter_x)


@keras.saving.register_keras_serializable(package="zoo")
class AttentiveRead(keras.layers.Layer):
    """read(x, x̂, h_dec_{t−1}) = γ [F_Y x F_Xᵀ, F_Y x̂ F_Xᵀ], flattened (Sec. 3.3)."""

    def __init__(self, image_shape, grid_size: int, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.grid_size = grid_size
        self.window = AttentionWindow(image_shape, grid_size, name="read_window")

    def build(self, input_shape):
        self.window.build(input_shape)

    def call(self, images, error_images, decoder_state):
        filter_y, filter_x, intensity = self.window(decoder_state)
        glimpses = [read_window(image, filter_y, filter_x) for image in (images, error_images)]
        glimpse = intensity[:, None, None, None] * tf.concat(glimpses, axis=-1)
        return tf.reshape(glimpse, [tf.shape(images)[0], self.output_size])

    @property
    def output_size(self) -> int:
        return 2 * self.grid_size**2 * self.image_shape[-1]

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape, "grid_size": self.grid_size}


@keras.saving.register_keras_serializable(package="zoo")
class AttentiveWrite(keras.layers.Layer):
    """write(h_dec_t) = (1/γ̂) F̂_Yᵀ w_t F̂_X, w_t = W(h_dec_t) an N × N patch (Sec. 3.3).

    The window (F̂_Y, F̂_X, γ̂) has its own parameters, apart from the read's.
    """

    def __init__(self, image_shape, grid_size: int, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.grid_size = grid_size
        self.patch = keras.layers.Dense(grid_size**2 * self.image_shape[-1], name="write_patch")
        self.window = AttentionWindow(image_shape, grid_size, name="write_window")

    def build(self, input_shape):
        self.patch.build(input_shape)
        self.window.build(input_shape)

    def call(self, decoder_state):
        patch = tf.reshape(self.patch(decoder_state), [-1, self.grid_size, self.grid_size, self.image_shape[-1]])
        filter_y, filter_x, intensity = self.window(decoder_state)
        return write_window(patch, filter_y, filter_x) / intensity[:, None, None, None]

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape, "grid_size": self.grid_size}


@keras.saving.register_keras_serializable(package="zoo")
class FullRead(keras.layers.Layer):
    """read(x, x̂, h_dec_{t−1}) = [x, x̂], flattened: DRAW without attention (Sec. 3.1)."""

    def __init__(self, image_shape, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)

    def call(self, images, error_images, decoder_state):
        del decoder_state  # reads the whole image whatever the decoder did
        return tf.reshape(tf.concat([images, error_images], axis=-1), [tf.shape(images)[0], self.output_size])

    @property
    def output_size(self) -> int:
        return 2 * self.image_shape[0] * self.image_shape[1] * self.image_shape[-1]

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape}


@keras.saving.register_keras_serializable(package="zoo")
class FullWrite(keras.layers.Layer):
    """write(h_dec_t) = W(h_dec_t), a linear map onto the whole canvas (Sec. 3.1)."""

    def __init__(self, image_shape, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        height, width, channels = self.image_shape
        self.canvas_update = keras.layers.Dense(height * width * channels, name="canvas_update")

    def build(self, input_shape):
        self.canvas_update.build(input_shape)

    def call(self, decoder_state):
        return tf.reshape(self.canvas_update(decoder_state), [-1, *self.image_shape])

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape}
