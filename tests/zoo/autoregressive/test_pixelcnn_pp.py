"""zoo.pixelcnn_pp: the autoregressive property by gradients, exact normalisation, the
pixel-by-pixel sampler, dropout in training only, a tiny fit, configs and the registry."""

import functools
import math

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import config as config_lib
from zoo.autoregressive.pixelcnn_pp import PixelCNNPP, PixelCNNPPConfig

SEEDS = tf.constant([3, 141, -7, 2**40, 0, 11], tf.int64)
LABELS = tf.constant([0, 9, 3, 3, 7, 1], tf.int64)


def tiny_config(**overrides) -> PixelCNNPPConfig:
    """The entry's tiny config (4 maps, one block per resolution) on 3×5 images (odd sizes: 3×5 → 2×3
    → 1×2), with 3 mixture components."""
    values = dict(image_shape=(3, 5, 1), num_mixtures=3)
    return zoo.get("zoo.pixelcnn_pp").make_tiny_config(**{**values, **overrides})


def tiny_model(**overrides) -> PixelCNNPP:
    return zoo.get("zoo.pixelcnn_pp").build(tiny_config(**overrides))


@functools.lru_cache(maxsize=None)
def shared_model() -> PixelCNNPP:
    """One model for the tests that only sample from it: the sampler is traced once."""
    return tiny_model()


def redraw_weights(model, scale=0.3, seed=0):
    """Weights ~ N(0, scale²): a model far from uniform whose outputs depend strongly on earlier pixels."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, weight.shape).astype(np.float32) for weight in model.get_weights()])


def images_for(config: PixelCNNPPConfig, count: int, seed: int = 0) -> np.ndarray:
    """`count` noisy copies of two fixed 8-bit prototypes, so there is structure to learn."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(2, *config.image_shape))
    images = prototypes[rng.integers(0, 2, size=count)]
    images = np.where(rng.random(images.shape) < 0.1, rng.integers(0, 256, size=images.shape), images)
    return (images / 255).astype(np.float32)


# The autoregressive property, by gradients (Fig. 2: the u and ul streams).


def test_output_at_each_pixel_has_zero_gradient_wrt_itself_and_every_later_pixel():
    """d features[i] / d image[i'] = 0 exactly for i' ≥ i in raster order, through both streams,
    the stride-2 convolutions and the transposed ones, halving even and odd sizes (6×7 → 3×4 → 2×2).

    Each of 3 random images is repeated once per output pixel, and copy i keeps only pixel i's
    (randomly projected) features: examples do not interact, so one backward pass gives every
    row of the Jacobian.
    """
    image_shape = (6, 7, 1)
    model = tiny_model(image_shape=image_shape)
    redraw_weights(model)
    (height, width, _), count = image_shape, 3
    size = height * width
    rng = np.random.default_rng(0)
    images = tf.constant(np.repeat(rng.random((count, *image_shape)), size, axis=0), tf.float32)
    selector = tf.constant(np.tile(np.eye(size), (count, 1)).reshape(-1, height, width), tf.float32)
    projection = tf.constant(rng.normal(size=model.config.filters), tf.float32)  # zero iff every map's is
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = tf.reduce_sum(selector * tf.tensordot(model(images), projection, axes=1))
    jacobians = tape.gradient(outputs, images).numpy().reshape(count, size, size)  # [image, output, input]
    for pixel in range(size):
        assert np.all(jacobians[:, pixel, pixel:] == 0), f"output {divmod(pixel, width)} sees itself or a later pixel"
    reaches = np.any(jacobians != 0, axis=0)
    assert reaches[width + 1, :width + 1].all()  # (1, 1) sees every earlier pixel, through both streams
    last = size - 1  # sees the corners before it, through the coarser resolutions, and its left neighbour
    assert reaches[last, [0, width - 1, last - width, last - 1]].all()


# Exact normalisation: Σ_x p(x) = 1 over every 8-bit image of two pixels.


@pytest.mark.parametrize("image_shape", [(1, 2, 1), (2, 1, 1)], ids=["one-row", "one-column"])
def test_probabilities_of_all_65536_two_pixel_8_bit_images_sum_to_one(image_shape):
    """Two pixels side by side (the ul stream) and one above the other (the u stream)."""
    model = tiny_model(image_shape=image_shape)
    redraw_weights(model)
    levels = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), axis=-1)
    log_likelihood = model.log_likelihood((levels / 255).astype(np.float32).reshape(-1, *image_shape)).numpy()
    assert np.logaddexp.reduce(log_likelihood.astype(np.float64)) == pytest.approx(0.0, abs=1e-5)
    assert log_likelihood.max() - log_likelihood.min() > 1.0  # far from uniform, so the check has teeth


# The sampler behind serving_default.


