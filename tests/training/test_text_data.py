"""Texts as a data type: a folder of texts and TFDS text datasets → batches of word ids, the counted
vocabulary, and the errors that name the fix."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import synthetic_texts
from training import data
from zoo.common import text
from zoo.registry import DatasetSpec


def _spec(name, vocabulary=(), max_words=6):
    return DatasetSpec(str(name), binarize=False, text=True, vocabulary=(text.BEGIN, text.END, *vocabulary),
                       max_words=max_words)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "train.txt").write_text("a b c\n\n  \nb c\nc d e f g h i j\nc\n")
    (tmp_path / "validation.txt").write_text("c b a\nz\n")
    (tmp_path / "test.txt").write_text("a\n")
    return tmp_path


def test_a_folder_of_texts_gives_word_ids_cut_at_max_words_without_empty_lines(folder):
    vocabulary = data.counted_vocabulary(_spec(folder))
    assert vocabulary == ("c", "b", "a", "d", "e", "f", "g", "h", "i", "j")  # most frequent first, ties a-z
    spec = _spec(folder, vocabulary)
    evaluation, count = data.load(spec, "eval", batch_size=8)
    assert count == 2 and evaluation.cardinality() == 1
    (batch,) = list(evaluation)
    assert set(batch) == {"text"} and batch["text"].dtype == tf.int64
    tokenizer = text.Tokenizer(spec.vocabulary, spec.max_words, text.TEXT_PUNCTUATION)
    np.testing.assert_array_equal(tokenizer.words_of(batch["text"]).numpy().astype(str), ["c b a", text.UNKNOWN])
    train, count = data.load(spec, "train", batch_size=2)
    assert count == 4  # the two blank lines are skipped
    lengths = {int(length) for batch in train.take(20) for length in text.lengths_of(batch["text"])}
    assert lengths == {1, 2, 3, 6}  # "c d e f g h i j" is cut at 6 words


def test_the_suites_folder_reads_like_a_corpus(synthetic_data_dir):
    vocabulary = data.counted_vocabulary(_spec(synthetic_texts.folder()))
    assert vocabulary[0] in (".", "the") and "(" in vocabulary and "zyx" not in vocabulary  # split, not glued
    assert not {text.PADDING, text.UNKNOWN, text.BEGIN, text.END} & set(vocabulary)
    dataset, count = data.load(_spec(synthetic_texts.folder(), vocabulary, 40), "test", batch_size=16)
    assert count == synthetic_texts.TEXTS["test.txt"]
    assert sum(int(tf.shape(batch["text"])[0]) for batch in dataset) == count


def test_a_tfds_text_dataset_loads_by_name_under_mock_data():
    spec = _spec("yelp_polarity_reviews", ("the", "a"), max_words=12)
    with tfds.testing.mock_data(num_examples=10):
        vocabulary = data.counted_vocabulary(spec, download=False)
        batches, count = data.load(spec, "eval", batch_size=4, download=False)
        batch = next(iter(batches))
    assert vocabulary and count == 10
    assert batch["text"].shape == (4, 12) and batch["text"].dtype == tf.int64


def test_missing_files_and_the_wrong_kind_of_data_are_named_with_the_fix(folder):
    (folder / "test.txt").unlink()
    with pytest.raises(data.DataError, match="test.txt is missing: a folder of texts holds train.txt"):
        data.load(_spec(folder), "test", batch_size=2)
    with pytest.raises(data.DataError, match="holds no texts, which this model needs; use one of: imdb_reviews"):
        data.load(_spec("mnist"), "train", batch_size=2)
    with pytest.raises(data.DataError, match="holds texts, not images"):
        data.load(DatasetSpec(str(folder), binarize=True), "train", batch_size=2)
    with pytest.raises(data.DataError, match="or the path of a folder of texts"):
        data.load(_spec(folder / "nowhere"), "train", batch_size=2)


def test_a_folder_is_recorded_by_its_absolute_path(folder, monkeypatch):
    monkeypatch.chdir(folder.parent)
    assert data.canonical_name(folder.name) == str(folder)
    assert data.canonical_name("mnist") == "mnist"
