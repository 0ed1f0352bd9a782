"""Input pipelines: TFDS datasets → batches of {"image": float32 [batch, H, W, C]}.

Models that ask for labels (`DatasetSpec.labels`) also get "label", int64 [batch]; models that ask for
captions (`DatasetSpec.captions`) get "caption": int64 [batch, max_words] word ids, tokenized here by the model's
tokenizer (`zoo.common.text.Tokenizer` over `DatasetSpec.vocabulary`), or the text, string [batch], without one.
Tokenizing in the pipeline keeps strings out of the training step, which tf.distribute cannot reduce.

Grey-scale images go to Bernoulli models binarized: dynamically for training
(a fresh draw x ~ Bernoulli(pixel/255) each time an example is seen, as in Burda
et al. 2016, Sec. 5), and with one fixed draw per example for evaluation, so test
numbers are reproducible. `binarized_mnist` is the fixed Larochelle–Murray
binarization and passes through unchanged.

`two_digit_mnist` is DRAW's two-digit task (Gregor et al. 2015, Sec. 4.2): two MNIST
digits placed at random on a 60×60 black canvas, intensities added and clipped at
white where they overlap; each canvas is a fixed function of its index (see
`two_digit_layout`), built from the local MNIST split.

`mnist_captions` is alignDRAW's MNIST with captions (Mansimov et al. 2016, Sec. 4.1, Appendix A): one or two
digits on a 60×60 canvas with a caption saying where; `mnist_captions_held_out` holds only the captions kept
out of `mnist_captions`, for evaluation (see `training.captions`).

Models of sets (`DatasetSpec.set_size` N > 0; Edwards & Storkey 2017) get sets of N items of one class
instead of items: "image" [batch, N, H, W, C], "label" the set's class [batch]. The train role builds them
from the classes a source does not hold out (`Source.held_out_classes`: MNIST digits 0–6), the eval and test
roles from the held-out ones (7–9), so that few-shot evaluation meets classes training never saw. Training
sets are drawn afresh each visit (a class uniformly, then N of its items without replacement); evaluation
sets are fixed: each class's items in split order, N at a time.

Models of text (`DatasetSpec.text`) get {"text": int64 [batch, max_words]}, word ids from the model's tokenizer
(`zoo.common.text.Tokenizer` with `TEXT_PUNCTUATION`): from a TFDS text dataset (`yelp_polarity_reviews`,
`imdb_reviews`, `lm1b`), or from a folder named by its path (`--dataset ../shared/data/quotes`) that holds
train.txt, validation.txt and test.txt, one text per line. Empty texts are skipped; texts longer than
`max_words` are cut there. The vocabulary is counted from the training texts (`counted_vocabulary`).

`coco_captions` is alignDRAW's main experiment (Mansimov et al. 2016, Sec. 4.2): each MS COCO image resized
to 32×32 and paired with each of its captions, one example per caption (TFDS `coco_captions`, the Karpathy
splits; for users with internet). Its vocabulary is counted from the training captions
(`counted_vocabulary`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from training import captions
from training.canvas import paste_digits
from zoo.common import text
from zoo.registry import DatasetSpec

ROLES = ("train", "eval", "test")


@dataclasses.dataclass(frozen=True)
class Source:
    """A TFDS dataset and which of its splits plays each role, or sets generated here (`generate`)."""

    tfds_name: str
    splits: dict  # role → TFDS split; "eval" is monitored every epoch
    binary: bool  # pixels are already in {0, 1}
    num_classes: int = 0  # 0: the dataset has no labels
    captions: bool = False  # examples carry "caption", a string
    compose: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None  # builds the examples from the TFDS ones
    held_out_classes: tuple[int, ...] = ()  # sets of these classes are for evaluation only (few-shot)
    classes_apart_by_split: bool = False  # the splits hold disjoint classes: sets use every class of their split
    # Sources whose every example is a set: (role, set size, max_examples, download) → (sets, how many).
    generate: Callable[[str, int, int | None, bool], tuple[tf.data.Dataset, int]] | None = None
    text_feature: str = ""  # a source of texts: the TFDS feature that holds them
    folder: str = ""  # a source of texts read from this folder's files (`splits`) instead of TFDS

    @property
    def text(self) -> bool:
        return bool(self.text_feature or self.folder)


TWO_DIGIT_CANVAS = 60  # Gregor et al. 2015, Sec. 4.2: 60×60
TWO_DIGIT_SEED = 20150216
"""Seeds the layout of the two-digit canvases: each canvas's partner digit and both digits' corners."""


def two_digit_layout(index, count) -> tuple[tf.Tensor, tf.Tensor]:
    """Canvas `index` of a split of `count` digits: (its second digit's index, int64 [2, 2] corners).

    Canvas i shows digit i and a partner digit drawn uniformly from the split, their top-left
    corners (row, column) uniform over the positions where a 28×28 digit fits on the canvas.
    """
    partner = tf.random.stateless_uniform([], [TWO_DIGIT_SEED, index], maxval=count, dtype=tf.int64)
    corners = tf.random.stateless_uniform([2, 2], [TWO_DIGIT_SEED + 1, index], maxval=TWO_DIGIT_CANVAS - 28 + 1,
                                          dtype=tf.int64)
    return partner, corners


def two_digit_canvases(examples: tf.data.Dataset) -> tf.data.Dataset:
    """MNIST examples → {"image": uint8 [60, 60, 1]}: two digits added and clipped at 255 (Sec. 4.2)."""
    digits = examples.map(lambda example: example["image"]).batch(2**31 - 1).get_single_element()
    count = tf.shape(digits, out_type=tf.int64)[0]

    def canvas(index):
        partner, corners = two_digit_layout(index, count)
        return {"image": paste_digits(tf.gather(digits, tf.stack([index, partner])), corners, TWO_DIGIT_CANVAS)}

    return tf.data.Dataset.range(count).map(canvas, num_parallel_calls=tf.data.AUTOTUNE)


COCO_SIZE = 32  # Mansimov et al. 2016, Sec. 4.2: MS COCO images at 32×32


def coco_caption_pairs(examples: tf.data.Dataset) -> tf.data.Dataset:
    """COCO examples → {"image": uint8 [32, 32, 3], "caption": string}, one per caption of each image.

    The whole image is resized (area averaging, aspect ratio not kept), as the authors' 32×32 arrays are.
    """
    def pairs(example):
        resized = tf.image.resize(example["image"], [COCO_SIZE, COCO_SIZE], method="area")
        image = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
        texts = example["captions"]["text"]
        return tf.data.Dataset.from_tensor_slices({"image": tf.repeat(image[None], tf.size(texts), axis=0),
                                                   "caption": texts})

    return examples.flat_map(pairs)


OMNIGLOT_SIZE = 28  # Edwards & Storkey 2017, Sec. 5.3: Omniglot characters resized to 28×28


def omniglot_characters(examples: tf.data.Dataset) -> tf.data.Dataset:
    """TFDS `omniglot` examples (105×105 RGB, black strokes on white) → {"image": uint8 [28, 28, 1], white
    strokes on black as the MNIST digits, "label": the character}: grey, resized by area averaging, inverted."""
    def character(example):
        grey = tf.image.rgb_to_grayscale(tf.cast(example["image"], tf.float32))
        resized = tf.image.resize(grey, [OMNIGLOT_SIZE, OMNIGLOT_SIZE], method="area")
        return {"image": tf.cast(tf.clip_by_value(tf.round(255.0 - resized), 0.0, 255.0), tf.uint8),
                "label": example["label"]}

    return examples.map(character, num_parallel_calls=tf.data.AUTOTUNE)


SYNTHETIC_FAMILIES = ("gaussian", "uniform", "exponential", "laplace")  # label order of `synthetic_1d`
SYNTHETIC_SEED = 20161104


SYNTHETIC_SETS = {"train": 10_000, "eval": 1_000, "test": 1_000}  # Sec. 5.1: 10K training sets; the others ours


def synthetic_1d_sets(role: str, set_size: int, max_examples: int | None = None, download: bool = False
                      ) -> tuple[tf.data.Dataset, int]:
    """The Neural Statistician's synthetic sets (Edwards & Storkey 2017, Sec. 5.1): each set is `set_size`
    samples (the paper: 200) of a Gaussian, uniform, exponential or Laplace distribution, the family drawn
    with equal probability, its mean from U[−1, 1] and its variance from U[0.5, 2]. Samples are drawn from
    the family's standard form (mean 0, variance 1) and then shifted and scaled, so each set's distribution
    has exactly the drawn mean and variance. Set i of a role is a fixed function of (role, i).

    Items are "image" [set_size, 1]; "label" is the family (`SYNTHETIC_FAMILIES`), "mean" and "variance" the
    drawn parameters.
    """
    role_index = ROLES.index(role)
    count = min(SYNTHETIC_SETS[role], max_examples or SYNTHETIC_SETS[role])

    def draw(index):
        seed = tf.random.experimental.stateless_fold_in(tf.constant([SYNTHETIC_SEED, role_index]), index)
        seeds = tf.random.experimental.stateless_split(seed, 3)
        family = tf.random.stateless_uniform([], seeds[0], 0, len(SYNTHETIC_FAMILIES), tf.int64)
        mean, variance = tf.unstack(tf.random.stateless_uniform([2], seeds[1], [-1.0, 0.5], [1.0, 2.0]))
        uniform = tf.random.stateless_uniform([set_size, 1], seeds[2], 1e-7, 1.0)  # one draw per sample
        standard = tf.switch_case(tf.cast(family, tf.int32), [
            lambda: tf.sqrt(2.0) * tf.math.erfinv(2.0 * uniform - 1.0),   # N(0, 1) by inversion
            lambda: tf.sqrt(3.0) * (2.0 * uniform - 1.0),                 # U[−√3, √3]
            lambda: -tf.math.log(uniform) - 1.0,                          # Exp(1) − 1
            lambda: -tf.sign(uniform - 0.5) * tf.math.log1p(-2.0 * tf.abs(uniform - 0.5)) / tf.sqrt(2.0),
        ])                                                                # Laplace(0, 1/√2)
        return {"image": mean + tf.sqrt(variance) * standard, "label": family, "mean": mean, "variance": variance}

    return tf.data.Dataset.range(count).map(draw, num_parallel_calls=tf.data.AUTOTUNE), count


SPATIAL_SEED = 20161105


def spatial_mnist_sets(role: str, set_size: int, max_examples: int | None = None, download: bool = True
                       ) -> tuple[tf.data.Dataset, int]:
    """Spatial MNIST (Edwards & Storkey 2017, Sec. 5.2): each MNIST digit as a set of `set_size` (the paper:
    50) points (x, y), pixels drawn with probability proportional to their intensity, each coordinate then
    moved by U[0, 1) noise; x runs left to right and y bottom to top, in pixels. The points of the i-th digit
    of a split are a fixed function of i. "label" is the digit."""
    digits = _load_tfds(DatasetSpec("mnist", binarize=False), role, max_examples, download)

    def points(index, example):
        image = tf.cast(example["image"][..., 0], tf.float32)
        height, width = image.shape
        seed = tf.random.experimental.stateless_fold_in(tf.constant([SPATIAL_SEED, ROLES.index(role)]), index)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        pixels = tf.random.stateless_categorical(tf.math.log(tf.reshape(image, [1, -1])), set_size, seeds[0])[0]
        rows, columns = pixels // width, pixels % width
        corners = tf.cast(tf.stack([columns, height - 1 - rows], axis=-1), tf.float32)
        return {"image": corners + tf.random.stateless_uniform([set_size, 2], seeds[1]), "label": example["label"]}

    return digits.enumerate().map(points, num_parallel_calls=tf.data.AUTOTUNE), int(digits.cardinality())


SOURCES = {
    "mnist": Source("mnist", {"train": "train", "eval": "test", "test": "test"}, binary=False, num_classes=10,
                    held_out_classes=(7, 8, 9)),
    "binarized_mnist": Source(
        "binarized_mnist", {"train": "train", "eval": "validation", "test": "test"}, binary=True
    ),
    "fashion_mnist": Source(
        "fashion_mnist", {"train": "train", "eval": "test", "test": "test"}, binary=False, num_classes=10,
        held_out_classes=(7, 8, 9),  # sneaker, bag, ankle boot
    ),
    # Colour, 32×32×3, for users with internet (not prepared on the development machines).
    "cifar10": Source("cifar10", {"train": "train", "eval": "test", "test": "test"}, binary=False, num_classes=10),
    "svhn_cropped": Source(
        "svhn_cropped", {"train": "train", "eval": "test", "test": "test"}, binary=False, num_classes=10
    ),
    "two_digit_mnist": Source(
        "mnist", {"train": "train", "eval": "test", "test": "test"}, binary=False, compose=two_digit_canvases
    ),
    "mnist_captions": Source(
        "mnist", {"train": "train", "eval": "test", "test": "test"}, binary=False, captions=True,
        compose=captions.captioned_canvases,
    ),
    "mnist_captions_held_out": Source(  # evaluation only: its captions are the ones training never sees
        "mnist", {"eval": "test", "test": "test"}, binary=False, captions=True, compose=captions.held_out_canvases
    ),
    "omniglot": Source(  # for users with internet; Sec. 5.3. Train: the background alphabets, eval/test: the others
        "omniglot", {"train": "train", "eval": "test", "test": "test"}, binary=False, num_classes=1623,
        compose=omniglot_characters, classes_apart_by_split=True,
    ),
    "synthetic_1d": Source(  # Sec. 5.1: 10 000 training sets; ours: 1 000 for each evaluation role
        "", {"train": "train", "eval": "eval", "test": "test"}, binary=False, num_classes=len(SYNTHETIC_FAMILIES),
        generate=synthetic_1d_sets,
    ),
    "spatial_mnist": Source(
        "mnist", {"train": "train", "eval": "test", "test": "test"}, binary=False, num_classes=10,
        generate=spatial_mnist_sets,
    ),
    # Texts, for users with internet. Yelp: the catalog's nearest to Yang et al. 2017's Yelp reviews (Sec. 4.1).
    "yelp_polarity_reviews": Source("yelp_polarity_reviews", {"train": "train", "eval": "test", "test": "test"},
                                    binary=False, text_feature="text"),
    "imdb_reviews": Source("imdb_reviews", {"train": "train", "eval": "test", "test": "test"}, binary=False,
                           text_feature="text"),
    "lm1b": Source("lm1b", {"train": "train", "eval": "test", "test": "test"}, binary=False, text_feature="text"),
    "coco_captions": Source(  # for users with internet: about 20 GB to download
        "coco_captions", {"train": "train", "eval": "val", "test": "test"}, binary=False, captions=True,
        compose=coco_caption_pairs,
    ),
}

EVALUATION_BINARIZATION_SEED = 20160201
"""Seeds the fixed binarization of evaluation splits (one draw per example index)."""


class DataError(RuntimeError):
    """A dataset that cannot be loaded, with what to do about it."""


def data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


TEXT_FILES = {"train": "train.txt", "eval": "validation.txt", "test": "test.txt"}  # a text folder's splits


def _source(name: str) -> Source:
    if name in SOURCES:
        return SOURCES[name]
    if os.path.isdir(name):
        return Source("", TEXT_FILES, binary=False, folder=name)
    raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}, or the path of a "
                    f"folder of texts (train.txt, validation.txt, test.txt; one text per line)")


def canonical_name(name: str) -> str:
    """The dataset as a run records it: a folder of texts by its absolute path, so that --resume and
    training.evaluate find it from any working directory; a catalog name as it is."""
    return name if name in SOURCES or not os.path.isdir(name) else os.path.abspath(name)


def num_classes(name: str) -> int:
    """Classes of a dataset's labels; 0 when it has none."""
    return _source(name).num_classes


def split_name(spec: DatasetSpec, role: str, max_examples: int | None = None) -> str:
    splits = _source(spec.name).splits
    if role not in splits:
        fix = ("it is for evaluation only: train on another dataset (--dataset)" if role == "train"
               else f"pass --split {' or --split '.join(splits)}")
        raise DataError(f"dataset {spec.name!r} has no {role!r} role, only {', '.join(splits)}; {fix}")
    split = splits[role]
    return f"{split}[:{max_examples}]" if max_examples else split


def _load_tfds(spec: DatasetSpec, role: str, max_examples: int | None, download: bool):
    """The role's split of the source as TFDS gives it, before any composition."""
    source = _source(spec.name)
    split = split_name(spec, role, max_examples)
    try:
        return tfds.load(
            source.tfds_name, split=split, data_dir=data_dir(), download=download,
            shuffle_files=role == "train" and source.compose is None,  # a composition reads the digits in order
        )
    except Exception as error:  # TFDS raises many types: missing files, no network, bad split
        raise DataError(
            f"cannot load TFDS dataset {source.tfds_name!r} (split {split!r}) from TFDS_DATA_DIR="
            f"{data_dir()}: {type(error).__name__}: {error}\n"
            f"Fix: point TFDS_DATA_DIR at a folder holding the prepared dataset (e.g. built with "
            f"`tfds build {source.tfds_name}` on a machine with internet), or "
            + ("check the internet connection: TFDS downloads the dataset on first use." if download
               else "allow TFDS to download it (drop --no_download).")
        ) from None


def _texts(spec: DatasetSpec, role: str, max_examples: int | None, download: bool) -> tf.data.Dataset:
    """The role's texts, string, without surrounding white space; empty ones skipped."""
    source = _source(spec.name)
    if not spec.text:
        raise DataError(f"dataset {spec.name!r} holds texts, not images; train a model of text on it "
                        f"(zoo.lstm_lm, zoo.text_vae)")
    if not source.text:
        texts = ", ".join(name for name, other in sorted(SOURCES.items()) if other.text)
        raise DataError(f"dataset {spec.name!r} holds no texts, which this model needs; use one of: {texts}, or "
                        f"the path of a folder of texts (train.txt, validation.txt, test.txt; one text per line)")
    if source.folder:
        path = os.path.join(source.folder, split_name(spec, role))
        if not os.path.isfile(path):
            raise DataError(f"{path} is missing: a folder of texts holds {', '.join(TEXT_FILES.values())}, one text "
                            f"per line")
        lines = tf.data.TextLineDataset(path)
    else:
        lines = _load_tfds(spec, role, max_examples, download).map(lambda example: example[source.text_feature])
    texts = lines.map(tf.strings.strip).filter(lambda line: tf.strings.length(line) > 0)
    return texts.take(max_examples) if max_examples and source.folder else texts


def _examples(spec: DatasetSpec, role: str, max_examples: int | None, download: bool) -> tf.data.Dataset:
    """The role's examples, composed (`Source.compose`), with the keys the model asks for."""
    source = _source(spec.name)
    if source.text:
        raise DataError(f"dataset {spec.name!r} holds texts, not images; train a model of text on it "
                        f"(zoo.lstm_lm, zoo.text_vae)")
    if spec.labels and not source.num_classes:
        labelled = ", ".join(name for name, other in sorted(SOURCES.items()) if other.num_classes)
        raise DataError(f"dataset {spec.name!r} has no labels, which this model needs; use one of: {labelled}")
    if spec.set_size and not (source.held_out_classes or source.classes_apart_by_split):
        classed = ", ".join(name for name, other in sorted(SOURCES.items())
                            if other.held_out_classes or other.classes_apart_by_split)
        raise DataError(f"dataset {spec.name!r} has no held-out classes to build evaluation sets from, which a "
                        f"model of sets needs; use one of: {classed}")
    if spec.captions and not source.captions:
        captioned = ", ".join(name for name, other in sorted(SOURCES.items()) if other.captions)
        raise DataError(f"dataset {spec.name!r} has no captions, which this model needs; use one of: {captioned}")
    dataset = _load_tfds(spec, role, max_examples, download)
    if source.compose:
        dataset = source.compose(dataset)
    keys = ("image",) + ("label",) * (spec.labels or spec.set_size > 0) + ("caption",) * spec.captions
    return dataset.map(lambda example: {key: example[key] for key in keys}, num_parallel_calls=tf.data.AUTOTUNE)


def counted_vocabulary(spec: DatasetSpec, *, max_examples: int | None = None, download: bool = True
                       ) -> tuple[str, ...]:
    """Every word of the training captions, or texts for a model of text (`zoo.common.text.words`), most
    frequent first, ties in alphabetical order: the vocabulary of a model whose DatasetSpec has
    `count_vocabulary`. The reserved words (padding, <unk>, <bos>, <eos>) are left out."""
    if spec.text:
        strings, punctuation = _texts(spec, "train", max_examples, download), text.TEXT_PUNCTUATION
    else:
        strings = _examples(spec, "train", max_examples, download).map(lambda example: example["caption"])
        punctuation = text.PUNCTUATION
    counts = collections.Counter()
    for batch in strings.batch(4096):
        counts.update(word.decode() for line in text.words(batch, punctuation).to_list() for word in line)
    for reserved in (text.PADDING, text.UNKNOWN, text.BEGIN, text.END):
        counts.pop(reserved, None)
    return tuple(sorted(counts, key=lambda word: (-counts[word], word)))


def _to_float(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32) / 255.0


def load(
    spec: DatasetSpec,
    role: str,
    batch_size: int,
    *,
    max_examples: int | None = None,
    download: bool = True,
) -> tuple[tf.data.Dataset, int]:
    """Returns (batched dataset of {"image": float32[, "label": int64][, "caption": int64 or string]}, or of
    {"text": int64} for a model of text, number of examples).

    The "train" role repeats forever, reshuffles every epoch and drops the last
    partial batch (callers pass steps_per_epoch = examples // batch_size); "eval"
    and "test" are single ordered passes.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    source = _source(spec.name)
    train = role == "train"
    if spec.text or source.text:
        texts = _texts(spec, role, max_examples, download).cache()
        count = int(texts.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
        if train:
            texts = texts.shuffle(count, reshuffle_each_iteration=True).repeat()
        batches = texts.batch(batch_size, drop_remainder=train).map(lambda batch: {"text": batch})
        if not train:
            batches = batches.apply(tf.data.experimental.assert_cardinality(steps(count, batch_size, role)))
        return _finish(batches, spec), count
    if source.generate:
        if not spec.set_size:
            raise DataError(f"dataset {spec.name!r} is made of sets, for models of sets (DatasetSpec.set_size)")
        split_name(spec, role)  # refuses a role the source lacks
        sets, count = source.generate(role, spec.set_size, max_examples, download)
        sets = sets.cache()
        if train:
            sets = sets.shuffle(count, reshuffle_each_iteration=True).repeat()
        return _finish(sets.batch(batch_size, drop_remainder=train), spec), count
    examples = _examples(spec, role, max_examples, download)

    if source.binary:
        prepare = lambda index, image: tf.cast(image, tf.float32)  # noqa: E731
    elif not spec.binarize:
        prepare = lambda index, image: _to_float(image)  # noqa: E731
    elif train:
        prepare = lambda index, image: tf.cast(  # noqa: E731
            tf.random.uniform(tf.shape(image)) < _to_float(image), tf.float32
        )
    else:
        prepare = lambda index, image: tf.cast(  # noqa: E731
            tf.random.stateless_uniform(tf.shape(image), seed=[EVALUATION_BINARIZATION_SEED, index])
            < _to_float(image),
            tf.float32,
        )

    def features(index, example):
        return {**example, "image": prepare(index, example["image"])}

    if spec.set_size:
        sets, num_sets = _sets(examples.enumerate().cache(), features, spec.set_size, source, train)
        return _finish(sets.batch(batch_size, drop_remainder=train), spec), num_sets
    examples = examples.enumerate().cache()  # decode each image once
    # Fill the cache with one full pass now, which also counts the examples (a composition may make
    # several of one TFDS example). Its first pass would fill it otherwise, and a first reader that
    # stops early (one batch for the loss before training, --validation_steps, a grid) would discard
    # what it cached, with a tf.data warning, and leave the decoding to the next pass.
    num_examples = int(examples.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
    if train:
        examples = examples.shuffle(num_examples, reshuffle_each_iteration=True).repeat()
    batches = examples.map(features, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=train)
    if not train:  # a composition (one example per caption) hides the length, which Keras reads for a pass's end
        batches = batches.apply(tf.data.experimental.assert_cardinality(steps(num_examples, batch_size, role)))
    return _finish(batches, spec), num_examples


def _finish(batches: tf.data.Dataset, spec: DatasetSpec) -> tf.data.Dataset:
    """Tokenized captions or texts, prefetching, and sharding by data under tf.distribute."""
    if spec.captions and spec.vocabulary:
        tokenizer = text.Tokenizer(spec.vocabulary, spec.max_words)
        batches = batches.map(lambda batch: {**batch, "caption": tokenizer(batch["caption"])},
                              num_parallel_calls=tf.data.AUTOTUNE)
    if spec.text:
        tokenizer = text.Tokenizer(spec.vocabulary, spec.max_words, text.TEXT_PUNCTUATION)
        batches = batches.map(lambda batch: {"text": tokenizer(batch["text"])}, num_parallel_calls=tf.data.AUTOTUNE)
    batches = batches.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options)


def _sets(indexed: tf.data.Dataset, features: Callable, set_size: int, source: Source, train: bool
          ) -> tuple[tf.data.Dataset, int]:
    """(sets of `set_size` items of one class, {"image": [set_size, ...], "label": []}, sets per pass).

    `indexed` holds (index, example) pairs, cached. The train role uses the classes that the source
    does not hold out, the others the held-out ones; a source whose splits hold disjoint classes
    (Omniglot's alphabets) uses every class of the role's split. Training: each set picks a class
    uniformly, then `set_size` of its items without replacement (each class reshuffled every pass
    through it), each item prepared afresh. Evaluation: each class's items in order, `set_size` at a
    time, class after class; a class's last partial set is dropped.
    """
    labels = indexed.map(lambda _, example: example["label"]).batch(65536)
    counted = collections.Counter(int(label) for batch in labels for label in batch.numpy())
    held_out = set(source.held_out_classes)
    counts = {c: count for c, count in sorted(counted.items())
              if source.classes_apart_by_split or (c in held_out) != train}
    short = {c: count for c, count in counts.items() if count < set_size}
    if short:
        shown = sorted(short)[:10]
        raise DataError(f"sets of {set_size} need that many items of each class, but {len(short)} classes (e.g. "
                        f"{shown}) have fewer ({sorted(short.values())[:10]}): lower the set size or raise "
                        f"--max_examples")
    classes = list(counts)

    def of_class(c):
        items = indexed.filter(lambda _, example: example["label"] == c)
        if train:
            items = items.shuffle(counts[c], reshuffle_each_iteration=True).repeat()
        items = items.map(features, num_parallel_calls=tf.data.AUTOTUNE)
        return items.batch(set_size, drop_remainder=True).map(
            lambda batch: {**batch, "label": batch["label"][0]})

    per_class = [of_class(c) for c in classes]
    num_sets = sum(count // set_size for count in counts.values())
    if train:
        return tf.data.Dataset.sample_from_datasets(per_class), num_sets
    in_order = tf.data.Dataset.from_tensor_slices(
        np.repeat(np.arange(len(classes), dtype=np.int64), [counts[c] // set_size for c in classes]))
    sets = tf.data.Dataset.choose_from_datasets(per_class, in_order)  # class after class
    return sets.apply(tf.data.experimental.assert_cardinality(num_sets)), num_sets  # filters hide the count


def check_image_shape(dataset: tf.data.Dataset, spec: DatasetSpec, image_shape) -> None:
    """Refuses a dataset whose items are not what the model expects, naming the fix: images of the model's
    `image_shape` (its config's), or for a model of sets, sets of `spec.set_size` items of `spec.item_shape`
    (vectors) or of `image_shape` (images)."""
    if spec.text:
        return  # texts have no shape to check: the tokenizer cuts them to the model's max_words
    shape = tuple(dataset.element_spec["image"].shape[1:])
    if not spec.set_size:
        if shape != tuple(image_shape):
            raise DataError(f"dataset {spec.name!r} has images of shape {shape}, but the model's image_shape is "
                            f"{tuple(image_shape)}; pass --set image_shape={','.join(map(str, shape))}")
        return
    item_shape = tuple(spec.item_shape or image_shape)
    if shape[1:] != item_shape:
        setting = "item_size" if len(shape[1:]) == 1 else "image_shape"
        raise DataError(f"dataset {spec.name!r} has items of shape {shape[1:]}, but the model's are {item_shape}; "
                        f"pass --set {setting}={','.join(map(str, shape[1:]))}")


def steps(num_examples: int, batch_size: int, role: str) -> int:
    """Batches in one pass: the train role drops the partial batch."""
    return num_examples // batch_size if role == "train" else math.ceil(num_examples / batch_size)