def test_each_sample_depends_only_on_its_seed():
    """Batches of one size, so the sampler is traced once."""
    model = shared_model()
    batch = model.sample(SEEDS).numpy()
    permutation = [4, 2, 0, 5, 3, 1]
    np.testing.assert_array_equal(model.sample(SEEDS).numpy(), batch)
    np.testing.assert_array_equal(model.sample(tf.gather(SEEDS, permutation)).numpy(), batch[permutation])
    others = tf.constant([-7, 5, 6, 7, 8, -7], tf.int64)  # SEEDS[2] among other neighbours
    np.testing.assert_array_equal(model.sample(others).numpy()[[0, 5]], batch[[2, 2]])
    assert all(np.any(batch[0] != other) for other in batch[1:])


def test_samples_lie_on_the_256_level_grid_and_have_finite_log_likelihood():
    model = shared_model()
    samples = model.sample(SEEDS).numpy()
    assert samples.shape == (len(SEEDS), 3, 5, 1)
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    np.testing.assert_allclose(samples * 255, np.round(samples * 255), rtol=0, atol=1e-4)
    assert np.all(np.isfinite(model.log_likelihood(samples)))


def test_conditional_model_uses_the_label():
    model = tiny_model(conditional=True)
    redraw_weights(model)
    images = images_for(model.config, 2)
    first, second = (model.log_likelihood(images, tf.constant(labels, tf.int64)) for labels in ([0, 0], [7, 7]))
    assert np.all(np.abs(first - second) > 1e-3)
    with pytest.raises(ValueError, match="needs labels"):
        model(images)


# Dropout (Sec. 2.5): on in train_step, off in call, log_likelihood, evaluation and sampling.


def test_dropout_is_active_in_training_only():
    model = tiny_model(dropout=0.5)
    redraw_weights(model)  # blocks far from the identity they start near, so dropping their units shows
    model.compile_for_training(steps_per_epoch=1)
    batch = {"image": images_for(model.config, 8)}
    nll = -model.log_likelihood(batch["image"]).numpy().mean()
    assert np.any(model(batch["image"], training=True).numpy() != model(batch["image"]).numpy())
    assert float(model.test_step(batch)["nll"]) == pytest.approx(nll, rel=1e-6)  # and so deterministic
    model.reset_metrics()
    assert abs(float(model.train_step(batch)["nll"]) - nll) > 0.1


# Training: the exact negative log-likelihood.


def test_fit_on_a_fixed_batch_lowers_the_exact_nll_and_evaluate_reports_bits_per_dim():
    """Four steps run eagerly: tracing the step of even this model (≈100 variables, each with its
    own Adam update) costs more CPU than the steps; `training.fit` runs it compiled."""
    model = tiny_model(learning_rate=5e-2)
    model.compile_for_training(steps_per_epoch=4)
    model.run_eagerly = True
    batch = {"image": images_for(model.config, 8)}
    data = tf.data.Dataset.from_tensors(batch)
    before = -model.log_likelihood(batch["image"]).numpy().mean()
    history = model.fit(data.repeat(4), epochs=1, verbose=0, shuffle=False).history
    after = model.evaluate(data, return_dict=True, verbose=0)

    optimizer = model.optimizer  # the authors' Adam, its rate decayed every step
    assert int(optimizer.iterations) == 4
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.95, 0.9995, 1e-4)
    assert float(optimizer.learning_rate) == pytest.approx(5e-2 * 0.999995**4, rel=1e-6)
    assert all(np.isfinite(values[-1]) for values in history.values()), history
    assert after["nll"] < 0.95 * before, (before, after)
    assert after["loss"] == pytest.approx(after["nll"])
    assert after["bits_per_dim"] == pytest.approx(after["nll"] / (3 * 5 * 1 * math.log(2.0)), rel=1e-5)
    assert after["nll"] == pytest.approx(-model.log_likelihood(batch["image"]).numpy().mean(), rel=1e-5)


# Configs, the registry and Keras contracts.


@pytest.mark.parametrize("overrides, message", [
    ({"image_shape": (28, 28)}, "image_shape must be"),
    ({"dataset": "binarized_mnist"}, "set dataset=mnist or fashion_mnist"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"resnet_blocks": 0}, "must be >= 1"),
    ({"learning_rate_decay": 1.5}, "learning_rate_decay must be"),
])
def test_inconsistent_configs_are_errors_naming_the_fix(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        PixelCNNPPConfig(**overrides)


def test_registry_entry_is_the_config_on_8_bit_mnist_evaluated_by_exact_likelihood():
    spec = zoo.get("zoo.pixelcnn_pp")
    assert spec.make_config() == PixelCNNPPConfig()
    assert spec.evaluation == ("exact_likelihood",)
    assert spec.dataset(spec.make_config()) == zoo.DatasetSpec("mnist", binarize=False)
    conditional = spec.make_config(conditional=True, dataset="fashion_mnist")
    assert spec.dataset(conditional) == zoo.DatasetSpec("fashion_mnist", binarize=False, labels=True)
    assert config_lib.parse_assignments(["filters=8", "dropout=0"], PixelCNNPPConfig) == {"filters": 8, "dropout": 0.0}
