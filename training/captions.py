"""MNIST with captions (Mansimov et al. 2016, "Generating Images from Captions with Attention", arXiv:1511.02793,
Sec. 4.1 and Appendix A): 60×60 canvases holding one or two MNIST digits, each with a caption saying where they are.

From the paper: the 60×60 canvas with one or two digits, captions of their positions, and captions never seen in
training as the test of generalisation (its abstract: "novel scene compositions corresponding to previously
unseen captions"). From the authors' released generator (mansimov/text2image, mnist-captions/create-captions.py),
which fixes what the paper leaves to it: the eight caption forms, drawn uniformly, four relating two digits ("the
digit 7 is at the top of the digit 5 .") and four placing one in a corner ("the digit 3 is at the bottom left of
the image ."); the ranges each digit's top-left corner is drawn from (`BOXES`: a left digit's column in 0…4, a
right one's in 28…32, two digits side by side share their row, drawn in 16…18, …); its 22 words, "." one of them.

Ours: every example is a fixed function of its index (stateless seeds): canvas i shows MNIST digit i as the
caption's subject, with a relation and (for two-digit captions) another digit of the split drawn from
`CAPTION_SEED`. Overlapping digits are added and clipped at white (the authors' code overwrites). The held-out
rule is below.

Held out: `HELD_OUT` names one caption per relation, as (relation, subject digit, other digit or None for a corner).
Canvas i of `mnist_captions` draws its caption as above and, where that is held out, takes the mirror relation
instead (left ↔ right, top ↔ bottom, top left ↔ bottom right, top right ↔ bottom left: `relation ^ 1`), so no role
of `mnist_captions` holds a held-out caption. `mnist_captions_held_out` holds only them, drawn from the MNIST test
digits as `mnist_captions`' test role is, so a model can be scored on held-in against held-out captions. The held
out captions are new sentences, not new scenes: "the digit 1 is on the left of the digit 7 ." is held out, while
the same scene captioned "the digit 7 is on the right of the digit 1 ." is trained on.

Captions stay text: a model that reads them holds its own vocabulary and tokenizer (`zoo.common.text`), the
same inside its SavedModel. Every caption uses only the 22 words of `WORDS` and at most `MAX_WORDS` of them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.canvas import DIGIT_SIZE, paste_digits

CANVAS = 60  # Mansimov et al. 2016, Sec. 4.1, and the authors' generator: 60×60
WORDS = ("the", "digit", "is", "on", "at", "of", "left", "right", "top", "bottom", "image", ".", *map(str, range(10)))
MAX_WORDS = 12  # the longest caption, "the digit 3 is at the bottom left of the image ."

_TOP, _BOTTOM, _LEFT, _RIGHT, _MIDDLE = (0, 2), (30, 32), (0, 4), (28, 32), (16, 18)  # corner ranges, inclusive
RELATIONS = ("on the left of", "on the right of", "at the top of", "at the bottom of",
             "at the top left of", "at the bottom right of", "at the top right of", "at the bottom left of")
"""A caption is "the digit <subject> is <relation> the digit <other> ." (the first four) or "… the image ."."""
PAIR_RELATIONS = 4
BOXES = np.array([  # relation → (subject, other) → (row, column) → inclusive corner range
    [[_MIDDLE, _LEFT], [_MIDDLE, _RIGHT]], [[_MIDDLE, _RIGHT], [_MIDDLE, _LEFT]],
    [[_TOP, _MIDDLE], [_BOTTOM, _MIDDLE]], [[_BOTTOM, _MIDDLE], [_TOP, _MIDDLE]],
    [[_TOP, _LEFT], [_TOP, _LEFT]], [[_BOTTOM, _RIGHT], [_TOP, _LEFT]],
    [[_TOP, _RIGHT], [_TOP, _LEFT]], [[_BOTTOM, _LEFT], [_TOP, _LEFT]],
], np.int64)  # the one-digit relations' second box is unused
SHARED_AXIS = (0, 0, 1, 1, -1, -1, -1, -1)  # two digits side by side share their row; one above the other, their column

HELD_OUT = (("on the left of", 1, 7), ("on the right of", 2, 5), ("at the top of", 3, 9), ("at the bottom of", 4, 0),
            ("at the top left of", 6, None), ("at the bottom right of", 8, None),
            ("at the top right of", 0, None), ("at the bottom left of", 5, None))
CAPTION_SEED = 20151109
"""Seeds each canvas's relation, other digit and corners."""
HELD_OUT_SEED = 20160502
"""Seeds each held-out canvas's caption, digits and corners."""


