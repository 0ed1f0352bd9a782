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


ROWS_PER_BLOCK = 64  # rows of `per_example_normal_rows` drawn per seed derivation
_BLOCK_STRIDE = 1 << 20  # block b of stream s is seeded [seed, s + b * stride]: distinct for s < 2^20


def per_example_normal_rows(seeds: tf.Tensor, start, count, units: int, stream: int) -> tf.Tensor:
    """Rows start … start + count − 1 of an unending [∞, units] standard normal sequence per seed.

    Returns [len(seeds), count, units]. Row j is a pure function of (seeds[b], stream, j):
    rows come in blocks of ROWS_PER_BLOCK, block i drawn with seed [seeds[b], stream + i·2^20],
    so a long sequence can be consumed in chunks of any size (e.g. importance samples
    summed chunk by chunk, `zoo.common.bounds.iwae_bound_in_chunks`) and give the same rows.
    """
    start, count = tf.cast(start, tf.int64), tf.cast(count, tf.int64)
    first_block = start // ROWS_PER_BLOCK
    blocks = (start + count - 1) // ROWS_PER_BLOCK - first_block + 1
    offset = start - first_block * ROWS_PER_BLOCK

    def draw(shape, seed):  # seed: [seeds[b], stream]
        del shape  # [count, units], cut from whole blocks below

        def block(index):
            block_seed = tf.stack([seed[0], seed[1] + index * _BLOCK_STRIDE])
            return tf.random.stateless_normal([ROWS_PER_BLOCK, units], seed=block_seed)

        drawn = tf.map_fn(block, first_block + tf.range(blocks),
                          fn_output_signature=tf.TensorSpec([ROWS_PER_BLOCK, units], tf.float32))
        return tf.reshape(drawn, [-1, units])[offset:offset + count]

    return _per_example(draw, seeds, [count, units], stream, tf.float32)
