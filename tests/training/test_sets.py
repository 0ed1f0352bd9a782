"""training.data for models of sets (`DatasetSpec.set_size`): class-pure sets, training classes apart from the
held-out ones, fixed evaluation sets and fresh training sets."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import synthetic_tfds
from training import data
from zoo.registry import DatasetSpec

SET_SIZE = 4


def _label_of_each_item(name: str, split: str):
    """Grey image bytes → label, for the suite's synthetic split (every image there is distinct)."""
    images, labels = synthetic_tfds.images_and_labels(name, split)
    return {(image / 255.0).astype(np.float32).tobytes(): int(label) for image, label in zip(images, labels)}


def _sets(role, batches=None, batch_size=8, **spec):
    dataset, count = data.load(DatasetSpec("mnist", binarize=False, set_size=SET_SIZE, **spec), role, batch_size,
                               download=False)
    batches = batches or data.steps(count, batch_size, role)
    return [(batch["image"].numpy(), batch["label"].numpy()) for batch in dataset.take(batches)], count


@pytest.mark.parametrize("role, split, classes", [("train", "train", set(range(7))), ("test", "test", {7, 8, 9})])
def test_every_set_holds_items_of_its_class_and_the_roles_use_disjoint_classes(role, split, classes):
    labels = _label_of_each_item("mnist", split)
    seen = set()
    for images, set_labels in _sets(role, batches=20)[0]:
        assert images.shape[1:] == (SET_SIZE, 28, 28, 1)
        for items, label in zip(images, set_labels):
            assert {labels[item.tobytes()] for item in items} == {label}
            assert len({item.tobytes() for item in items}) == SET_SIZE  # drawn without replacement
        seen |= set(set_labels.tolist())
    assert seen == classes  # the train role meets all seven of its classes in 160 sets, and never 7, 8, 9