def _held_out_table() -> np.ndarray:
    """bool [relation, subject digit, other digit]: True for a held-out caption (any other digit for one-digit ones)."""
    table = np.zeros((len(RELATIONS), 10, 10), bool)
    for relation, subject, other in HELD_OUT:
        table[RELATIONS.index(relation), subject, slice(None) if other is None else other] = True
    return table


def _held_out_ids() -> np.ndarray:
    """int64 [len(HELD_OUT), 3]: each held-out caption's relation, subject label and other label (the subject's
    again for one-digit captions, whose other digit is not shown)."""
    return np.array([(RELATIONS.index(relation), subject, subject if other is None else other)
                     for relation, subject, other in HELD_OUT], np.int64)


def _corners(relation, seed) -> tf.Tensor:
    """int64 [2, 2]: the (row, column) corners of the subject and the other digit, uniform over `BOXES[relation]`."""
    low, high = tf.unstack(tf.gather(BOXES, relation), axis=-1)
    corners = low + tf.cast(tf.random.stateless_uniform([2, 2], seed) * tf.cast(high - low + 1, tf.float32), tf.int64)
    shared = tf.cast(tf.one_hot(tf.gather(SHARED_AXIS, relation), 2), tf.bool)
    return tf.stack([corners[0], tf.where(shared, corners[0], corners[1])])


def caption_layout(index, labels) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Canvas `index` of `mnist_captions` over a split's `labels`: (relation, int64 [2] digit indices, corners)."""
    count = tf.size(labels, out_type=tf.int64)
    relation = tf.random.stateless_uniform([], [CAPTION_SEED, index], maxval=len(RELATIONS), dtype=tf.int64)
    other = tf.random.stateless_uniform([], [CAPTION_SEED + 1, index], maxval=count, dtype=tf.int64)
    held_out = tf.gather_nd(_held_out_table(), tf.stack([relation, labels[index], labels[other]]))
    relation = tf.where(held_out, tf.bitwise.bitwise_xor(relation, 1), relation)
    return relation, tf.stack([index, other]), _corners(relation, [CAPTION_SEED + 2, index])


