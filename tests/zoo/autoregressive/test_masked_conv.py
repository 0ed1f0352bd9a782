"""zoo.masked_conv: hand-written masks, raster-order causality by gradients, config and .keras round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.autoregressive.masked_conv import MaskedConv2D, causal_mask

SIZE = 7  # image height and width


def _stack(channels, colour_groups, first_mask="A", depth=3, filters=6):
    """One `first_mask` layer, then `depth - 1` mask-B layers, back to `channels` outputs."""
    widths = [filters] * (depth - 1) + [channels]
    layers = [
        MaskedConv2D(width, 3, "B" if i else first_mask, colour_groups=colour_groups,
                     activation="tanh" if i < depth - 1 else None,
                     bias_initializer="random_normal", name=f"masked_{i}")
        for i, width in enumerate(widths)
    ]
    return keras.Sequential([keras.Input((SIZE, SIZE, channels)), *layers])


def _jacobian(model, channels, seed=0):
    """d output[i, j, g] / d input[i', j', c] as [H·W, C, H·W, C], pixels in raster order."""
    image = tf.constant(np.random.default_rng(seed).normal(size=(1, SIZE, SIZE, channels)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(image)
        output = model(image)
    jacobian = tape.jacobian(output, image).numpy()
    return jacobian.reshape(SIZE * SIZE, channels, SIZE * SIZE, channels)


def test_mask_values_match_hand_written_3x3_grey_masks():
    above_and_left = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], np.float32)
    with_centre = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0]], np.float32)
    np.testing.assert_array_equal(causal_mask(3, 1, 1, "A")[..., 0, 0], above_and_left)
    np.testing.assert_array_equal(causal_mask(3, 1, 1, "B")[..., 0, 0], with_centre)
    # Whole-pixel conditioning of several channels: the same spatial mask on every pair.
    np.testing.assert_array_equal(
        causal_mask(3, 3, 6, "A"), np.broadcast_to(above_and_left[..., None, None], (3, 3, 3, 6)))


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_colour_centre_tap_lets_group_g_see_earlier_groups_and_type_b_its_own(mask_type):
    mask = causal_mask((3, 5), 3, 6, mask_type, colour_groups=3)
    # Inputs R, G, B; outputs two maps per group: [R R G G B B].
    a = np.array([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], np.float32)
    b = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]], np.float32)
    np.testing.assert_array_equal(mask[1, 2], a if mask_type == "A" else b)
    assert np.all(mask[0] == 1) and np.all(mask[1, :2] == 1)
    assert np.all(mask[1, 3:] == 0) and np.all(mask[2] == 0)


def test_channels_not_divisible_into_colour_groups_are_rejected():
    with pytest.raises(ValueError, match="colour groups"):
        MaskedConv2D(4, 3, "A", colour_groups=3)
    with pytest.raises(ValueError, match="mask_type"):
        causal_mask(3, 1, 1, "C")


@pytest.mark.parametrize("channels, colour_groups", [(1, 1), (3, 3)])
def test_output_pixel_has_zero_gradient_wrt_itself_and_later_pixels_through_a_type_a_stack(
    channels, colour_groups
):
    jacobian = _jacobian(_stack(channels, colour_groups), channels)
    for pixel in range(SIZE * SIZE):
        assert np.all(jacobian[pixel, :, pixel + 1:] == 0), f"pixel {pixel} sees a later pixel"
        for group in range(channels):
            # Group g sees only groups < g of its own pixel: R nothing, G only R, B only R and G.
            assert np.all(jacobian[pixel, group, pixel, group:] == 0)
            if group:
                assert np.all(jacobian[pixel, group, pixel, :group] != 0)
        if pixel:
            # The mask is not all zero: the previous pixel in raster order (or the one above) matters.
            previous = pixel - 1 if pixel % SIZE else pixel - SIZE
            assert np.all(jacobian[pixel, :, previous] != 0)


@pytest.mark.parametrize("channels, colour_groups", [(1, 1), (3, 3), (3, 1)])
def test_type_b_layer_sees_its_own_group_at_the_centre_and_type_a_does_not(channels, colour_groups):
    own = np.arange(SIZE * SIZE)
    for mask_type in ("A", "B"):
        model = _stack(channels, colour_groups, first_mask=mask_type, depth=1)
        centre = _jacobian(model, channels)[own, :, own]  # [pixels, out group, in group]
        later = np.triu(np.ones((channels, channels)), k=1 if mask_type == "B" else 0)
        if colour_groups == 1:
            later = np.zeros_like(later) if mask_type == "B" else np.ones_like(later)
        assert np.all(centre[:, later == 1] == 0)
        assert np.all(centre[:, later == 0] != 0)


def test_masked_kernel_entries_stay_trainable_but_get_zero_gradient():
    layer = MaskedConv2D(2, 3, "A")
    image = tf.ones((1, SIZE, SIZE, 1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(image) ** 2)
    gradient = tape.gradient(loss, layer.kernel).numpy()
    mask = causal_mask(3, 1, 2, "A")
    assert np.all(gradient[mask == 0] == 0) and np.all(gradient[mask == 1] != 0)
    assert len(layer.trainable_weights) == 2 and not layer.non_trainable_weights


def test_get_config_from_config_round_trip_gives_same_outputs():
    layer = MaskedConv2D(6, (5, 3), "B", colour_groups=3, activation="relu", use_bias=False)
    image = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    expected = layer(image)
    restored = MaskedConv2D.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    restored.build(image.shape)
    restored.set_weights(layer.get_weights())
    np.testing.assert_array_equal(restored(image), expected)


def test_keras_file_reload_gives_identical_outputs(tmp_path):
    model = _stack(3, 3)
    image = np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    path = tmp_path / "masked.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.layers[0], MaskedConv2D)
    np.testing.assert_array_equal(reloaded(image), model(image))
