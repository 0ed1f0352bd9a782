"""Judging a model of sets by its context posteriors q(c | D) (`zoo.contract.SetContext`).

Few-shot classification (Edwards & Storkey 2017, Sec. 5.3, Table 1): an episode draws K classes
of the evaluated split (the held-out classes, which training never saw) and for each class N
support items and one query; each query goes to the class whose support set's context posterior
is closest to its own in KL,

    ŷ(x) = argmin_k KL(q(c | D_k) ‖ q(c | {x})),

both posteriors diagonal Gaussians, the KL in closed form. The paper averages 100 episodes
per setting. (The paper says the KL between the query's and the support's contexts without a
direction in its main text; KL(support ‖ query) is the direction public reimplementations use.)

Context clusters (ours, for sets labelled by what generated them, e.g. the synthetic 1-D
families of Sec. 5.1, whose Fig. 3 shows their context means separating): each set's context
mean is labelled by the nearest of the class means of the other sets' context means
(leave-one-out nearest centroid); the fraction labelled right is `context_cluster_accuracy`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from training import data
from zoo.registry import DatasetSpec

EPISODES = 100  # Sec. 5.3: results averaged over 100 episodes per setting
SHOTS = (1, 5)  # Table 1
WAYS = (5, 20)  # Table 1
BATCH_SIZE = 256  # sets whose contexts are computed at once
EPISODE_SEED = 20170424


def kl_between_diagonal_gaussians(mean_q, stddev_q, mean_p, stddev_p) -> np.ndarray:
    """KL(N(μ_q, diag σ_q²) ‖ N(μ_p, diag σ_p²)) summed over the last axis, broadcasting the others."""
    return np.sum(np.log(stddev_p / stddev_q) + (stddev_q**2 + (mean_q - mean_p) ** 2) / (2.0 * stddev_p**2) - 0.5,
                  axis=-1)


def contexts(context: Callable, sets: np.ndarray, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(means, stddevs) of q(c | D) for sets [N, S, *item_shape], [N, C] each."""
    means, stddevs = zip(*[(np.asarray(mean), np.asarray(stddev)) for mean, stddev in
                           (context(sets[start:start + batch_size]) for start in range(0, len(sets), batch_size))])
    return np.concatenate(means), np.concatenate(stddevs)


def few_shot_accuracy(context: Callable, items_by_class: Mapping[int, np.ndarray], ways: int, shots: int,
                      episodes: int = EPISODES, seed: int = EPISODE_SEED) -> float:
    """The fraction of queries classified right over `episodes` `ways`-way `shots`-shot episodes (see module
    docstring). items_by_class: class → its items [count, *item_shape], count > shots."""
    rng = np.random.default_rng(seed)
    classes = sorted(items_by_class)
    supports, queries = [], []
    for _ in range(episodes):
        for label in rng.choice(classes, size=ways, replace=False):
            items = items_by_class[label]
            chosen = rng.choice(len(items), size=shots + 1, replace=False)
            supports.append(items[chosen[:shots]])
            queries.append(items[chosen[shots:]])
    support_mean, support_stddev = (values.reshape(episodes, 1, ways, -1)
                                    for values in contexts(context, np.stack(supports)))
    query_mean, query_stddev = (values.reshape(episodes, ways, 1, -1) for values in contexts(context, np.stack(queries)))
    divergence = kl_between_diagonal_gaussians(support_mean, support_stddev, query_mean, query_stddev)  # [E, q, s]
    return float(np.mean(np.argmin(divergence, axis=-1) == np.arange(ways)))


def nearest_centroid_accuracy(means: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out: the fraction of rows of `means` [N, C] nearest (Euclidean) to the mean of the other rows
    of their own label among the labels' means. A label held by one row alone counts as wrong for it."""
    classes = np.unique(labels)
    members = labels[:, None] == classes[None, :]  # [N, classes]
    sums, counts = members.T.astype(np.float64) @ means, members.sum(axis=0).astype(np.float64)
    own_sums = sums[None] - members[..., None] * means[:, None]  # [N, classes, C]: row n left out of its class
    own_counts = counts[None] - members
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = own_sums / own_counts[..., None]
    distances = np.where(own_counts > 0, np.linalg.norm(centroids - means[:, None], axis=-1), np.inf)
    return float(np.mean(classes[np.argmin(distances, axis=1)] == labels))


def evaluation_sets(spec: DatasetSpec, split: str, max_examples: int | None, download: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every set of the split and its label, as the model sees them in evaluation: [N, S, *item_shape], [N]."""
    dataset, _ = data.load(spec, split, BATCH_SIZE, max_examples=max_examples, download=download)
    batches = [(batch["image"].numpy(), batch["label"].numpy()) for batch in dataset]
    return np.concatenate([sets for sets, _ in batches]), np.concatenate([labels for _, labels in batches])


def settings(classes: int, most_shots: int) -> list[tuple[int, int]]:
    """(ways, shots) of Table 1 that `classes` classes with at least `most_shots` + 1 items each allow; a
    number of ways beyond the classes becomes all of them (3 held-out MNIST digits: 3-way)."""
    ways = sorted({min(way, classes) for way in WAYS} - {0, 1})
    return [(way, shot) for way in ways for shot in SHOTS if shot <= most_shots]


def measure(context: Callable, sets: np.ndarray, labels: np.ndarray, few_shot: bool, cluster: bool,
            episodes: int = EPISODES) -> dict:
    """`few_shot_accuracy_<K>way_<N>shot` for the settings the split's classes allow (items of its sets
    regrouped by class) and `context_cluster_accuracy` of its sets, as asked."""
    results = {}
    if cluster:
        results["context_cluster_accuracy"] = nearest_centroid_accuracy(contexts(context, sets)[0], labels)
    if few_shot:
        items_by_class = {int(label): sets[labels == label].reshape(-1, *sets.shape[2:]) for label in np.unique(labels)}
        fewest = min(len(items) for items in items_by_class.values())
        for ways, shots in settings(len(items_by_class), fewest - 1):
            results[f"few_shot_accuracy_{ways}way_{shots}shot"] = few_shot_accuracy(context, items_by_class, ways,
                                                                                    shots, episodes)
    return results


SCATTER_SIZE = 256
SCATTER_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                            [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [170, 110, 40]]) / 255.0


def scatter_image(means: np.ndarray, labels: np.ndarray, size: int = SCATTER_SIZE) -> np.ndarray:
    """The first two coordinates of context means as a scatter plot, [size, size, 3] in [0, 1], a colour per
    label (`SCATTER_COLOURS`, cycled), on black; the axes span the points' range."""
    points = means[:, :2] if means.shape[1] >= 2 else np.concatenate([means, np.zeros_like(means)], axis=1)
    low, high = points.min(axis=0), points.max(axis=0)
    pixels = np.round((points - low) / np.maximum(high - low, 1e-9) * (size - 3)).astype(int) + 1
    image = np.zeros([size, size, 3])
    for (x, y), label in zip(pixels, labels):
        image[size - 1 - y - 1:size - 1 - y + 1, x - 1:x + 1] = SCATTER_COLOURS[int(label) % len(SCATTER_COLOURS)]
    return image