def held_out_layout(index, labels) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Canvas `index` of `mnist_captions_held_out`: a held-out caption and digits of its labels from the split.

    The split must hold a digit of every label `HELD_OUT` names.
    """
    choice = tf.random.stateless_uniform([], [HELD_OUT_SEED, index], maxval=len(HELD_OUT), dtype=tf.int64)
    relation, *wanted = tf.unstack(tf.gather(_held_out_ids(), choice))
    digits = []
    for k, label in enumerate(wanted):
        candidates = tf.where(tf.equal(labels, label))[:, 0]
        pick = tf.random.stateless_uniform([], [HELD_OUT_SEED + 1 + k, index], maxval=tf.size(candidates, tf.int64),
                                           dtype=tf.int64)
        digits.append(candidates[pick])
    return relation, tf.stack(digits), _corners(relation, [HELD_OUT_SEED + 3, index])


def caption_text(relation, subject_label, other_label) -> tf.Tensor:
    """The caption (a string scalar) of a relation between two digit labels; the other ignored for one-digit ones."""
    other = tf.where(relation < PAIR_RELATIONS, tf.strings.join(["the digit", tf.strings.as_string(other_label)], " "),
                     "the image")
    return tf.strings.join(["the digit", tf.strings.as_string(subject_label), "is", tf.gather(RELATIONS, relation),
                            other, "."], " ")


def _canvases(layout):
    """The `Source.compose` of a captioned dataset: canvas i of a split is drawn as `layout(i, labels)` says."""

    def compose(examples: tf.data.Dataset) -> tf.data.Dataset:
        split = examples.batch(2**31 - 1).get_single_element()
        images, labels = split["image"], split["label"]

        def example(index):
            relation, digits, corners = layout(index, labels)
            shown = tf.stack([tf.ones([], tf.uint8), tf.cast(relation < PAIR_RELATIONS, tf.uint8)])
            text = caption_text(relation, *tf.unstack(tf.gather(labels, digits)))
            return {"image": paste_digits(tf.gather(images, digits) * shown[:, None, None, None], corners, CANVAS),
                    "caption": text}

        return tf.data.Dataset.range(tf.size(labels, tf.int64)).map(example, num_parallel_calls=tf.data.AUTOTUNE)

    return compose


captioned_canvases = _canvases(caption_layout)
"""MNIST examples → {"image": uint8 [60, 60, 1], "caption": string}."""
held_out_canvases = _canvases(held_out_layout)
"""As `captioned_canvases`, with only the held-out captions (`HELD_OUT`)."""


# Caption accuracy: does a generated image show the digits its caption names, where it names them?

HELD_OUT_DATASETS = {"mnist_captions": "mnist_captions_held_out"}
"""A captioned dataset → its companion of held-out captions, for `caption_accuracy`."""


def parse_caption(caption: str) -> tuple[int, int, int | None]:
    """(relation index, subject digit, other digit or None) of an MNIST caption; ValueError otherwise."""
    words = caption.split()
    for relation, phrase in enumerate(RELATIONS):
        pair = relation < PAIR_RELATIONS
        expected = ["the", "digit", None, "is", *phrase.split(), "the", *(["digit", None] if pair else ["image"]), "."]
        if len(words) == len(expected) and all(want in (None, word) for want, word in zip(expected, words)):
            if words[2].isdigit() and (not pair or words[-2].isdigit()):
                return relation, int(words[2]), int(words[-2]) if pair else None
    raise ValueError(f"not an MNIST caption: {caption!r}")


def digit_windows(relation: int) -> list[tuple[int, int]]:
    """Top-left corners of the 28×28 windows where a caption's digits belong: the centre of each digit's
    range of corners (`BOXES`), the subject's first, the other digit's for two-digit captions."""
    centres = (BOXES[relation, :, :, 0] + BOXES[relation, :, :, 1]) // 2  # [digit, (row, column)]
    return [tuple(int(value) for value in centre) for centre in centres[:2 if relation < PAIR_RELATIONS else 1]]


def digit_crops(images, captions) -> tuple[np.ndarray, np.ndarray]:
    """Each named digit's window of its canvas, float [M, 28, 28, 1], and its label int64 [M], for
    canvases [N, 60, 60, 1] and their caption strings [N]."""
    crops, labels = [], []
    for image, caption in zip(np.asarray(images), captions):
        relation, subject, other = parse_caption(caption.decode() if isinstance(caption, bytes) else caption)
        for (row, column), label in zip(digit_windows(relation), (subject, other)):
            crops.append(image[row:row + DIGIT_SIZE, column:column + DIGIT_SIZE])
            labels.append(label)
    return np.stack(crops).astype(np.float32), np.array(labels, np.int64)


def fraction_read(classifier, images, captions) -> float:
    """The fraction of the digits named by `captions` that `classifier` (logits over the ten digits) reads
    as that digit in the window where the caption puts it, on `images`."""
    crops, labels = digit_crops(images, captions)
    logits = classifier.predict(crops, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def caption_accuracy(sample_from_caption, classifier, captions_by_set: dict, batch_size: int = 100) -> dict:
    """{set name: fraction_read of the images `sample_from_caption(captions, seeds)` draws}, caption i of each
    set drawn with seed i, for `captions_by_set`: set name → caption strings."""
    result = {}
    for name, texts in captions_by_set.items():
        images = np.concatenate([
            sample_from_caption(tf.constant(texts[start:start + batch_size]),
                                tf.range(start, min(start + batch_size, len(texts)), dtype=tf.int64)).numpy()
            for start in range(0, len(texts), batch_size)])
        result[name] = fraction_read(classifier, images, texts)
    return result
