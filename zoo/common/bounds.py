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

import tensorflow as tf


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


def iwae_bound(
    log_weights: tf.Tensor, axis: int = 0, num_samples: tf.Tensor | None = None
) -> tf.Tensor:
    """Importance-weighted bound L_k = log (1/k) Σ_j w_j ([2], Eq. 8).

    L_1 is the ELBO, L_k ≤ L_{k+1} in expectation, and L_k → log p(x) as k → ∞
    ([2], Theorem 1).

    Args:
      log_weights: log w_j with the k samples on `axis`.
      axis: the sample axis.
      num_samples: optional per-example k (shape = log_weights' shape without
        `axis`): only the first num_samples[b] weights of example b count, so one
        batch can mix examples asking for different k.
    """
    if num_samples is None:
        return log_mean_exp(log_weights, axis=axis)
    log_weights = tf.convert_to_tensor(log_weights)
    sample_index = tf.range(tf.shape(log_weights)[axis])
    sample_index = tf.reshape(
        sample_index,
        [-1 if dim == axis % log_weights.shape.rank else 1 for dim in range(log_weights.shape.rank)],
    )
    count = tf.expand_dims(tf.cast(num_samples, sample_index.dtype), axis)
    masked = tf.where(
        sample_index < count, log_weights, tf.constant(-math.inf, log_weights.dtype)
    )
    return tf.reduce_logsumexp(masked, axis=axis) - tf.math.log(
        tf.cast(num_samples, log_weights.dtype)
    )
