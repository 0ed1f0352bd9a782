"""The prepared datasets themselves: what the papers' numbers rest on and generated data cannot show.

Marked `real_data`: run with TFDS_DATA_DIR pointing at a TFDS data directory holding
mnist 3.0.1, binarized_mnist 1.0.0 and fashion_mnist 3.0.1 (CI does); skipped otherwise.
"""

import numpy as np
import pytest

from training import data, sample_quality
from zoo.registry import DatasetSpec

pytestmark = pytest.mark.real_data

MNIST_BERNOULLI = DatasetSpec("mnist", binarize=True)
MNIST_GREY = DatasetSpec("mnist", binarize=False)


def all_images(spec: DatasetSpec, role: str) -> np.ndarray:
    dataset, _ = data.load(spec, role, 10_000, download=False)
    return np.concatenate([batch["image"].numpy() for batch in dataset])


@pytest.mark.parametrize("name, expected", [
    # Burda et al. 2016, Sec. 5: MNIST's 60 000 training and 10 000 test images.
    ("mnist", {"train": 60_000, "eval": 10_000, "test": 10_000}),
    # Larochelle & Murray 2011: 50 000 / 10 000 / 10 000; "eval" is the validation split.
    ("binarized_mnist", {"train": 50_000, "eval": 10_000, "test": 10_000}),
    ("fashion_mnist", {"train": 60_000, "eval": 10_000, "test": 10_000}),
])
def test_each_role_reads_the_split_of_the_papers_size(name, expected):
    sizes = {role: data.load(DatasetSpec(name, binarize=False), role, 100, download=False)[1] for role in expected}
    assert sizes == expected


def test_the_test_set_is_binarized_once_for_all_evaluations():
    """The IWAE protocol's test set: 10 000 images, each a fixed Bernoulli draw of its grey levels."""
    first, second = all_images(MNIST_BERNOULLI, "test"), all_images(MNIST_BERNOULLI, "test")
    grey = all_images(MNIST_GREY, "test")

    assert first.shape == (10_000, 28, 28, 1)
    np.testing.assert_array_equal(first, second)
    assert set(np.unique(first)) == {0.0, 1.0}
    assert abs(first.mean() - grey.mean()) < 0.001  # 7.8 million draws: std ≈ 0.00012


def test_binarized_mnist_is_a_draw_of_mnist_grey_levels():
    """The fixed binarization keeps MNIST's ink: the same mean as the grey test images, in {0, 1}."""
    fixed = all_images(DatasetSpec("binarized_mnist", binarize=True), "test")
    grey = all_images(MNIST_GREY, "test")

    assert set(np.unique(fixed)) == {0.0, 1.0}
    assert abs(fixed.mean() - grey.mean()) < 0.001


def test_a_classifier_trained_seconds_on_mnist_separates_its_digits(tmp_path, monkeypatch):
    """The sample-quality features rest on this classifier: one epoch on 10 000 real digits classifies the
    10 000 test digits well (the default, 3 epochs on all 60 000, reaches 98.7%: docs/evaluation.md)."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    settings = sample_quality.ClassifierSettings(epochs=1, max_examples=10_000)
    _, accuracy = sample_quality.load_classifier("mnist", settings, download=False)
    assert accuracy > 0.9
