"""Sample quality from samples alone: Fréchet distance, classifier score and mode coverage.

A model's samples `model.sample(seeds)` for the fixed seeds 0, 1, …, N − 1 (so the
numbers of a run are reproducible) are compared with real images through a feature
extractor, a network that maps an image to a feature vector and to class posteriors
p(y | x):

* **Fréchet distance** (FID; Heusel et al. 2017, arXiv:1706.08500): each set's
  features are summarised by a Gaussian with mean μ and covariance Σ, and

      FID = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}),

  the squared 2-Wasserstein distance between the two Gaussians. 0 for equal
  statistics; lower is better.
* **Classifier score** (the Inception score of Salimans et al. 2016, arXiv:1606.03498,
  Sec. 4): exp(E_x KL(p(y | x) ‖ p(y))) with p(y) = E_x p(y | x). Between 1 and the
  number of classes K; high when every sample is confidently one class and the
  classes are evenly used.
* **Mode coverage**: how many of the K classes are the most probable class of enough
  samples (see `mode_coverage`), and KL(sampled class histogram ‖ uniform) in nats,
  the two numbers Metz et al. 2017 (arXiv:1611.02163) report with a pretrained
  classifier on stacked MNIST.

Inception-v3 weights cannot be downloaded everywhere, so the default extractor is the
usual substitute for MNIST-like data: a small CNN trained once on the dataset's train
split and cached (`cache_dir()`); its 128-d penultimate layer gives the features and its
softmax the posteriors over the dataset's 10 classes. With a local Inception-v3 weights
file the same code computes the usual FID (2048-d pool features) and Inception score.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import sys
import tempfile
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from training import data
from zoo.registry import DatasetSpec

CLASSIFIER_DATASETS = {"mnist": "mnist", "binarized_mnist": "mnist", "fashion_mnist": "fashion_mnist"}
"""Whose classifier judges each dataset: binarized MNIST has no labels, but the same digits as MNIST."""

MODE_THRESHOLD = 0.1
"""A class is covered when it receives at least this fraction of its uniform share N / K of the samples."""

CLASSIFIER_VERSION = 1  # part of the cache file name: change it when the architecture or training changes
INCEPTION_SIZE = (299, 299)  # the input size of keras.applications.InceptionV3 with its top
BATCH_SIZE = 500


class SampleQualityError(RuntimeError):
    """A feature extractor that cannot be built, with what to do about it."""


# The metrics: numpy, float64.


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, as in Heusel et al.'s code) of features [N, D], N ≥ 2."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """M^{1/2} of a symmetric positive semi-definite M; rounding's tiny negative eigenvalues become 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mean_a, cov_a, mean_b, cov_b, root_a=None) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) (Heusel et al. 2017).

    Σ_a Σ_b is not symmetric, but for any F with F Fᵀ = Σ_a its non-zero eigenvalues
    are those of the symmetric positive semi-definite S = Fᵀ Σ_b F, so
    Tr((Σ_a Σ_b)^{1/2}) = Σ_i sqrt(λ_i(S)): symmetric eigendecompositions (`eigh`)
    instead of a general matrix square root, with no complex parts to discard.
    `root_a` is that F, [D, r]; by default the symmetric square root Σ_a^{1/2}. The
    result is ≥ 0 in exact arithmetic; rounding below 0 is clipped.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = (np.atleast_2d(np.asarray(cov, np.float64)) for cov in (cov_a, cov_b))
    root_a = _symmetric_sqrt(cov_a) if root_a is None else np.asarray(root_a, np.float64)
    product = root_a.T @ cov_b @ root_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def fid(features_a, features_b) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets [N_a, D], [N_b, D].

    With fewer samples than dimensions (N_a ≤ D, e.g. a few images through Inception's
    2048 features), F = (centred features_a)ᵀ / sqrt(N_a − 1) is a factor of Σ_a, and
    the eigenproblem shrinks from D × D to N_a × N_a.
    """
    features_a = np.asarray(features_a, np.float64)
    mean_a, cov_a = gaussian_statistics(features_a)
    root_a = (features_a - mean_a).T / np.sqrt(len(features_a) - 1) if len(features_a) <= cov_a.shape[0] else None
    return frechet_distance(mean_a, cov_a, *gaussian_statistics(features_b), root_a=root_a)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) = Σ_k p_k (log p_k − log q_k) over the last axis, with 0 · log 0 = 0 (q_k > 0 where p_k > 0)."""
    positive = p > 0
    log_ratio = np.log(np.where(positive, p, 1.0)) - np.log(np.where(positive, q, 1.0))
    return np.sum(np.where(positive, p * log_ratio, 0.0), axis=-1)


