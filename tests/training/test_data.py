"""training.data: TFDS splits → batches of {"image": float32}, binarized as the model needs."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from training import data
from zoo.registry import DatasetSpec

MNIST_BERNOULLI = DatasetSpec("mnist", binarize=True)
MNIST_GREY = DatasetSpec("mnist", binarize=False)


def batches(dataset, count):
    return [batch["image"].numpy() for batch in dataset.take(count)]


def raw_images(name, split):
    """uint8 [N, 28, 28, 1] straight from TFDS, in split order."""
    dataset = tfds.load(name, split=split, data_dir=data.data_dir(), download=False)
    return np.stack([example["image"] for example in tfds.as_numpy(dataset)])


def test_dynamic_binarization_gives_zeros_and_ones_with_the_grey_mean():
    train, examples = data.load(MNIST_BERNOULLI, "train", 100, max_examples=100, download=False)
    first, second = batches(train, 2)  # each batch is one full pass over the 100 examples
    grey = raw_images("mnist", "train[:100]") / 255.0

    assert examples == 100 and first.shape == (100, 28, 28, 1) and first.dtype == np.float32
    assert set(np.unique(first)) <= {0.0, 1.0}
    assert abs(first.mean() - grey.mean()) < 0.01  # 78,400 Bernoulli draws: std ≈ 0.0014
    assert abs(second.mean() - grey.mean()) < 0.01
    assert not np.array_equal(first.sum(axis=0), second.sum(axis=0))  # same examples, fresh draws


def test_dynamic_binarization_redraws_each_visit_of_an_example():
    train, _ = data.load(MNIST_BERNOULLI, "train", 64, max_examples=1, download=False)
    (draws,) = batches(train, 1)  # 64 visits of the one example
    grey = raw_images("mnist", "train[:1]")[0] / 255.0

    assert len({draw.tobytes() for draw in draws}) > 1
    assert np.all(draws[:, grey == 0.0] == 0.0) and np.all(draws[:, grey == 1.0] == 1.0)
    assert abs(draws.mean() - grey.mean()) < 0.02


@pytest.mark.parametrize("role", ["eval", "test"])
def test_evaluation_binarization_is_fixed_across_passes(role):
    evaluation, examples = data.load(MNIST_BERNOULLI, role, 30, max_examples=70, download=False)
    first, second = batches(evaluation, 3), batches(evaluation, 3)

    assert examples == 70 and [len(batch) for batch in first] == [30, 30, 10]
    for one, other in zip(first, second):
        assert set(np.unique(one)) <= {0.0, 1.0}
        np.testing.assert_array_equal(one, other)


def test_evaluation_images_are_one_draw_per_example_index_even_after_a_partial_first_read():
    evaluation, _ = data.load(MNIST_BERNOULLI, "eval", 30, max_examples=70, download=False)
    (first,) = batches(evaluation, 1)  # as training's loss before the first step reads it
    images = np.concatenate(batches(evaluation, 3))
    grey = raw_images("mnist", "test[:70]").astype(np.float32) / 255.0
    draws = [tf.random.stateless_uniform(image.shape, seed=np.array([data.EVALUATION_BINARIZATION_SEED, index]))
             for index, image in enumerate(grey)]

    np.testing.assert_array_equal(images, (np.stack(draws) < grey).astype(np.float32))
    np.testing.assert_array_equal(first, images[:30])


def test_binarized_mnist_passes_through_unchanged():
    evaluation, _ = data.load(DatasetSpec("binarized_mnist", binarize=True), "eval", 25, max_examples=50,
                              download=False)
    np.testing.assert_array_equal(np.concatenate(batches(evaluation, 2)),
                                  raw_images("binarized_mnist", "validation[:50]").astype(np.float32))


@pytest.mark.parametrize("role", ["train", "eval"])
def test_grey_levels_are_pixels_over_255_without_binarize(role):
    dataset, _ = data.load(MNIST_GREY, role, 40, max_examples=40, download=False)
    (images,) = batches(dataset, 1)
    raw = raw_images("mnist", "train[:40]" if role == "train" else "test[:40]")

    assert images.dtype == np.float32 and images.min() >= 0.0 and images.max() <= 1.0
    assert len(np.unique(images)) > 2
    if role == "eval":
        np.testing.assert_array_equal(images, raw.astype(np.float32) / 255.0)
    else:  # shuffled: compare as sets of images
        assert sorted(image.tobytes() for image in images) == \
            sorted(image.tobytes() for image in raw.astype(np.float32) / 255.0)


def test_unknown_dataset_is_an_error_listing_known_ones():
    with pytest.raises(data.DataError, match=f"known datasets: {', '.join(sorted(data.SOURCES))}, or the path of a "
                                             f"folder of texts") as error:
        data.load(DatasetSpec("imagenet2012", binarize=True), "train", 20, download=False)
    assert "cifar10, coco_captions, fashion_mnist, imdb_reviews, lm1b, mnist" in str(error.value)


def test_missing_data_is_an_error_naming_dataset_and_tfds_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match="'fashion_mnist'") as error:
        data.load(DatasetSpec("fashion_mnist", binarize=True), "train", 20, download=False)
    assert f"TFDS_DATA_DIR={tmp_path}" in str(error.value)


def test_unknown_role_is_rejected():
    with pytest.raises(ValueError, match="role"):
        data.load(MNIST_BERNOULLI, "validation", 20, download=False)


@pytest.mark.parametrize(
    "examples, batch_size, role, expected",
    [
        (200, 20, "train", 10),
        (210, 20, "train", 10),  # the partial batch is dropped
        (19, 20, "train", 0),
        (200, 20, "eval", 10),
        (210, 20, "eval", 11),  # ... but evaluated
        (19, 20, "test", 1),
    ],
)
def test_steps_per_pass(examples, batch_size, role, expected):
    assert data.steps(examples, batch_size, role) == expected


def test_split_name_slices_only_with_max_examples():
    assert data.split_name(MNIST_BERNOULLI, "eval") == "test"
    assert data.split_name(DatasetSpec("binarized_mnist", True), "eval", 50) == "validation[:50]"


def test_labels_come_with_their_images_when_the_model_asks():
    evaluation, _ = data.load(DatasetSpec("mnist", binarize=False, labels=True), "eval", 25, max_examples=25,
                              download=False)
    batch = next(iter(evaluation))
    reference = tfds.load("mnist", split="test[:25]", data_dir=data.data_dir(), download=False, batch_size=25)
    reference = next(iter(tfds.as_numpy(reference)))

    assert batch["label"].dtype == np.int64
    np.testing.assert_array_equal(batch["label"].numpy(), reference["label"])
    np.testing.assert_array_equal(batch["image"].numpy(), reference["image"] / np.float32(255.0))


def test_shuffled_training_batches_keep_each_label_with_its_image():
    train, _ = data.load(DatasetSpec("mnist", binarize=False, labels=True), "train", 50, max_examples=50,
                         download=False)
    batch = next(iter(train))
    reference = tfds.load("mnist", split="train[:50]", data_dir=data.data_dir(), download=False, batch_size=50)
    reference = next(iter(tfds.as_numpy(reference)))
    label_of = {(image / np.float32(255.0)).tobytes(): label for image, label in zip(reference["image"], reference["label"])}

    assert [label_of[image.tobytes()] for image in batch["image"].numpy()] == list(batch["label"].numpy())


def test_batches_hold_only_images_unless_labels_are_asked_for():
    evaluation, _ = data.load(MNIST_GREY, "eval", 5, max_examples=5, download=False)
    assert set(next(iter(evaluation))) == {"image"}


def test_a_dataset_without_labels_is_an_error_for_a_model_that_needs_them():
    with pytest.raises(data.DataError, match="'binarized_mnist' has no labels.*fashion_mnist, mnist"):
        data.load(DatasetSpec("binarized_mnist", binarize=True, labels=True), "train", 20, download=False)


class NetworkRefused(Exception):
    """What this test's TFDS gets instead of a download."""


