"""MNIST with captions (Mansimov et al. 2016, Sec. 4.1, Appendix A), built from the suite's synthetic MNIST."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from training import captions, data, sample_quality
from zoo.registry import DatasetSpec

CAPTIONED = DatasetSpec("mnist_captions", binarize=False, captions=True)
HELD_OUT = DatasetSpec("mnist_captions_held_out", binarize=False, captions=True)


def raw_mnist(split):
    """uint8 [N, 28, 28, 1] images and int64 [N] labels straight from TFDS, in split order."""
    examples = list(tfds.as_numpy(tfds.load("mnist", split=split, data_dir=data.data_dir(), download=False)))
    return np.stack([example["image"] for example in examples]), np.array([example["label"] for example in examples])


def composed(name, split):
    """The dataset's examples before batching: uint8 images and caption strings."""
    examples = data.SOURCES[name].compose(tfds.load("mnist", split=split, data_dir=data.data_dir(), download=False))
    return list(tfds.as_numpy(examples))


def held_out_captions():
    """The held-out captions, written out from `captions.HELD_OUT`."""
    return {f"the digit {subject} is {relation} " + ("the image" if other is None else f"the digit {other}") + " ."
            for relation, subject, other in captions.HELD_OUT}


def test_batches_carry_the_canvas_and_its_caption_text():
    evaluation, examples = data.load(CAPTIONED, "eval", 6, max_examples=6, download=False)
    batch = next(iter(evaluation))
    assert examples == 6 and set(batch) == {"image", "caption"}
    assert batch["image"].dtype == tf.float32 and batch["image"].shape == (6, 60, 60, 1)
    assert batch["caption"].dtype == tf.string and batch["caption"].shape == (6,)
    assert all(text.decode().startswith("the digit ") for text in batch["caption"].numpy())


def test_two_loads_give_the_same_canvases_and_captions():
    first, second = (next(iter(data.load(CAPTIONED, "eval", 20, max_examples=20, download=False)[0]))
                     for _ in range(2))
    np.testing.assert_array_equal(first["image"], second["image"])
    np.testing.assert_array_equal(first["caption"], second["caption"])


def test_each_caption_names_its_mnist_digits_and_says_where_they_were_placed():
    """Recomputes each canvas from raw MNIST and `caption_layout`, and checks the caption against the geometry."""
    images, labels = raw_mnist("test[:60]")
    examples = composed("mnist_captions", "test[:60]")
    relations_seen = set()
    for index, example in enumerate(examples):
        relation, digits, corners = (np.asarray(part) for part in captions.caption_layout(index, tf.constant(labels)))
        words = example["caption"].decode().split()
        pair = words[-3:] != ["the", "image", "."]
        relations_seen.add(" ".join(words[4:-3 if not pair else -4]))
        assert words[:2] == ["the", "digit"] and int(words[2]) == labels[digits[0]] and words[3] == "is"
        (subject_row, subject_column), (other_row, other_column) = corners + 14  # the digits' centres
        expected = np.zeros((60, 60, 1), np.int64)
        for digit, (row, column) in list(zip(digits, corners))[:2 if pair else 1]:
            expected[row:row + 28, column:column + 28] += images[digit]
        np.testing.assert_array_equal(example["image"], np.minimum(expected, 255))
        if pair:
            assert words[-4:-2] == ["the", "digit"] and int(words[-2]) == labels[digits[1]]
            apart = {"left": other_column - subject_column, "right": subject_column - other_column,
                     "top": other_row - subject_row, "bottom": subject_row - other_row}[words[-6]]
            assert apart >= 20, (words, corners)
            aligned = subject_row == other_row if words[-6] in ("left", "right") else subject_column == other_column
            assert aligned, (words, corners)
        else:
            vertical, horizontal = words[-6:-4]
            assert (subject_row < 30) == (vertical == "top") and (subject_column < 30) == (horizontal == "left")
    assert len(relations_seen) == 8


def test_captions_use_only_the_few_dozen_words_of_the_vocabulary():
    texts = [example["caption"].decode() for example in composed("mnist_captions", "test[:200]")]
    assert 20 <= len(captions.WORDS) <= 40 and len(set(captions.WORDS)) == len(captions.WORDS)
    assert {word for text in texts for word in text.split()} == set(captions.WORDS)
    assert max(len(text.split()) for text in texts) == captions.MAX_WORDS


def test_no_training_caption_is_held_out_and_the_held_out_set_holds_only_them():
    held_out = held_out_captions()
    training = [example["caption"].decode() for example in composed("mnist_captions", "train")]
    evaluation = [example["caption"].decode() for example in composed("mnist_captions_held_out", "test")]

    assert len(held_out) == 8 and not held_out & set(training)
    assert len(set(training)) > 300  # of the 432 captions left in
    assert set(evaluation) == held_out