def test_evaluation_sets_are_the_same_every_pass_and_number_the_full_sets_of_each_class():
    first, count = _sets("test")
    again, _ = _sets("test")
    _, labels = synthetic_tfds.images_and_labels("mnist", "test")
    assert count == sum(int(np.sum(labels == c)) // SET_SIZE for c in (7, 8, 9))
    assert sum(len(set_labels) for _, set_labels in first) == count
    for (images, set_labels), (images_again, labels_again) in zip(first, again):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(set_labels, labels_again)


def test_training_sets_are_drawn_afresh_each_pass():
    (first, _), (second, _) = _sets("train", batches=2, batch_size=64)[0]
    assert not np.array_equal(first, second)


def test_sets_are_binarized_items_for_bernoulli_models():
    dataset, _ = data.load(DatasetSpec("mnist", binarize=True, set_size=SET_SIZE), "test", 8, download=False)
    images = next(iter(dataset))["image"].numpy()
    assert set(np.unique(images)) <= {0.0, 1.0}


@pytest.mark.parametrize("name, set_size, max_examples, message", [
    ("binarized_mnist", 4, None, "has no held-out classes to build evaluation sets from"),
    ("mnist", 50, 100, "sets of 50 need that many items of each class"),
])
def test_sets_that_cannot_be_built_are_refused_naming_the_fix(name, set_size, max_examples, message):
    with pytest.raises(data.DataError, match=message):
        data.load(DatasetSpec(name, binarize=True, set_size=set_size), "test", 8, max_examples=max_examples,
                  download=False)


def test_synthetic_1d_sets_have_their_familys_shape_and_exactly_the_drawn_mean_and_variance():
    """Edwards & Storkey Sec. 5.1: four families, mean ~ U[−1, 1], variance ~ U[0.5, 2]. Standardised with the
    drawn parameters, the pooled samples of each family have mean 0, variance 1, and the family's skewness
    and kurtosis (Gaussian 0 and 3, uniform 0 and 1.8, exponential 2 and 9, Laplace 0 and 6)."""
    dataset, count = data.load(DatasetSpec("synthetic_1d", binarize=False, set_size=200), "test", 1000)
    batch = next(iter(dataset))
    assert count == 1000 and batch["image"].shape == (1000, 200, 1)
    means, variances = batch["mean"].numpy(), batch["variance"].numpy()
    assert -1 <= means.min() and means.max() <= 1 and 0.5 <= variances.min() and variances.max() <= 2
    standard = (batch["image"].numpy()[..., 0] - means[:, None]) / np.sqrt(variances[:, None])
    expected = {"gaussian": (0.0, 3.0), "uniform": (0.0, 1.8), "exponential": (2.0, 9.0), "laplace": (0.0, 6.0)}
    labels = batch["label"].numpy()
    for family, (skewness, kurtosis) in expected.items():
        samples = standard[labels == data.SYNTHETIC_FAMILIES.index(family)].ravel()
        assert len(samples) > 200 * 200, family  # about 250 sets of each family
        assert abs(samples.mean()) < 0.02 and abs(samples.var() - 1.0) < 0.03, family
        assert abs(np.mean(samples**3) - skewness) < 0.15, family
        assert abs(np.mean(samples**4) - kurtosis) < 0.1 * kurtosis, family


def test_synthetic_sets_are_fixed_per_role_and_index_and_differ_between_roles():
    def first(role, max_examples):
        dataset, _ = data.load(DatasetSpec("synthetic_1d", binarize=False, set_size=20), role, 5,
                               max_examples=max_examples)
        return next(iter(dataset))["image"].numpy()

    np.testing.assert_array_equal(first("test", 10), first("test", 5))
    assert not np.array_equal(first("test", 5), first("eval", 5))
    with pytest.raises(data.DataError, match="is made of sets"):
        data.load(DatasetSpec("synthetic_1d", binarize=False), "test", 5)


def test_spatial_mnist_draws_each_digits_points_from_its_lit_pixels_fixed_per_digit():
    """Sec. 5.2: 50 points per digit, drawn in proportion to intensity, plus U[0, 1) per coordinate; x to the
    right and y upwards, so a point's floor is the pixel (row 27 − y, column x) it came from."""
    spec = DatasetSpec("spatial_mnist", binarize=False, set_size=50)
    dataset, count = data.load(spec, "test", 100, max_examples=100)
    batch = next(iter(dataset))
    raw = tfds.as_numpy(tfds.load("mnist", split="test[:100]", data_dir=data.data_dir(), download=False))
    images, labels = (np.stack(values) for values in zip(*[(example["image"], example["label"]) for example in raw]))
    points = batch["image"].numpy()
    assert count == 100 and points.shape == (100, 50, 2)
    np.testing.assert_array_equal(batch["label"].numpy(), labels[:100])
    assert points.min() >= 0.0 and points.max() < 28.0
    columns, rows = np.floor(points[..., 0]).astype(int), 27 - np.floor(points[..., 1]).astype(int)
    intensity = images[np.arange(100)[:, None], rows, columns, 0]
    assert intensity.min() > 0  # never an unlit pixel
    assert np.mean(intensity) > np.mean(images[:100][images[:100] > 0])  # brighter pixels drawn more often
    np.testing.assert_array_equal(next(iter(data.load(spec, "test", 100, max_examples=100)[0]))["image"], points)


def _omniglot_examples(characters, per_character=3):
    """A stand-in for TFDS `omniglot` (105×105 RGB, black strokes on white): `per_character` drawings of each of
    `characters`, drawing j of character c a black square of side 10 + c + j on white."""
    def examples(builder, *args, **kwargs):  # the builder's `_as_dataset(split, …)`
        del builder
        split = str(kwargs.get("split", args[0] if args else ""))
        images, labels = [], []
        for label in characters["test" if "test" in split else "train"]:
            for j in range(per_character):
                image = np.full((105, 105, 3), 255, np.uint8)
                image[:10 + label + j, :10 + label + j] = 0
                images.append(image)
                labels.append(label)
        return tf.data.Dataset.from_tensor_slices({
            "image": np.stack(images), "label": np.array(labels, np.int64),
            "alphabet": np.zeros(len(labels), np.int64), "alphabet_char_id": np.array(labels, np.int64)})
    return examples


def test_omniglot_sets_come_from_their_splits_classes_at_28_by_28_with_white_strokes_under_tfds_mock_data():
    """Background alphabets (train) and evaluation alphabets (test) hold different characters: every set is of
    one character of its role's split, resized and inverted like the MNIST digits."""
    characters = {"train": [0, 1, 2, 3], "test": [40, 41]}
    spec = DatasetSpec("omniglot", binarize=False, set_size=3)
    with tfds.testing.mock_data(as_dataset_fn=_omniglot_examples(characters)):
        train, train_sets = data.load(spec, "train", 4, download=False)
        train_batches = list(train.take(5))
        test, test_sets = data.load(spec, "test", 100, download=False)
        (test_batch,) = list(test)
    assert (train_sets, test_sets) == (4, 2)
    assert {int(label) for batch in train_batches for label in batch["label"]} == set(characters["train"])
    np.testing.assert_array_equal(test_batch["label"], [40, 41])  # class after class
    items = test_batch["image"].numpy()
    assert items.shape == (2, 3, 28, 28, 1)
    side = 28 * (10 + 40) / 105  # the first drawing's square, in 28×28 pixels, now white on black
    assert items[0, 0, 0, 0, 0] == 1.0 and items[0, 0, 27, 27, 0] == 0.0
    assert abs(items[0, 0, :, 0, 0].sum() - side) < 1.0
