"""zoo.common.signatures: the grid of inputs beside what the model made of them."""

import numpy as np
import tensorflow as tf

from zoo.common import signatures


def test_side_by_side_puts_each_input_right_before_its_counterpart():
    images = tf.reshape(tf.range(3 * 2 * 2, dtype=tf.float32), [3, 2, 2, 1])
    grid = signatures.side_by_side(images, -images).numpy()
    assert grid.shape == (6, 2, 2, 1)
    np.testing.assert_array_equal(grid[0::2], images.numpy())
    np.testing.assert_array_equal(grid[1::2], -images.numpy())
