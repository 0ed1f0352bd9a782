"""zoo.draw.attention: filterbanks at known parameters, and read and write at matching windows."""

import math

import numpy as np
import pytest
import tensorflow as tf

from zoo.draw import attention

HEIGHT, WIDTH = 9, 10


def _raw_parameters(centre_x, centre_y, stride, variance, intensity, grid_size):
    """The five outputs of W(h_dec) (Eq. 21) that give the window (g_X, g_Y, δ, σ², γ) by Eq. 22."""
    return np.array([2 * centre_x / (WIDTH + 1) - 1, 2 * centre_y / (HEIGHT + 1) - 1, math.log(variance),
                     math.log(stride * (grid_size - 1) / (max(HEIGHT, WIDTH) - 1)), math.log(intensity)],
                    np.float32)


def _filterbanks(grid_size, **window):
    layer = attention.AttentionWindow((HEIGHT, WIDTH, 1), grid_size)
    raw = _raw_parameters(grid_size=grid_size, **window)
    return [value.numpy() for value in layer.filterbanks(*[tf.constant([value]) for value in raw])]


def _fix_window(layer, raw):
    """Makes W(h_dec) emit `raw` whatever h_dec is: a zero kernel and the parameters as bias."""
    kernel, _ = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), raw])


def test_filterbank_rows_sum_to_one():
    rng = np.random.default_rng(0)
    filters = attention.filterbank(tf.constant(rng.uniform(1, WIDTH, 6), tf.float32),
                                   tf.constant(rng.uniform(0.2, 3, 6), tf.float32),
                                   tf.constant(rng.uniform(0.1, 5, 6), tf.float32), grid_size=4, length=WIDTH)
    np.testing.assert_allclose(tf.reduce_sum(filters, axis=-1), np.ones([6, 4]), rtol=1e-6)


@pytest.mark.parametrize("grid_size, centre, stride, expected_pixels", [
    (2, 5.5, 3.0, [4, 7]),      # μ^i = g + (i − N/2 − 0.5) δ, i = 1, 2: 5.5 ∓ 1.5
    (3, 5.0, 2.0, [3, 5, 7]),   # i = 1, 2, 3: 5 − 2, 5, 5 + 2
    (4, 5.5, 1.0, [4, 5, 6, 7]),
])
def test_grid_offset_puts_filter_i_at_g_plus_i_minus_n_over_2_minus_half_strides(grid_size, centre, stride,
                                                                                  expected_pixels):
    filter_y, filter_x, _ = _filterbanks(grid_size, centre_x=centre, centre_y=centre, stride=stride,
                                         variance=0.05, intensity=1.0)
    pixel_of_filter = np.argmax(filter_x[0], axis=-1) + 1  # pixel coordinates start at 1 (Eq. 22)
    np.testing.assert_array_equal(pixel_of_filter, expected_pixels)
    np.testing.assert_allclose(filter_x[0].max(axis=-1), 1.0, rtol=1e-3)  # σ² small: one pixel each
    np.testing.assert_array_equal(np.argmax(filter_y[0], axis=-1) + 1, expected_pixels)


