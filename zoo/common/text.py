"""Words in, ids out, and back: the tokenizer of models of text and of models conditioned on it, inside the
model and its SavedModel.

A caption is lower-cased, punctuation is split off as words of its own ("image." → "image ."),
and it is split on white space. Captions split off `PUNCTUATION`; the texts of language models
(`TEXT_PUNCTUATION`) every character that is neither a letter, a digit, "_", an apostrophe nor white
space, so that quotes, brackets and dashes do not multiply the words of a real corpus ("(wrong!" →
"( wrong !"). Each word becomes its id in the model's vocabulary, after two
reserved ids: `PADDING` (0) fills a caption up to `max_words`, `UNKNOWN` (1) stands for a word
outside the vocabulary. Everything runs on core TensorFlow ops (`StaticRegexReplace`,
`StringSplitV2`, a hash table), so a SavedModel tokenizes a request itself.

Training data holds only vocabulary words; a served caption may not. `Tokenizer.checked`
refuses, with INVALID_ARGUMENT naming them, words outside the vocabulary, captions longer than
`max_words` and empty captions, where a model would otherwise draw from <unk> or padding.
"""

from __future__ import annotations

import keras
import tensorflow as tf

PADDING = "<pad>"
UNKNOWN = "<unk>"
PADDING_ID = 0
UNKNOWN_ID = 1
PUNCTUATION = r"([.,;:!?])"
TEXT_PUNCTUATION = r"([^\w\s'])"
BEGIN = "<bos>"  # the word before a text's first, which language models condition on
END = "<eos>"  # the word after a text's last, which they predict


def words(captions: tf.Tensor, punctuation: str = PUNCTUATION) -> tf.RaggedTensor:
    """string [batch] → the words of each caption, ragged [batch, (words)]."""
    spaced = tf.strings.regex_replace(tf.strings.lower(captions), punctuation, r" \1 ")
    return tf.strings.split(spaced)


def lengths_of(ids: tf.Tensor) -> tf.Tensor:
    """Words per caption, int32 [batch], of word ids [batch, max_words] padded with PADDING_ID."""
    return tf.reduce_sum(tf.cast(tf.not_equal(ids, PADDING_ID), tf.int32), axis=-1)


@keras.saving.register_keras_serializable(package="zoo")
class Tokenizer(keras.layers.Layer):
    """string [batch] → word ids int64 [batch, max_words].

    ids[b, i] is the id of word i of caption b (vocabulary[j] has id j + 2), then PADDING_ID
    (`lengths_of` counts the words); words past `max_words` are dropped (`checked` refuses them).
    """

    def __init__(self, vocabulary, max_words: int, punctuation: str = PUNCTUATION, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = tuple(vocabulary)
        self.max_words = max_words
        self.punctuation = punctuation
        reserved = {PADDING, UNKNOWN} & set(self.vocabulary)
        if reserved:
            raise ValueError(f"the vocabulary may not hold the reserved words {sorted(reserved)}")
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError("the vocabulary holds a word twice")
        self.lookup = keras.layers.StringLookup(vocabulary=list(self.vocabulary), mask_token=PADDING,
                                                oov_token=UNKNOWN, num_oov_indices=1, output_mode="int")

    @property
    def size(self) -> int:
        """Ids in use: the vocabulary and the two reserved ones."""
        return len(self.vocabulary) + 2

    def build(self, input_shape=None):
        self.lookup.build(input_shape)

    def call(self, captions):
        padded = words(captions, self.punctuation).to_tensor(PADDING, shape=[None, self.max_words])
        return tf.cast(self.lookup(padded), tf.int64)

    def checked(self, captions, whole_vocabulary: bool = True):
        """`call`, failing the request (INVALID_ARGUMENT) on a caption of more than `max_words` words, and,
        with `whole_vocabulary` (a caption to draw from), on one with no words or with words outside the
        vocabulary, which the message lists. Without it (a text to score or encode) an unknown word reads
        `UNKNOWN`, as in the training data, and an empty text is a text."""
        split = words(captions, self.punctuation)
        lengths = split.row_lengths()
        checks = [tf.debugging.assert_less_equal(lengths, tf.constant(self.max_words, tf.int64),
                                                 message=f"texts may have at most {self.max_words} words")]
        if whole_vocabulary:
            unknown = tf.ragged.boolean_mask(split, tf.equal(self.lookup(split), UNKNOWN_ID)).flat_values
            checks += [
                tf.debugging.assert_positive(lengths, message="every caption needs at least one word"),
                tf.debugging.Assert(tf.equal(tf.size(unknown), 0),
                                    ["captions hold words outside the vocabulary of this model:", unknown],
                                    summarize=20),
            ]
        with tf.control_dependencies(checks):
            return self.call(tf.identity(captions))

    def words_of(self, ids):
        """Word ids [batch, length] → string [batch]: the words up to the first PADDING_ID or id of `END`,
        joined by single spaces; UNKNOWN_ID reads `UNKNOWN`. The inverse of `call` for texts whose words
        the vocabulary holds, up to lower case and white space."""
        table = tf.constant([PADDING, UNKNOWN, *self.vocabulary])
        ends = tf.equal(ids, PADDING_ID)
        if END in self.vocabulary:
            ends |= tf.equal(ids, self.vocabulary.index(END) + 2)
        kept = tf.equal(tf.cumsum(tf.cast(ends, tf.int32), axis=-1), 0)  # before the first end
        return tf.strings.reduce_join(tf.ragged.boolean_mask(tf.gather(table, ids), kept), axis=-1, separator=" ")

    def get_config(self):
        return {**super().get_config(), "vocabulary": list(self.vocabulary), "max_words": self.max_words,
                "punctuation": self.punctuation}