def test_a_missing_dataset_gets_as_far_as_the_download_and_its_error_says_to_check_the_network(tmp_path, monkeypatch):
    """TFDS's download path imports more than TFDS declares (importlib_resources); the project declares it, so a
    user with internet gets the download. Here the network is refused, so the error is that refusal, and the fix
    names the connection rather than --no_download."""
    from tensorflow_datasets.core.utils import gcs_utils

    def refuse(*args, **kwargs):
        raise NetworkRefused("no network in tests")

    monkeypatch.setattr(gcs_utils, "is_dataset_on_gcs", lambda name: False)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", refuse)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", refuse)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError) as error:
        data.load(MNIST_BERNOULLI, "train", 20, download=True)
    assert "NetworkRefused: no network in tests" in str(error.value)
    assert "check the internet connection" in str(error.value) and "--no_download" not in str(error.value)


def test_two_digit_canvases_are_two_mnist_digits_added_and_clipped_at_their_drawn_corners():
    """Gregor et al. 2015, Sec. 4.2: two digits on a 60×60 canvas, intensities added and clipped where they overlap."""
    evaluation, examples = data.load(DatasetSpec("two_digit_mnist", binarize=False), "eval", 12, max_examples=12,
                                     download=False)
    (canvases,) = batches(evaluation, 1)
    digits = raw_images("mnist", "test[:12]").astype(np.int64)

    assert examples == 12 and canvases.shape == (12, 60, 60, 1)
    layouts = [tuple(np.asarray(part) for part in data.two_digit_layout(index, 12)) for index in range(12)]
    for index, (canvas, (partner, corners)) in enumerate(zip(canvases, layouts)):
        expected = np.zeros((60, 60, 1), np.int64)
        for digit, (row, column) in zip((digits[index], digits[partner]), corners):
            expected[row:row + 28, column:column + 28] += digit
        np.testing.assert_array_equal(canvas, np.minimum(expected, 255).astype(np.float32) / 255.0)
    corners = np.stack([corners for _, corners in layouts])
    assert corners.min() >= 0 and corners.max() <= 32 and len(np.unique(corners)) > 10
    assert len({int(partner) for partner, _ in layouts}) > 5


