"""Small stand-ins for the datasets the zoo loads, written in TFDS's own format by TFDS's own builders.

The suite trains, evaluates and serves tiny models on `mnist`, `binarized_mnist` and
`fashion_mnist`, and loads the colour `cifar10` and `svhn_cropped` and the captioned `coco_captions`. So that it runs on
a machine holding only the clone (no prepared data, no network), `write(data_dir)`
makes a TFDS data directory with those names, their versions, features and splits,
but a few thousand generated images: each class is a few thick strokes (a "glyph")
drawn at a random offset and brightness (and, in colour, tint), so the images are
digit-like enough to train on (a classifier learns the classes, a VAE's loss falls)
and tiny to write. `tfds.load(name)` — in this process or in any child process
pointed at the folder with `TFDS_DATA_DIR` — reads them like the real thing.

The builders subclass the catalog's own (`tfds.builder_cls(name)`), so the
features, versions and file layout are TFDS's; only the examples are ours.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SIZE = 28
NUM_CLASSES = 10
SPLITS = {  # name → {split: examples}; the real splits are 60k/10k (mnist, fashion) and 50k/10k/10k
    "mnist": {"train": 3000, "test": 1000},
    "fashion_mnist": {"train": 3000, "test": 1000},
    "binarized_mnist": {"train": 2000, "validation": 500, "test": 500},
    "cifar10": {"train": 1000, "test": 300},  # real: 50k / 10k, 32×32×3
    "svhn_cropped": {"train": 1000, "test": 300},  # real: 73k / 26k (and 531k "extra"), 32×32×3
    "coco_captions": {"train": 60, "val": 20, "test": 20},  # real: 83k / 5k / 5k images (and 30k "restval")
}
SEEDS = {"mnist": 1, "fashion_mnist": 2, "binarized_mnist": 3, "cifar10": 4, "svhn_cropped": 5, "coco_captions": 6}
COLOUR = {"cifar10", "svhn_cropped"}  # 32×32×3 with an "id" feature: the glyphs padded by 2 and tinted


def _glyphs(rng: np.random.Generator) -> np.ndarray:
    """float [10, 28, 28] in [0, 1]: per class, three thick strokes between random points of the central 20×20."""
    rows, columns = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    glyphs = np.zeros((NUM_CLASSES, SIZE, SIZE))
    for glyph in glyphs:
        for start, end in rng.uniform(6, 22, size=(3, 2, 2)):
            direction = end - start
            along = ((rows - start[0]) * direction[0] + (columns - start[1]) * direction[1]) / (direction @ direction)
            along = np.clip(along, 0.0, 1.0)
            distance = np.hypot(rows - start[0] - along * direction[0], columns - start[1] - along * direction[1])
            glyph[:] = np.maximum(glyph, np.clip(2.0 - distance, 0.0, 1.0))  # 1 on the stroke, a 1-pixel ramp
    return glyphs


def images_and_labels(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 28, 28, 1] grey images (0 … 255), [N, 32, 32, 3] for COLOUR, and int64 [N] labels,
    deterministic per (name, split)."""
    rng = np.random.default_rng([SEEDS[name], sorted(SPLITS[name]).index(split)])
    glyphs = _glyphs(np.random.default_rng(SEEDS[name]))  # the same classes in every split
    count = SPLITS[name][split]
    labels = rng.integers(0, NUM_CLASSES, size=count)
    shifts = rng.integers(-3, 4, size=(count, 2))
    brightness = rng.uniform(0.6, 1.0, size=(count, 1, 1))
    images = np.stack([np.roll(glyphs[label], tuple(shift), axis=(0, 1)) for label, shift in zip(labels, shifts)])
    images = (images * brightness)[..., None]
    if name in COLOUR:
        images = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)]) * rng.uniform(0.3, 1.0, size=(count, 1, 1, 3))
    return np.round(255 * images).astype(np.uint8), labels.astype(np.int64)


def _examples(name: str, split: str, binarize: bool):
    images, labels = images_and_labels(name, split)
    if binarize:  # one fixed draw per image, as the Larochelle–Murray files are
        draws = np.random.default_rng([SEEDS[name], 99]).uniform(size=images.shape)
        images = (draws < images / 255.0).astype(np.uint8)
    for index, (image, label) in enumerate(zip(images, labels)):
        features = {"image": image} if binarize else {"image": image, "label": label}
        yield index, ({**features, "id": f"{split}_{index:05d}"} if name in COLOUR else features)


COCO_COLOURS = ("red", "green", "blue", "white")
COCO_CAPTIONS = ("a {colour} shape of kind {label} .", "the {colour} shape {label} on a dark background .",
                 "a picture of shape {label} in {colour} .", "shape {label} , {colour} , in the middle .",
                 "a {colour} drawing of the shape {label} .")
"""Five captions per COCO stand-in image, as COCO has five: the glyph's class and its colour in words."""


def _coco_examples(split: str):
    """COCO stand-ins: a glyph of `svhn_cropped`'s kind, pure red, green, blue or white, on a 40×48 image
    (not square, as COCO's are not), with five captions naming its class and colour and no objects."""
    rng = np.random.default_rng([SEEDS["coco_captions"], sorted(SPLITS["coco_captions"]).index(split)])
    glyphs = _glyphs(np.random.default_rng(SEEDS["coco_captions"]))
    tints = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "white": (1, 1, 1)}
    for index in range(SPLITS["coco_captions"][split]):
        label, colour = int(rng.integers(NUM_CLASSES)), COCO_COLOURS[rng.integers(len(COCO_COLOURS))]
        image = np.pad(glyphs[label], [(6, 6), (10, 10)])[..., None] * np.array(tints[colour])
        captions = [{"id": 5 * index + number, "text": template.format(colour=colour, label=label)}
                    for number, template in enumerate(COCO_CAPTIONS)]
        yield index, {"image": np.round(255 * image).astype(np.uint8), "image/filename": f"{split}_{index:05d}.jpg",
                      "image/id": index, "captions": captions,
                      "objects": {"area": [], "bbox": np.zeros((0, 4), np.float32), "id": [], "is_crowd": [],
                                  "label": []}}


def _builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    catalog = tfds.builder_cls(name)

    class Synthetic(catalog, skip_registration=True):
        def _split_generators(self, dl_manager):
            if name == "coco_captions":
                return {split: _coco_examples(split) for split in SPLITS[name]}
            return {split: _examples(name, split, binarize=name == "binarized_mnist") for split in SPLITS[name]}

    Synthetic.name = catalog.name
    return Synthetic(data_dir=data_dir)


def write(data_dir: str) -> None:
    """Writes the datasets of SPLITS into `data_dir` (a TFDS data directory)."""
    tfds.disable_progress_bar()
    for name in SPLITS:
        _builder(name, data_dir).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
