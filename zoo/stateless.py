"""Stateless, per-example randomness for exported samplers.

A serving request carries one int64 seed per example. Each example's noise is a
pure function of (its seed, a stream id), so the same seed gives the same sample
whatever else is in the batch, and TF Serving may merge or split batches freely.
Only core TensorFlow ops are used (`StatelessRandomNormalV2` inside a `map_fn`).
"""

from __future__ import annotations

import tensorflow as tf


def per_example_normal(seeds: tf.Tensor, shape, stream: int) -> tf.Tensor:
    """Standard normal noise of shape [len(seeds), *shape], row b seeded by seeds[b].

    Args:
      seeds: int64 [batch] request seeds.
      shape: the per-example shape (a list, may hold scalar tensors).
      stream: distinguishes independent draws made from the same seed (e.g. one
        stream per stochastic layer).
    """
    seeds = tf.cast(seeds, tf.int64)
    static_shape = [dim if isinstance(dim, int) else None for dim in shape]
    shape = tf.stack([tf.cast(dim, tf.int32) for dim in shape])

    def draw(seed):
        return tf.random.stateless_normal(
            shape, seed=tf.stack([seed, tf.constant(stream, tf.int64)])
        )

    return tf.map_fn(
        draw, seeds, fn_output_signature=tf.TensorSpec(static_shape, tf.float32)
    )