def test_two_digit_training_canvases_are_binarized_afresh_from_the_same_layout():
    train, examples = data.load(DatasetSpec("two_digit_mnist", binarize=True), "train", 8, max_examples=8,
                                download=False)
    first, second = batches(train, 2)  # each batch is one pass over the 8 canvases, shuffled
    grey, _ = data.load(DatasetSpec("two_digit_mnist", binarize=False), "train", 8, max_examples=8, download=False)
    (grey,) = batches(grey, 1)

    assert examples == 8 and first.shape == (8, 60, 60, 1) and set(np.unique(first)) <= {0.0, 1.0}
    assert not np.array_equal(first.sum(axis=0), second.sum(axis=0))  # fresh draws
    assert np.all(first.sum(axis=0)[grey.sum(axis=0) == 0] == 0)  # ink only where a digit is


@pytest.mark.parametrize("name", ["cifar10", "svhn_cropped"])
def test_colour_datasets_load_as_32_by_32_rgb_in_0_1_with_their_labels(name):
    evaluation, examples = data.load(DatasetSpec(name, binarize=False, labels=True), "eval", 20, max_examples=20,
                                     download=False)
    batch = next(iter(evaluation))
    reference = tfds.load(name, split="test[:20]", data_dir=data.data_dir(), download=False, batch_size=20)
    reference = next(iter(tfds.as_numpy(reference)))

    assert examples == 20 and batch["image"].shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(batch["image"].numpy(), reference["image"] / np.float32(255.0))
    np.testing.assert_array_equal(batch["label"].numpy(), reference["label"])


COCO = DatasetSpec("coco_captions", binarize=False, captions=True)


def test_coco_gives_each_image_at_32_by_32_once_per_caption_under_tfds_mock_data():
    """The loader against TFDS's own mock of `coco_captions` (random sizes, random caption strings)."""
    with tfds.testing.mock_data(num_examples=6):
        raw = list(tfds.as_numpy(tfds.load("coco_captions", split="val", download=False)))
        dataset, examples = data.load(COCO, "eval", 1000, download=False)
        (batch,) = list(dataset)
        vocabulary = data.counted_vocabulary(COCO, download=False)

    captions = [caption for example in raw for caption in example["captions"]["text"]]
    assert examples == len(captions) == len(batch["caption"])
    np.testing.assert_array_equal(batch["caption"].numpy(), captions)
    images = batch["image"].numpy()
    assert images.shape == (len(captions), 32, 32, 3) and 0.0 <= images.min() and images.max() <= 1.0
    first = len(raw[0]["captions"]["text"])  # the first image's pairs all hold the same image
    assert np.all(images[:first] == images[0]) and first < len(captions) and not np.all(images[first] == images[0])
    mean = tf.image.resize(raw[0]["image"][None].astype(np.float32), [32, 32], method="area")[0] / 255.0
    np.testing.assert_allclose(images[0], np.round(mean * 255) / 255, atol=1e-6)
    assert set(vocabulary) == {word.decode() for caption in captions for word in caption.lower().split()}


def test_counted_vocabulary_is_every_training_word_most_frequent_first():
    vocabulary = data.counted_vocabulary(COCO, download=False)  # the suite's COCO stand-in
    counts = {}
    for example in tfds.as_numpy(tfds.load("coco_captions", split="train", data_dir=data.data_dir(), download=False)):
        for caption in example["captions"]["text"]:
            for word in caption.decode().replace(".", " . ").replace(",", " , ").split():
                counts[word] = counts.get(word, 0) + 1
    assert sorted(vocabulary) == sorted(counts)
    assert [counts[word] for word in vocabulary] == sorted(counts.values(), reverse=True)
