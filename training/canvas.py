"""MNIST digits placed on a larger black canvas: what the multi-digit datasets are drawn with."""

from __future__ import annotations

import tensorflow as tf

DIGIT_SIZE = 28


def paste_digits(digits: tf.Tensor, corners: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [k, 28, 28, 1] digits (k static), int64 [k, 2] top-left corners (row, column) → uint8 [size, size, 1].

    Intensities are added and clipped at white where digits overlap (Gregor et al. 2015, Sec. 4.2).
    """
    margin = size - DIGIT_SIZE
    placed = [tf.pad(tf.cast(digits[k], tf.int32), [[corners[k, 0], margin - corners[k, 0]],
                                                     [corners[k, 1], margin - corners[k, 1]], [0, 0]])
              for k in range(digits.shape[0])]
    canvas = tf.cast(tf.minimum(tf.add_n(placed), 255), tf.uint8)
    return tf.ensure_shape(canvas, [size, size, 1])
