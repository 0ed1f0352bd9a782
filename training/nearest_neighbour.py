"""1-nearest-neighbour classification accuracy of learned features.

Donahue et al. (BiGAN, ICLR 2017, arXiv:1605.09782, Table 1) judge an encoder's features on
permutation-invariant MNIST by labelling each test image with the label of its nearest train
image in feature space and counting how often that label is right; their BiGAN scores about
97% there (the authors' README: 97.35% after 400 epochs). Their code (github.com/jeffdonahue/bigan,
lib/metrics.py) offers two nearnesses, and both are measured: Euclidean distance ‖a − b‖, which their
training script (train_gan.py) uses, and cosine distance 1 − a·b / (‖a‖ ‖b‖).

The features come from the model (`zoo.contract.EncoderFeatures.encode_features`) for one pass
over the train split (the neighbours) and one over the evaluated split (the queries), the
images presented as the model sees them in training. The distance matrix is never held
whole: CHUNK queries at a time against every neighbour.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

from training import data
from zoo.registry import DatasetSpec

CHUNK = 256  # queries per block of the similarity matrix: 256 × 60 000 neighbours in float32 is 61 MB
BATCH_SIZE = 500  # images encoded at once


METRICS = ("cosine", "euclidean")


def nearest_neighbour_accuracy(reference_features, reference_labels, query_features, query_labels,
                               chunk: int = CHUNK, metric: str = "cosine") -> float:
    """The fraction of queries whose nearest reference by `metric` distance has the query's label.

    Both are a matrix product, computed for `chunk` queries at a time (memory is chunk ×
    references): cosine similarity of rows scaled to unit length once (a zero vector has
    similarity 0 with every row), and for Euclidean distance the score a·b − ‖b‖²/2, which
    orders references b as −‖a − b‖² does. Of equally near references the first wins.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    references, queries = (_rows(features, unit=metric == "cosine") for features in (reference_features,
                                                                                       query_features))
    offsets = 0.0 if metric == "cosine" else 0.5 * np.sum(references**2, axis=1)
    reference_labels, query_labels = np.asarray(reference_labels), np.asarray(query_labels)
    correct = 0
    for start in range(0, len(queries), chunk):
        nearest = np.argmax(queries[start:start + chunk] @ references.T - offsets, axis=1)
        correct += int(np.sum(reference_labels[nearest] == query_labels[start:start + chunk]))
    return correct / len(queries)


def _rows(features, unit: bool) -> np.ndarray:
    rows = np.asarray(features, np.float32).reshape(len(features), -1)
    if not unit:
        return rows
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def check(dataset: str, role: str) -> None:
    """Raises DataError when the 1-NN accuracy cannot be measured on `role`'s split of `dataset`."""
    if role == "train":
        raise data.DataError("the 1-nearest-neighbour accuracy labels each image of the split by its nearest train "
                             "image, so on the train split every image would find itself: pass --split test or eval")
    if not data.num_classes(dataset):
        labelled = ", ".join(name for name, source in sorted(data.SOURCES.items()) if source.num_classes)
        raise data.DataError(f"the 1-nearest-neighbour accuracy needs labels, which dataset {dataset!r} has not; "
                             f"train on one of: {labelled}")


def encoded(encode_features: Callable, spec: DatasetSpec, role: str, *, max_examples: int | None = None,
            download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, D], labels [N]) of one pass over `role`'s split of the model's dataset `spec`.

    The train role drops its last partial batch (`training.data.load`), so N may fall short of
    the split by less than BATCH_SIZE.
    """
    batch_size = min(BATCH_SIZE, max_examples or BATCH_SIZE)
    batches, examples = data.load(DatasetSpec(spec.name, binarize=spec.binarize, labels=True), role, batch_size,
                                  max_examples=max_examples, download=download)
    features, labels = [], []
    for batch in itertools.islice(batches, data.steps(examples, batch_size, role)):
        features.append(np.asarray(encode_features(batch["image"])))
        labels.append(batch["label"].numpy())
    return np.concatenate(features), np.concatenate(labels)


def measure(encode_features: Callable, spec: DatasetSpec, role: str, *, max_examples: int | None = None,
            download: bool = True) -> dict:
    """The 1-NN accuracy of `role`'s split among the train split's first `max_examples` images (all without it):
    `nearest_neighbour_accuracy` by cosine distance and `nearest_neighbour_accuracy_euclidean`."""
    references, reference_labels = encoded(encode_features, spec, "train", max_examples=max_examples,
                                           download=download)
    queries, query_labels = encoded(encode_features, spec, role, max_examples=max_examples, download=download)
    accuracy = {metric: nearest_neighbour_accuracy(references, reference_labels, queries, query_labels, metric=metric)
                for metric in METRICS}
    return {"nearest_neighbour_accuracy": accuracy["cosine"],
            "nearest_neighbour_accuracy_euclidean": accuracy["euclidean"],
            "nearest_neighbour_references": len(references)}