def test_a_held_out_caption_drawn_for_training_is_replaced_by_a_held_in_mirror():
    """`mnist_captions` swaps left ↔ right, top ↔ bottom (and the corners diagonally) for a held-out caption."""
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
    for relation, subject, other in captions.HELD_OUT:
        mirror = captions.RELATIONS[captions.RELATIONS.index(relation) ^ 1]
        assert mirror == " ".join(opposite.get(word, word) for word in relation.split())
        assert (mirror, subject, other) not in captions.HELD_OUT


def test_held_out_canvases_show_digits_of_their_captions_labels():
    images, labels = raw_mnist("test[:100]")
    for index, example in enumerate(composed("mnist_captions_held_out", "test[:100]")):
        relation, digits, corners = (np.asarray(part) for part in captions.held_out_layout(index, tf.constant(labels)))
        words = example["caption"].decode().split()
        assert int(words[2]) == labels[digits[0]] and captions.RELATIONS[relation] in example["caption"].decode()
        if relation < captions.PAIR_RELATIONS:
            assert int(words[-2]) == labels[digits[1]]
        row, column = corners[0]
        np.testing.assert_array_equal(example["image"][row:row + 28, column:column + 28] >= images[digits[0]], True)


def test_the_held_out_set_is_for_evaluation_only():
    with pytest.raises(data.DataError, match="'mnist_captions_held_out' has no 'train' role, only eval, test; it is for evaluation only: "
                                                "train on another dataset"):
        data.load(HELD_OUT, "train", 8, download=False)


def test_a_dataset_without_captions_is_an_error_for_a_model_that_needs_them():
    with pytest.raises(data.DataError, match="'mnist' has no captions.*mnist_captions, mnist_captions_held_out"):
        data.load(DatasetSpec("mnist", binarize=True, captions=True), "train", 20, download=False)


# Caption accuracy.

CLASSIFIER = sample_quality.ClassifierSettings(epochs=2)  # 99% on the suite's centred test digits, in ~10 s


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """An mnist classifier of the suite's data, trained in a cache of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.mktemp("zoo_cache")))
        return sample_quality.load_classifier("mnist", CLASSIFIER, download=False)[0]


@pytest.mark.parametrize("relation", range(len(captions.RELATIONS)))
def test_every_caption_parses_back_to_its_relation_and_digits(relation):
    other = 4 if relation < captions.PAIR_RELATIONS else None
    text = captions.caption_text(tf.constant(relation, tf.int64), 7, 4).numpy().decode()
    assert captions.parse_caption(text) == (relation, 7, other)


@pytest.mark.parametrize("text", ["the digit 7 is purple .", "the digit x is on the left of the digit 4 .",
                                  "the digit 7 is at the top left of the digit 4 ."])
def test_a_caption_the_generator_cannot_write_does_not_parse(text):
    with pytest.raises(ValueError, match="not an MNIST caption"):
        captions.parse_caption(text)


def test_the_digit_windows_lie_within_two_pixels_of_where_the_generator_puts_the_digits():
    labels = tf.constant(np.arange(1000) % 10)
    for index in range(300):
        relation, _, corners = (np.asarray(part) for part in captions.caption_layout(index, labels))
        windows = np.array(captions.digit_windows(int(relation)))
        assert np.abs(windows - corners[:len(windows)]).max() <= 2
        assert windows.min() >= 0 and windows.max() <= captions.CANVAS - captions.DIGIT_SIZE


def test_the_classifier_reads_the_digits_of_real_canvases_where_their_captions_put_them(classifier):
    """The reading of the real canvases is the ceiling of `caption_accuracy_real`; wrong captions read badly."""
    batch = next(iter(data.load(HELD_OUT, "test", 200, max_examples=200, download=False)[0]))
    images, texts = batch["image"].numpy(), batch["caption"].numpy()
    assert captions.fraction_read(classifier, images, texts) > 0.8  # 0.90 measured: windows off by <= 2 pixels
    assert captions.fraction_read(classifier, images, np.roll(texts, 1)) < 0.4  # 0.18 measured


def test_caption_accuracy_draws_caption_i_with_seed_i_and_reads_the_drawing(classifier):
    batch = next(iter(data.load(CAPTIONED, "test", 30, max_examples=30, download=False)[0]))
    real = tf.constant(batch["image"])
    drawn = []

    def sample_from_caption(texts, seeds):  # a perfect model: the real canvas of each caption
        drawn.extend(seeds.numpy())
        return tf.gather(real, seeds)

    texts = list(batch["caption"].numpy())
    accuracy = captions.caption_accuracy(sample_from_caption, classifier, {"set": texts}, batch_size=7)
    assert drawn == list(range(30))
    assert accuracy["set"] == captions.fraction_read(classifier, real.numpy(), texts)
