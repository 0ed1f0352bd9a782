"""Stateless, per-example randomness for exported samplers.

A serving request carries one int64 seed per example. Each example's noise is a
pure function of (its seed, a stream id), so the same seed gives the same sample
whatever else is in the batch, and TF Serving may merge or split batches freely.
Only core TensorFlow ops are used (`StatelessRandomNormalV2` and
`StatelessRandomUniformV2` inside a `map_fn`).
"""

from __future__ import annotations

import tensorflow as tf


def _per_example(draw, seeds: tf.Tensor, shape, stream: int, dtype) -> tf.Tensor:
    """Stacks draw(shape, seed=[seeds[b], stream]) over the batch of seeds."""
    seeds = tf.cast(seeds, tf.int64)
    static_shape = [dim if isinstance(dim, int) else None for dim in shape]
    shape = tf.stack([tf.cast(dim, tf.int32) for dim in shape]) if shape else tf.constant([], tf.int32)
    return tf.map_fn(
        lambda seed: draw(shape, seed=tf.stack([seed, tf.constant(stream, tf.int64)])),
        seeds,
        fn_output_signature=tf.TensorSpec(static_shape, dtype),
    )


def per_example_normal(seeds: tf.Tensor, shape, stream: int) -> tf.Tensor:
    """Standard normal noise of shape [len(seeds), *shape], row b seeded by seeds[b].

    Args:
      seeds: int64 [batch] request seeds.
      shape: the per-example shape (a list, may hold scalar tensors).
      stream: distinguishes independent draws made from the same seed (e.g. one
        stream per stochastic layer).
    """
    return _per_example(tf.random.stateless_normal, seeds, shape, stream, tf.float32)


def per_example_uniform(seeds: tf.Tensor, shape, stream: int, minval=-1.0, maxval=1.0,
                        dtype=tf.float32) -> tf.Tensor:
    """Uniform draws on [minval, maxval) of shape [len(seeds), *shape], row b seeded by seeds[b].

    With an integer `dtype` the draws are integers in [minval, maxval), e.g. a
    class label per seed with `minval=0, maxval=num_classes, dtype=tf.int64`.
    """
    def draw(shape, seed):
        return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval, dtype=dtype)

    return _per_example(draw, seeds, shape, stream, dtype)
