"""What every family's `train_step` and `test_step` do alike: the global batch, the
per-replica training seed, and the metric trackers."""

from __future__ import annotations

from typing import Mapping

import keras
import tensorflow as tf


def global_batch_size(images: tf.Tensor) -> tf.Tensor:
    """The batch over all replicas, as float32: per-example terms are summed and divided by it,
    since Keras scales only its own loss objects under tf.distribute."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return tf.cast(tf.shape(images)[0] * replicas, tf.float32)


def replica_seed(seed_generator: keras.random.SeedGenerator) -> tf.Tensor:
    """A stateless seed for this step on this replica: the model's SeedGenerator advanced
    once, folded with the replica id so replicas draw different noise."""
    seed = tf.cast(seed_generator.next(), tf.int64)
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int64))


def update_trackers(trackers: Mapping[str, keras.metrics.Metric], terms: Mapping[str, tf.Tensor]) -> dict:
    """Updates each tracker with the term of its name; returns name → result, `fit`'s logs."""
    for name, tracker in trackers.items():
        tracker.update_state(terms[name])
    return {name: tracker.result() for name, tracker in trackers.items()}
