"""zoo.common.stateless: each row is a pure function of (its seed, stream)."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.common.stateless import per_example_normal, per_example_uniform

SEEDS = tf.constant([3, 141, -7, 2**40, 0], tf.int64)


@pytest.mark.parametrize("shape", [[4], [3, 2]])
def test_row_depends_only_on_its_seed_and_stream(shape):
    batch = per_example_normal(SEEDS, shape, stream=1).numpy()
    assert batch.shape == (len(SEEDS), *shape)
    for row, seed in enumerate(SEEDS):
        alone = per_example_normal(seed[None], shape, stream=1).numpy()[0]
        np.testing.assert_array_equal(batch[row], alone)


def test_permuting_seeds_permutes_rows():
    permutation = [4, 2, 0, 3, 1]
    batch = per_example_normal(SEEDS, [6], stream=0).numpy()
    permuted = per_example_normal(tf.gather(SEEDS, permutation), [6], stream=0).numpy()
    np.testing.assert_array_equal(permuted, batch[permutation])


def test_different_streams_give_different_noise():
    first = per_example_normal(SEEDS, [8], stream=0).numpy()
    second = per_example_normal(SEEDS, [8], stream=1).numpy()
    assert np.all(np.abs(first - second).max(axis=1) > 1e-3)


def test_different_seeds_give_different_rows():
    rows = per_example_normal(SEEDS, [8], stream=0).numpy()
    distances = np.abs(rows[:, None] - rows[None]).max(axis=-1)
    assert np.all(distances[~np.eye(len(rows), dtype=bool)] > 1e-3)


def test_tensor_dims_give_same_noise_as_int_dims_inside_tf_function():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int32)])
    def draw(seeds, k):
        return per_example_normal(seeds, [k, 4], stream=2)

    np.testing.assert_array_equal(
        draw(SEEDS, tf.constant(3)), per_example_normal(SEEDS, [3, 4], stream=2)
    )


def test_noise_is_standard_normal():
    noise = per_example_normal(tf.range(100, dtype=tf.int64), [200], stream=0).numpy()
    assert abs(noise.mean()) < 0.02
    assert abs(noise.std() - 1.0) < 0.02


def test_uniform_rows_depend_only_on_their_seed_and_lie_in_range():
    batch = per_example_uniform(SEEDS, [50], stream=3).numpy()
    assert batch.shape == (len(SEEDS), 50) and batch.min() >= -1.0 and batch.max() < 1.0
    for row, seed in enumerate(SEEDS):
        np.testing.assert_array_equal(batch[row], per_example_uniform(seed[None], [50], stream=3).numpy()[0])
    assert not np.allclose(batch, per_example_uniform(SEEDS, [50], stream=4).numpy())


def test_integer_uniform_draws_a_label_per_seed_covering_every_class():
    labels = per_example_uniform(tf.range(2000, dtype=tf.int64), [], stream=1, minval=0, maxval=10,
                                 dtype=tf.int64).numpy()
    assert labels.shape == (2000,) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=10)
    assert len(counts) == 10 and counts.min() > 150  # ~200 each; P(any < 150) is negligible
    np.testing.assert_array_equal(
        labels[[7, 3]],
        per_example_uniform(tf.constant([7, 3], tf.int64), [], stream=1, minval=0, maxval=10, dtype=tf.int64))
