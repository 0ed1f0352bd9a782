"""The tokenizer of text-conditioned models (`zoo.common.text`)."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.common import text

WORDS = ("the", "digit", "is", "at", "top", "of", "image", ".", "3", "7")


def ids_of(*words):
    return [WORDS.index(word) + 2 for word in words]


def test_words_get_their_vocabulary_ids_then_padding_and_the_caption_its_length():
    tokenizer = text.Tokenizer(WORDS, max_words=8)
    ids = tokenizer(tf.constant(["the digit 3 is at the top of the image .", "the digit 7 ."]))
    lengths = text.lengths_of(ids)
    np.testing.assert_array_equal(ids[1], ids_of("the", "digit", "7", ".") + [text.PADDING_ID] * 4)
    np.testing.assert_array_equal(ids[0], ids_of("the", "digit", "3", "is", "at", "the", "top", "of"))
    np.testing.assert_array_equal(lengths, [8, 4])  # the first caption's words past max_words are dropped
    assert ids.dtype == tf.int64 and tokenizer.size == len(WORDS) + 2


def test_case_and_attached_punctuation_do_not_change_the_words():
    tokenizer = text.Tokenizer(WORDS, max_words=8)
    plain = tokenizer(tf.constant(["the digit 3 is at the top ."]))
    loose = tokenizer(tf.constant(["  The DIGIT 3 is at the top."]))
    np.testing.assert_array_equal(plain, loose)


def test_unknown_words_become_the_unknown_id():
    ids = text.Tokenizer(WORDS, max_words=5)(tf.constant(["the digit 7 is purple"]))
    np.testing.assert_array_equal(ids[0], ids_of("the", "digit", "7", "is") + [text.UNKNOWN_ID])


@pytest.mark.parametrize("caption, message", [
    ("the purple digit is at the bottom", r"(?s)outside the vocabulary of this model.*purple.*bottom"),
    ("the digit 3 is at the top of the image .", "at most 8 words"),
    ("  ", "at least one word"),
])
def test_checked_refuses_what_the_model_cannot_read_naming_it(caption, message):
    tokenizer = text.Tokenizer(WORDS, max_words=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        tokenizer.checked(tf.constant(["the digit 3 .", caption]))


def test_checked_passes_good_captions_through_unchanged():
    tokenizer = text.Tokenizer(WORDS, max_words=8)
    captions = tf.constant(["the digit 3 .", "the digit 7 is at the top ."])
    np.testing.assert_array_equal(tokenizer.checked(captions), tokenizer(captions))


@pytest.mark.parametrize("vocabulary, message", [(("the", "<pad>"), "reserved"), (("the", "the"), "twice")])
def test_a_vocabulary_with_reserved_or_repeated_words_is_refused(vocabulary, message):
    with pytest.raises(ValueError, match=message):
        text.Tokenizer(vocabulary, max_words=4)
