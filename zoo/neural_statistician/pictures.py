"""Sets drawn as images in [0, 1], for sample grids, TensorBoard and `sample_png`.

Core TensorFlow ops only, so the pictures serve from a SavedModel.
"""

from __future__ import annotations

import tensorflow as tf

HISTOGRAM_RANGE = (-5.0, 5.0)  # covers the synthetic sets' means in [−1, 1] with a few of their stddevs (≤ √2)


def side_by_side_items(items: tf.Tensor) -> tf.Tensor:
    """Image sets [N, S, H, W, C] → [N, H, S·W, C], the items in a row."""
    transposed = tf.transpose(items, [0, 2, 1, 3, 4])  # [N, H, S, W, C]
    shape = tf.shape(items)
    return tf.reshape(transposed, [shape[0], shape[2], shape[1] * shape[3], shape[4]])


def point_clouds(points: tf.Tensor, image_shape) -> tf.Tensor:
    """Point sets [N, S, 2], (x, y) in pixels with x to the right and y up (spatial MNIST,
    `training.data.spatial_mnist_sets`) → images [N, H, W, C]: white where a point falls, brighter where
    several do (each point adds 1/2, clipped at 1); points off the canvas are not drawn."""
    height, width, channels = image_shape
    columns = tf.cast(tf.floor(points[..., 0]), tf.int32)
    rows = height - 1 - tf.cast(tf.floor(points[..., 1]), tf.int32)
    inside = tf.cast((columns >= 0) & (columns < width) & (rows >= 0) & (rows < height), tf.float32)
    pixels = tf.one_hot(tf.clip_by_value(rows, 0, height - 1), height)[..., :, None] * \
        tf.one_hot(tf.clip_by_value(columns, 0, width - 1), width)[..., None, :]  # [N, S, H, W]
    canvas = tf.clip_by_value(0.5 * tf.einsum("nshw,ns->nhw", pixels, inside), 0.0, 1.0)
    return tf.tile(canvas[..., None], [1, 1, 1, channels])


def histograms(values: tf.Tensor, image_shape) -> tf.Tensor:
    """1-D sets [N, S] → histograms [N, H, W, C]: one bin per column over `HISTOGRAM_RANGE`, each bar's height
    its count relative to the set's fullest bin, white on black."""
    height, width, channels = image_shape
    low, high = HISTOGRAM_RANGE
    bins = tf.cast(tf.floor((values - low) / (high - low) * width), tf.int32)
    inside = tf.cast((bins >= 0) & (bins < width), tf.float32)
    counts = tf.einsum("nsw,ns->nw", tf.one_hot(tf.clip_by_value(bins, 0, width - 1), width), inside)
    heights = counts / tf.maximum(tf.reduce_max(counts, axis=-1, keepdims=True), 1.0) * height  # [N, W] in pixels
    from_bottom = tf.cast(tf.range(height - 1, -1, -1), tf.float32)  # row r is height − 1 − r pixels up
    bars = tf.cast(from_bottom[None, :, None] < tf.round(heights)[:, None, :], tf.float32)  # [N, H, W]
    return tf.tile(bars[..., None], [1, 1, 1, channels])