def test_filterbank_exponent_divides_only_the_squared_distance_by_two_sigma_squared():
    variance, centre = 4.0, 5.0
    filters = attention.filterbank(tf.constant([centre]), tf.constant([1.0]), tf.constant([variance]),
                                   grid_size=1, length=WIDTH).numpy()[0, 0]
    pixels = np.arange(1, WIDTH + 1)
    expected = np.exp(-np.square(pixels - centre) / (2 * variance))
    np.testing.assert_allclose(filters, expected / expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(filters[7 - 1] / filters[5 - 1], math.exp(-4 / 8), rtol=1e-5)


def test_read_then_write_at_the_same_window_returns_the_patch_where_the_window_lies():
    grid_size, top, left = 3, 2, 4  # pixels (3..5) × (5..7) in 1-based coordinates
    rng = np.random.default_rng(1)
    images = rng.random((2, HEIGHT, WIDTH, 1)).astype(np.float32)
    decoder_state = rng.normal(size=(2, 5)).astype(np.float32)
    window = dict(centre_x=left + 2, centre_y=top + 2, stride=1.0, variance=1e-3, grid_size=grid_size)
    read = attention.AttentiveRead((HEIGHT, WIDTH, 1), grid_size)
    read.build((None, 5))
    _fix_window(read.window, _raw_parameters(intensity=2.0, **window))
    glimpse = read(images, 1 - images, decoder_state).numpy().reshape(2, grid_size, grid_size, 2)
    patch = images[:, top:top + grid_size, left:left + grid_size]
    np.testing.assert_allclose(glimpse[..., :1], 2.0 * patch, atol=1e-5)       # γ F_Y x F_Xᵀ
    np.testing.assert_allclose(glimpse[..., 1:], 2.0 * (1 - patch), atol=1e-5)  # γ F_Y x̂ F_Xᵀ

    write = attention.AttentiveWrite((HEIGHT, WIDTH, 1), grid_size)
    write.build((None, 5))
    _fix_window(write.window, _raw_parameters(intensity=2.0, **window))
    kernel, _ = write.patch.get_weights()
    write.patch.set_weights([np.zeros_like(kernel), patch[0].reshape(-1)])
    canvas = write(decoder_state).numpy()
    expected = np.zeros_like(images[0])
    expected[top:top + grid_size, left:left + grid_size] = patch[0] / 2.0  # (1/γ̂) F̂_Yᵀ w F̂_X
    np.testing.assert_allclose(canvas[0], expected, atol=1e-5)


def test_a_window_off_the_image_reads_zeros_not_nan():
    filters = attention.filterbank(tf.constant([500.0]), tf.constant([1.0]), tf.constant([0.01]),
                                   grid_size=2, length=WIDTH)
    assert np.all(np.isfinite(filters)) and np.all(filters.numpy() == 0)


def test_without_attention_read_is_image_and_error_and_write_covers_the_canvas():
    rng = np.random.default_rng(2)
    images = rng.random((2, HEIGHT, WIDTH, 1)).astype(np.float32)
    read = attention.FullRead((HEIGHT, WIDTH, 1))
    glimpse = read(images, 1 - images, tf.zeros([2, 5])).numpy().reshape(2, HEIGHT, WIDTH, 2)
    np.testing.assert_array_equal(glimpse[..., 0], images[..., 0])
    np.testing.assert_array_equal(glimpse[..., 1], 1 - images[..., 0])
    write = attention.FullWrite((HEIGHT, WIDTH, 1))
    assert write(tf.ones([2, 5])).shape == (2, HEIGHT, WIDTH, 1)


@pytest.mark.parametrize("centre_x, centre_y, stride, grid_size", [(5.5, 5.0, 1.0, 10), (4.0, 3.0, 1.5, 3)])
def test_the_drawn_window_box_spans_the_first_to_the_last_filter_centre(centre_x, centre_y, stride, grid_size):
    window = attention.AttentionWindow((HEIGHT, WIDTH, 1), grid_size)
    window.build((None, 4))
    _fix_window(window.parameters, _raw_parameters(centre_x, centre_y, stride, 1.0, 1.0, grid_size))
    box = window.box(tf.zeros([1, 4])).numpy()[0]
    half = (grid_size - 1) / 2 * stride  # μ^1 and μ^N lie this far from the centre (Eq. 19)
    expected = [(centre_y - half - 1) / (HEIGHT - 1), (centre_x - half - 1) / (WIDTH - 1),
                (centre_y + half - 1) / (HEIGHT - 1), (centre_x + half - 1) / (WIDTH - 1)]
    np.testing.assert_allclose(box, expected, atol=1e-5)


def test_a_box_is_outlined_on_the_pixels_of_its_edges_in_every_channel():
    images = tf.zeros([1, HEIGHT, WIDTH, 3])
    # Rows 2 … 6 and columns 3 … 8 (0-based): fractions of (HEIGHT − 1) and (WIDTH − 1).
    box = tf.constant([[2 / (HEIGHT - 1), 3 / (WIDTH - 1), 6 / (HEIGHT - 1), 8 / (WIDTH - 1)]])
    outlined = attention.draw_boxes(images, box, intensity=0.5).numpy()[0]
    expected = np.zeros((HEIGHT, WIDTH))
    expected[2:7, 3] = expected[2:7, 8] = expected[2, 3:9] = expected[6, 3:9] = 0.5
    for channel in range(3):
        np.testing.assert_array_equal(outlined[..., channel], expected)