def classifier_score(probabilities) -> float:
    """exp(E_x KL(p(y | x) ‖ p(y))), p(y) = E_x p(y | x) (Salimans et al. 2016, Sec. 4).

    `probabilities` [N, K] are the posteriors of N samples. The KL terms are computed
    in log space and averaged before the one exp; the score lies in [1, K].
    """
    posteriors = np.asarray(probabilities, np.float64)
    marginal = posteriors.mean(axis=0, keepdims=True)
    return float(np.exp(_kl(posteriors, marginal).mean()))


def mode_coverage(probabilities, num_classes: int) -> tuple[int, float]:
    """(modes covered, KL(sampled class histogram ‖ uniform) in nats) of N samples' posteriors [N, K].

    Each sample counts for its most probable class. A class is covered when at least
    max(1, MODE_THRESHOLD · N / K) samples fall into it: a classifier with 99% accuracy
    scatters about 1% of the samples over wrong classes, so a class that receives only
    such strays (far below its even share N / K) is not a mode the model produces.
    The KL is 0 for an even spread and log K when every sample is one class.
    """
    predicted = np.argmax(np.asarray(probabilities), axis=-1)
    counts = np.bincount(predicted, minlength=num_classes)
    threshold = max(1.0, MODE_THRESHOLD * len(predicted) / num_classes)
    histogram = counts / len(predicted)
    uniform = np.full(num_classes, 1.0 / num_classes)
    return int(np.sum(counts >= threshold)), float(_kl(histogram, uniform))


# The dataset classifier, trained once and cached.


@dataclasses.dataclass(frozen=True)
class ClassifierSettings:
    """How the dataset classifier is trained; every field is part of its cache file name."""

    epochs: int = 3  # 98.7% test accuracy on MNIST in 1.5 minutes on 2 CPU cores (docs/evaluation.md)
    max_examples: int | None = None  # None: the whole train split
    batch_size: int = 128
    learning_rate: float = 1e-3  # Adam
    seed: int = 0


def cache_dir() -> pathlib.Path:
    """$ZOO_CACHE_DIR, else $XDG_CACHE_HOME/generative_zoo, else ~/.cache/generative_zoo."""
    if os.environ.get("ZOO_CACHE_DIR"):
        return pathlib.Path(os.environ["ZOO_CACHE_DIR"])
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "generative_zoo"


def classifier_path(dataset: str, settings: ClassifierSettings) -> pathlib.Path:
    """The cache file of a classifier: a quick test classifier never stands in for the real one."""
    name = (f"{dataset}_classifier_v{CLASSIFIER_VERSION}_epochs{settings.epochs}"
            f"_examples{settings.max_examples or 'all'}_batch{settings.batch_size}"
            f"_lr{settings.learning_rate:g}_seed{settings.seed}.keras")
    return cache_dir() / "classifiers" / name


def build_classifier(image_shape, num_classes: int) -> keras.Model:
    """conv 3×3×32 → max-pool → conv 3×3×64 → max-pool → dense 128 ("features") → dropout 0.5 → logits.

    The convnet of the Keras MNIST example with a 128-unit layer before the logits,
    whose ReLU activations are the features of the Fréchet distance.
    """
    images = keras.Input(image_shape, name="images")
    h = keras.layers.Conv2D(32, 3, activation="relu")(images)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 3, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    features = keras.layers.Dense(128, activation="relu", name="features")(keras.layers.Flatten()(h))
    logits = keras.layers.Dense(num_classes, name="logits")(keras.layers.Dropout(0.5)(features))
    return keras.Model(images, logits, name="classifier")


