"""Variational bounds on log p(x) from importance log-weights.

All functions take log-weights `log w_j = log p(x, h_j) - log q(h_j | x)` for
samples h_1..h_k ~ q(h | x), stacked on an explicit sample axis (axis 0 by
default), and reduce that axis. They know nothing about networks.

References:
  [1] Kingma, Welling. Auto-Encoding Variational Bayes. ICLR 2014, arXiv:1312.6114.
  [2] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016,
      arXiv:1509.00519.
"""

from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from zoo.common.stateless import ROWS_PER_BLOCK


def log_mean_exp(values: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """log (1/n) Σ_j exp(values_j) along `axis`, without overflow.

    Computed as logsumexp(values) - log n; logsumexp subtracts the maximum first.
    """
    count = tf.cast(tf.shape(values)[axis], values.dtype)
    return tf.reduce_logsumexp(values, axis=axis) - tf.math.log(count)


def elbo(log_weights: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """Monte Carlo ELBO, (1/k) Σ_j log w_j ([1], Eq. 3; [2], Eq. 3).

    With k > 1 this is the "VAE, k samples" estimator of [2], Table 1: the
    samples are averaged outside the log, so the bound itself does not tighten.
    """
    return tf.reduce_mean(log_weights, axis=axis)


def iwae_bound(log_weights: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """Importance-weighted bound L_k = log (1/k) Σ_j w_j ([2], Eq. 8).

    L_1 is the ELBO, L_k ≤ L_{k+1} in expectation, and L_k → log p(x) as k → ∞
    ([2], Theorem 1).
    """
    return log_mean_exp(log_weights, axis=axis)


def iwae_bound_in_chunks(
    log_weights_of_samples: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    num_samples: tf.Tensor,
    samples_per_chunk: tf.Tensor | int,
    dtype: tf.DType = tf.float32,
) -> tf.Tensor:
    """L_k per example ([2], Eq. 8), k = num_samples[b], summed over the sample axis in chunks.

    Memory is bounded by one chunk of log-weights (and whatever computing them
    takes), not by k: chunk results are combined by a running log-sum-exp,
    log Σ_{j<k} w_j = logsumexp(log Σ_{chunk 1} w_j, log Σ_{chunk 2} w_j, …).

    Args:
      log_weights_of_samples: (start, count) → [count, batch] log w_j of samples
        j = start … start + count − 1 of every example. Sample j must not depend on
        how the samples are chunked (e.g. noise drawn per sample index, see
        `zoo.common.stateless.per_example_normal_rows`), so the result does not either,
        up to float rounding.
      num_samples: int [batch], k ≥ 1 per example; example b uses only its first
        num_samples[b] samples, so one batch can mix examples asking for different k.
      samples_per_chunk: samples of every example per chunk (≥ 1).
      dtype: the dtype of the log-weights.
    """
    num_samples = tf.cast(num_samples, tf.int32)
    largest = tf.reduce_max(num_samples)
    per_chunk = tf.cast(samples_per_chunk, tf.int32)

    def add_chunk(start, log_total):
        count = tf.minimum(per_chunk, largest - start)
        log_weights = log_weights_of_samples(start, count)
        used = (start + tf.range(count))[:, None] < num_samples[None, :]
        chunk = tf.reduce_logsumexp(tf.where(used, log_weights, tf.constant(-math.inf, dtype)), axis=0)
        return start + count, tf.reduce_logsumexp(tf.stack([log_total, chunk]), axis=0)

    empty = tf.fill(tf.shape(num_samples), tf.constant(-math.inf, dtype))
    _, log_total = tf.while_loop(lambda start, _: start < largest, add_chunk, [tf.constant(0), empty])
    return log_total - tf.math.log(tf.cast(num_samples, log_total.dtype))


def iwae_bound_per_example(
    log_weights_of_samples: Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor],
    examples: tf.Tensor,
    num_samples: tf.Tensor,
    seeds: tf.Tensor,
    samples_per_chunk: int,
) -> tf.Tensor:
    """L_k per example ([2], Eq. 8), k = num_samples[b], in memory bounded by `samples_per_chunk`.

    Examples go in groups of at most samples_per_chunk / ROWS_PER_BLOCK, and each group's
    samples are summed by `iwae_bound_in_chunks` in chunks of samples_per_chunk
    (examples × samples), whole noise blocks (`zoo.common.stateless.per_example_normal_rows`)
    per example. Neither memory nor the value of an example depends on the rest of the batch.

    Args:
      log_weights_of_samples: (examples, seeds, start, count) → [count, len(examples)] log w_j
        of samples j = start … start + count − 1, sample j drawn from (seeds[b], j) alone.
      examples: [batch, ...], grouped along axis 0 with `seeds`.
      num_samples: int [batch], k ≥ 1 per example (checked).
      seeds: int64 [batch].
      samples_per_chunk: examples × samples computed at once.
    """
    num_samples = tf.cast(num_samples, tf.int32)
    tf.debugging.assert_positive(num_samples, "num_importance_samples must be >= 1")
    examples_per_group = max(1, samples_per_chunk // ROWS_PER_BLOCK)
    batch = tf.shape(examples)[0]

    def group_bound(start, bounds_so_far):
        end = tf.minimum(start + examples_per_group, batch)
        group, group_seeds = examples[start:end], seeds[start:end]
        blocks_per_example = tf.maximum(1, examples_per_group // (end - start))
        bound = iwae_bound_in_chunks(
            lambda first_sample, count: log_weights_of_samples(group, group_seeds, first_sample, count),
            num_samples[start:end], blocks_per_example * ROWS_PER_BLOCK)
        return end, bounds_so_far.write(bounds_so_far.size(), bound)

    empty = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False,
                           element_shape=tf.TensorShape([None]))
    _, per_group = tf.while_loop(lambda start, _: start < batch, group_bound, [tf.constant(0), empty])
    return tf.cond(batch > 0, per_group.concat, lambda: tf.zeros([0]))
