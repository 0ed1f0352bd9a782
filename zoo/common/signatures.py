"""Pieces shared by the models' serving signatures.

TF Serving's REST API returns a string output as `{"b64": …}` when its name ends
in `_bytes`; `png_bytes` outputs follow that convention.
"""

from __future__ import annotations

import tensorflow as tf

SEED = tf.TensorSpec([None], tf.int64, name="seed")


def png_bytes(images: tf.Tensor) -> tf.Tensor:
    """[N, H, W, C] float images in [0, 1] → [N] PNG-encoded strings (8 bits per channel).

    Uses only core ops (`EncodePng` in a `map_fn`), so the exported graph serves anywhere.
    """
    pixels = tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)
    return tf.map_fn(tf.io.encode_png, pixels, fn_output_signature=tf.TensorSpec([], tf.string))


def checked_labels(labels: tf.Tensor, classes: int, name: str = "label") -> tf.Tensor:
    """`labels` (int64 [N]), with a check that fails the request (INVALID_ARGUMENT) outside [0, classes)."""
    message = f"{name} must be in [0, {classes})"
    checks = [tf.debugging.assert_non_negative(labels, message=message),
              tf.debugging.assert_less(labels, tf.constant(classes, tf.int64), message=message)]
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def checked_finite(values: tf.Tensor, name: str) -> tf.Tensor:
    """`values` (float), with a check that fails the request (INVALID_ARGUMENT) if any is NaN or ±Inf.

    For inputs where a non-finite value has no meaning (images, latents, codes): without
    it NaN would flow through the network into the answer. `CheckNumerics` is a core op.
    """
    return tf.debugging.assert_all_finite(values, f"input '{name}' must be finite; it holds NaN or Inf")


def _checked_importance_budget(images: tf.Tensor, num_importance_samples: tf.Tensor, most: int) -> tf.Tensor:
    """`num_importance_samples` (int64 [N]), with checks that fail the request (INVALID_ARGUMENT) when
    images × max(num_importance_samples) exceeds `most`, before any sample is drawn.

    Both factors are checked on their own first, so their product cannot overflow int64.
    """
    most_samples = tf.constant(most, tf.int64)
    largest = tf.reduce_max(num_importance_samples)
    count = tf.cast(tf.shape(images)[0], tf.int64)
    message = (f"images x max(num_importance_samples) must be <= {most}; "
               f"send fewer images or fewer samples per request")
    within_budget = [tf.debugging.assert_less_equal(largest, most_samples, message=message),
                     tf.debugging.assert_less_equal(count, most_samples, message=message)]
    with tf.control_dependencies(within_budget):
        samples = count * largest  # both factors <= most: no overflow
    with tf.control_dependencies([tf.debugging.assert_less_equal(samples, most_samples, message=message)]):
        return tf.identity(num_importance_samples)


def log_likelihood_signature(log_likelihood, image_shape, most: int) -> tuple:
    """The `log_likelihood` signature of a model with an importance-sampled bound, given
    `log_likelihood`: (images, num_importance_samples, seeds) → L_k per image:

    * log_likelihood: images [N, *image_shape], num_importance_samples int64 [N], seed int64 [N]
      → {"log_likelihood"} [N]; refuses non-finite images, and requests of more than `most`
      images × max(num_importance_samples), before any sample is drawn.
    """
    def served(images, num_importance_samples, seed):
        num_importance_samples = _checked_importance_budget(images, num_importance_samples, most)
        return {"log_likelihood": log_likelihood(checked_finite(images, "images"), num_importance_samples, seed)}

    return served, [tf.TensorSpec([None, *image_shape], tf.float32, name="images"),
                    tf.TensorSpec([None], tf.int64, name="num_importance_samples"), SEED]


def seed_signatures(sample) -> dict:
    """The two signatures of every sampler, given `sample`: int64 seeds [N] → images [N, H, W, C]:

    * serving_default: seed → {"images"};
    * sample_png: seed → {"images_bytes"}, one PNG per seed.
    """
    return {
        "serving_default": (lambda seed: {"images": sample(seed)}, [SEED]),
        "sample_png": (lambda seed: {"images_bytes": png_bytes(sample(seed))}, [SEED]),
    }


def side_by_side(images: tf.Tensor, others: tf.Tensor) -> tf.Tensor:
    """[2N, ...]: images[0], others[0], images[1], others[1], … — a grid of inputs each beside what the
    model made of it (a reconstruction), for TensorBoard."""
    return tf.reshape(tf.stack([images, others], axis=1), tf.concat([[-1], tf.shape(images)[1:]], 0))


def class_rows(classes: int, per_class: int = 8) -> tuple[tf.Tensor, tf.Tensor]:
    """(seeds, classes) for a grid with a row per class: row c holds seeds 0 … per_class − 1 with class c.

    The same seeds in every row show what the class alone changes (Mirza & Osindero 2014, Fig. 2).
    """
    return (tf.tile(tf.range(per_class, dtype=tf.int64), [classes]),
            tf.repeat(tf.range(classes, dtype=tf.int64), per_class))