def train_classifier(dataset: str, settings: ClassifierSettings, *, download: bool = True):
    """Fits the classifier on `dataset`'s train split: (model, accuracy on the test split)."""
    keras.utils.set_random_seed(settings.seed)  # initial weights, shuffling and dropout
    spec = DatasetSpec(dataset, binarize=False, labels=True)
    train, examples = data.load(spec, "train", settings.batch_size, max_examples=settings.max_examples,
                                download=download)
    test, _ = data.load(spec, "test", BATCH_SIZE, download=download)
    pairs = lambda batch: (batch["image"], batch["label"])  # noqa: E731
    model = build_classifier(train.element_spec["image"].shape[1:], data.num_classes(dataset))
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(train.map(pairs), epochs=settings.epochs, verbose=0, shuffle=False,  # data.load shuffles
              steps_per_epoch=max(1, data.steps(examples, settings.batch_size, "train")))
    return model, float(model.evaluate(test.map(pairs), return_dict=True, verbose=0)["accuracy"])


def _write_atomically(path: pathlib.Path, write: Callable[[str], None]) -> None:
    """`write(temporary path)` in path's folder, then os.replace: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_classifier(dataset: str, settings: ClassifierSettings = ClassifierSettings(), *, download: bool = True):
    """`dataset`'s classifier and its test accuracy: from the cache, or trained and cached.

    The accuracy is stored beside the `.keras` file (same name, `.json`). A cache file
    that cannot be read is retrained and replaced rather than reported.
    """
    path = classifier_path(dataset, settings)
    if path.exists():
        try:
            model = keras.models.load_model(path, compile=False)
            return model, float(json.loads(path.with_suffix(".json").read_text())["accuracy"])
        except Exception as error:  # a corrupt file fails in zipfile, h5py, json or Keras
            print(f"note: retraining the {dataset} classifier: cannot read {path} ({type(error).__name__})",
                  file=sys.stderr)
    print(f"note: training the {dataset} classifier for sample quality ({settings.epochs} epochs), "
          f"cached as {path}", file=sys.stderr)
    model, accuracy = train_classifier(dataset, settings, download=download)
    record = {"dataset": dataset, "settings": dataclasses.asdict(settings), "accuracy": accuracy}
    _write_atomically(path.with_suffix(".json"), lambda temporary: pathlib.Path(temporary).write_text(
        json.dumps(record, indent=2) + "\n"))
    _write_atomically(path, model.save)
    return model, accuracy


# Feature extractors: images in [0, 1] → (features, posteriors).


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """A network from images to [features, class posteriors], and what its classes are.

    Attributes:
      name: "classifier" or "inception", as reported.
      network: preprocessed images → [features [N, D], probabilities [N, K]].
      preprocess: images [N, H, W, C] in [0, 1] → the network's input.
      dataset_classes: the posteriors are over the dataset's own classes, so mode
        coverage means something (not so for ImageNet's 1000 classes).
      accuracy: the classifier's test accuracy; None for Inception.
    """

    name: str
    network: keras.Model
    preprocess: Callable
    dataset_classes: bool
    accuracy: float | None = None

    def __call__(self, batches: Iterable) -> tuple[np.ndarray, np.ndarray]:
        """(features float64 [N, D], probabilities float64 [N, K]) of every image in `batches`."""
        features, probabilities = [], []
        for images in batches:
            batch_features, batch_probabilities = self.network(self.preprocess(images), training=False)
            features.append(keras.ops.convert_to_numpy(batch_features))
            probabilities.append(keras.ops.convert_to_numpy(batch_probabilities))
        return np.concatenate(features).astype(np.float64), np.concatenate(probabilities).astype(np.float64)


def classifier_extractor(dataset: str, settings: ClassifierSettings = ClassifierSettings(), *,
                         download: bool = True) -> FeatureExtractor:
    """The dataset classifier (`CLASSIFIER_DATASETS`): penultimate features, softmax posteriors."""
    if dataset not in CLASSIFIER_DATASETS:
        raise SampleQualityError(f"no classifier judges {dataset!r} samples (known: "
                                 f"{', '.join(sorted(CLASSIFIER_DATASETS))}); use the Inception extractor")
    classifier, accuracy = load_classifier(CLASSIFIER_DATASETS[dataset], settings, download=download)
    posteriors = keras.layers.Softmax()(classifier.output)
    network = keras.Model(classifier.input, [classifier.get_layer("features").output, posteriors])
    return FeatureExtractor("classifier", network, lambda images: images, dataset_classes=True, accuracy=accuracy)


def inception_preprocess(images):
    """[N, H, W, 1 or 3] in [0, 1] → [N, 299, 299, 3] in [−1, 1], as InceptionV3 expects."""
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape[-1] == 1:
        images = tf.tile(images, [1, 1, 1, 3])
    return tf.image.resize(images, INCEPTION_SIZE) * 2.0 - 1.0


def inception_extractor(weights_path) -> FeatureExtractor:
    """Inception-v3 from a local weights file: 2048-d pool features, softmax over 1000 ImageNet classes."""
    try:
        inception = keras.applications.InceptionV3(weights=str(weights_path), include_top=True)
    except Exception as error:  # a truncated or foreign file fails in h5py, zipfile or Keras
        raise SampleQualityError(
            f"cannot load Inception-v3 weights from {weights_path}: {type(error).__name__}: {error}\n"
            f"Fix: pass the Keras InceptionV3 weights file (with the top); on a machine with internet, "
            f"keras.applications.InceptionV3(weights=\"imagenet\") downloads it to "
            f"~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
        ) from None
    network = keras.Model(inception.input, [inception.get_layer("avg_pool").output, inception.output])
    return FeatureExtractor("inception", network, inception_preprocess, dataset_classes=False)


# Putting it together.


def real_images(dataset: str, role: str, *, max_examples: int | None = None, download: bool = True):
    """Batches of a split's images in grey levels [0, 1], never binarized (one pass, in split order
    except for the shuffled train role)."""
    batches, examples = data.load(DatasetSpec(dataset, binarize=False), role, BATCH_SIZE,
                                  max_examples=max_examples, download=download)
    return (batch["image"] for batch in itertools.islice(batches, data.steps(examples, BATCH_SIZE, role)))


def samples(sample: Callable, num_samples: int):
    """Batches of `sample(seeds)` for the seeds 0, 1, …, num_samples − 1: seed i always gives the same image."""
    for start in range(0, num_samples, BATCH_SIZE):
        yield sample(tf.range(start, min(start + BATCH_SIZE, num_samples), dtype=tf.int64))


def measure(sample: Callable, real: Iterable, extractor: FeatureExtractor, num_samples: int) -> dict:
    """The sample-quality metrics of `sample` (seeds → images in [0, 1]) against the `real` batches.

    `fid_floor` is the Fréchet distance between the two halves of the real images with
    the same extractor: about what a sampler of the data distribution itself would
    score (a little more, as FID is biased upwards for smaller sets).
    """
    real_features, _ = extractor(real)
    features, probabilities = extractor(samples(sample, num_samples))
    half = len(real_features) // 2
    modes_covered, class_kl = (mode_coverage(probabilities, probabilities.shape[-1])
                               if extractor.dataset_classes else (None, None))
    return {
        "fid": fid(features, real_features),
        "classifier_score": classifier_score(probabilities),
        "modes_covered": modes_covered,
        "class_kl": class_kl,
        "fid_floor": fid(real_features[:half], real_features[half:]),
        "classifier_accuracy": extractor.accuracy,
        "feature_extractor": extractor.name,
        "num_samples": num_samples,
    }
