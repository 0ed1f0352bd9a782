"""zoo.common.stateless: each row is a pure function of (its seed, stream)."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.common.stateless import ROWS_PER_BLOCK, per_example_normal, per_example_normal_rows, per_example_uniform

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


def test_normal_rows_do_not_depend_on_how_the_sequence_is_chunked():
    seeds = tf.constant([7, -2, 2**40], tf.int64)
    whole = per_example_normal_rows(seeds, 0, 3 * ROWS_PER_BLOCK + 5, units=3, stream=1).numpy()
    assert whole.shape == (3, 3 * ROWS_PER_BLOCK + 5, 3)
    cuts = [0, 1, ROWS_PER_BLOCK - 1, ROWS_PER_BLOCK + 2, 3 * ROWS_PER_BLOCK + 5]
    pieces = [per_example_normal_rows(seeds, start, end - start, units=3, stream=1).numpy()
              for start, end in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), whole)
    alone = per_example_normal_rows(seeds[1:2], 10, 100, units=3, stream=1).numpy()
    np.testing.assert_array_equal(alone[0], whole[1, 10:110])  # a row depends on its own seed only
    other_stream = per_example_normal_rows(seeds, 0, ROWS_PER_BLOCK, units=3, stream=2).numpy()
    assert not np.allclose(other_stream, whole[:, :ROWS_PER_BLOCK])
    assert abs(whole.mean()) < 0.1 and abs(whole.std() - 1) < 0.1
    assert len({row.tobytes() for row in whole.reshape(-1, 3)}) == whole.shape[0] * whole.shape[1]  # no repeats
