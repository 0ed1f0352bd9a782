"""Metrics shared by latent-variable models."""

from __future__ import annotations

import keras
import tensorflow as tf

ACTIVITY_THRESHOLD = 1e-2
"""A latent unit u is active when Cov_x(E_{q(u|x)}[u]) > 10^-2 (Burda et al. 2016, Sec. 5.2)."""


@keras.saving.register_keras_serializable(package="zoo")
class ActiveUnits(keras.metrics.Metric):
    """Counts active latent units: A_u = Cov_x(E_{q(u|x)}[u]) > ACTIVITY_THRESHOLD.

    `update_state(posterior_means)` takes E_q[u | x] for a batch, shape [batch,
    units]; the metric keeps the count, sum and sum of squares per unit, so the
    variance over the whole dataset is exact however it is batched or split
    across replicas.
    """

    def __init__(self, units: int, name: str = "active_units", **kwargs):
        super().__init__(name=name, **kwargs)
        self.units = units
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")
        self.total = self.add_variable(shape=(units,), initializer="zeros", name="total")
        self.total_squares = self.add_variable(
            shape=(units,), initializer="zeros", name="total_squares"
        )

    def update_state(self, posterior_means, sample_weight=None):
        posterior_means = tf.cast(posterior_means, self.dtype)
        self.count.assign_add(tf.cast(tf.shape(posterior_means)[0], self.dtype))
        self.total.assign_add(tf.reduce_sum(posterior_means, axis=0))
        self.total_squares.assign_add(tf.reduce_sum(tf.square(posterior_means), axis=0))

    def result(self):
        count = tf.maximum(self.count, 1.0)
        mean = self.total / count
        variance = self.total_squares / count - tf.square(mean)
        return tf.reduce_sum(tf.cast(variance > ACTIVITY_THRESHOLD, self.dtype))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
