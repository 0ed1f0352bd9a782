"""training.nearest_neighbour: 1-NN accuracy by cosine and Euclidean distance on features with a known answer,
in chunks."""

import numpy as np
import pytest

from training import data, nearest_neighbour


def test_each_query_takes_the_label_of_the_reference_at_the_smallest_angle_not_the_nearest_point():
    references = np.array([[1.0, 0.0], [10.0, 10.0], [0.0, -1.0]])
    labels = np.array([0, 1, 2])
    # (3, 2.9) is 3.5 from (1, 0) but 10.0 from (10, 10); its angle to (10, 10) is 1°, to (1, 0) 44°.
    queries = np.array([[3.0, 2.9], [5.0, 0.1], [0.2, -7.0], [0.1, 0.2]])
    assert nearest_neighbour.nearest_neighbour_accuracy(references, labels, queries, [1, 0, 2, 1]) == 1.0
    assert nearest_neighbour.nearest_neighbour_accuracy(references, labels, queries, [0, 0, 2, 2]) == 0.5
    # By Euclidean distance (3, 2.9) is nearest (1, 0), and (0.1, 0.2) nearest (1, 0) too (0.92 against 1.20).
    euclidean = {"metric": "euclidean"}
    assert nearest_neighbour.nearest_neighbour_accuracy(references, labels, queries, [0, 0, 2, 0], **euclidean) == 1.0
    assert nearest_neighbour.nearest_neighbour_accuracy(references, labels, queries, [1, 0, 2, 1], **euclidean) == 0.5
    with pytest.raises(ValueError, match="metric must be one of cosine, euclidean"):
        nearest_neighbour.nearest_neighbour_accuracy(references, labels, queries, [1, 0, 2, 1], metric="l1")


def test_accuracy_is_the_same_for_any_chunk_and_matches_a_full_distance_matrix():
    rng = np.random.default_rng(0)
    references, queries = rng.normal(size=(300, 5)), rng.normal(size=(101, 5)) * 2.0
    reference_labels, query_labels = rng.integers(0, 3, 300), rng.integers(0, 3, 101)
    cosines = (queries @ references.T) / np.outer(np.linalg.norm(queries, axis=1), np.linalg.norm(references, axis=1))
    distances = np.linalg.norm(queries[:, None] - references[None], axis=-1)
    nearest = {"cosine": np.argmax(cosines, axis=1), "euclidean": np.argmin(distances, axis=1)}
    assert np.mean(nearest["cosine"] != nearest["euclidean"]) > 0.2  # the two metrics disagree on these queries
    for metric, indices in nearest.items():
        expected = np.mean(reference_labels[indices] == query_labels)
        assert 0.2 < expected < 0.6  # labels unrelated to the features: about 1/3 right
        for chunk in (1, 7, 101, 1000):
            accuracy = nearest_neighbour.nearest_neighbour_accuracy(references, reference_labels, queries,
                                                                    query_labels, chunk=chunk, metric=metric)
            assert accuracy == pytest.approx(expected, abs=1e-12), (metric, chunk)


def test_features_that_separate_the_classes_classify_every_query():
    rng = np.random.default_rng(1)
    centres = np.eye(10) * 5.0
    reference_labels, query_labels = rng.integers(0, 10, 500), rng.integers(0, 10, 200)
    references = centres[reference_labels] + rng.normal(scale=0.3, size=(500, 10))
    queries = 0.1 * (centres[query_labels] + rng.normal(scale=0.3, size=(200, 10)))  # scale does not matter
    assert nearest_neighbour.nearest_neighbour_accuracy(references, reference_labels, queries, query_labels) == 1.0


def test_a_zero_feature_vector_is_equally_far_from_every_reference_and_takes_the_first():
    references, labels = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([4, 7])
    assert nearest_neighbour.nearest_neighbour_accuracy(references, labels, np.zeros((1, 2)), [4]) == 1.0


@pytest.mark.parametrize("dataset, role, message", [
    ("mnist", "train", "every image would find itself: pass --split test or eval"),
    ("binarized_mnist", "test", "needs labels, which dataset 'binarized_mnist' has not; train on one of: .*mnist"),
])
def test_splits_where_the_accuracy_means_nothing_are_refused_naming_the_fix(dataset, role, message):
    with pytest.raises(data.DataError, match=message):
        nearest_neighbour.check(dataset, role)
    nearest_neighbour.check("mnist", "test")
