"""zoo.pixelcnn: the autoregressive property by gradients, exact normalisation, the pixel-by-pixel
sampler, one tiny fit per entry, and Keras and SavedModel round trips."""

import functools
import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import config as config_lib
from zoo.autoregressive.pixelcnn import PixelCNN, PixelCNNConfig

NAMES = ["zoo.pixelcnn", "zoo.gated_pixelcnn"]
SIZE = 7  # image height and width
SEEDS = tf.constant([3, 141, -7, 2**40, 0, 11], tf.int64)
LABELS = tf.constant([0, 9, 3, 3, 7, 1], tf.int64)
VARIANTS = {  # id → (registry name, overrides): both entries, both likelihoods, the conditional model
    "pixelcnn-bernoulli": ("zoo.pixelcnn", {}),
    "pixelcnn-categorical": ("zoo.pixelcnn", {"likelihood": "categorical"}),
    "gated-bernoulli": ("zoo.gated_pixelcnn", {}),
    "gated-categorical": ("zoo.gated_pixelcnn", {"likelihood": "categorical"}),
    "gated-conditional": ("zoo.gated_pixelcnn", {"conditional": True}),
}
ONE_OF_EACH = ["pixelcnn-bernoulli", "gated-categorical", "gated-conditional"]  # each entry, likelihood and labels


def tiny_config(name: str, **overrides) -> PixelCNNConfig:
    """The entry's tiny config (a few maps per layer) on 7×7 images."""
    values = dict(image_shape=(SIZE, SIZE, 1))
    if overrides.get("likelihood") == "categorical" or overrides.get("conditional"):
        values["dataset"] = "mnist"  # 8-bit levels and labels
    return zoo.get(name).make_tiny_config(**{**values, **overrides})


def tiny_model(variant: str, **overrides) -> PixelCNN:
    name, variant_overrides = VARIANTS[variant]
    return zoo.get(name).build(tiny_config(name, **{**variant_overrides, **overrides}))


@functools.lru_cache(maxsize=None)
def shared_model(variant: str) -> PixelCNN:
    """One model per variant for the tests that only read it: the sampler is traced once per model."""
    return tiny_model(variant)


def labels_for(model, count: int):
    return LABELS[:count] if model.config.conditional else None


def images_for(config: PixelCNNConfig, count: int, seed: int = 0) -> np.ndarray:
    """`count` noisy copies of two fixed prototypes (binary or 8-bit), so there is structure to learn."""
    rng = np.random.default_rng(seed)
    levels = 2 if config.likelihood == "bernoulli" else 256
    prototypes = rng.integers(0, levels, size=(2, *config.image_shape))
    images = prototypes[rng.integers(0, 2, size=count)]
    noise = rng.random(images.shape) < 0.1
    images = np.where(noise, rng.integers(0, levels, size=images.shape), images)
    return (images / (levels - 1)).astype(np.float32)


def redraw_weights(model, scale=0.5, seed=0):
    """Weights ~ N(0, scale²): a model far from uniform whose logits depend strongly on earlier pixels."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, weight.shape).astype(np.float32) for weight in model.get_weights()])


def pixel_jacobians(model, count: int = 3, seed: int = 0) -> np.ndarray:
    """d logits[b, i] / d image[b, i'] for `count` random inputs: [count, H·W, H·W], pixels in raster order.

    Categorical logits are projected on a random vector over the 256 levels first: the
    projection is zero exactly when every level's gradient is.
    """
    rng = np.random.default_rng(seed)
    height, width, _ = model.config.image_shape
    images = tf.constant(rng.normal(size=(count, *model.config.image_shape)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = model(images, labels_for(model, count))
        if logits.shape.rank == 5:
            logits = tf.tensordot(logits, tf.constant(rng.normal(size=logits.shape[-1]), tf.float32), axes=1)
        outputs = tf.reshape(logits, [count, height * width])
    return tape.batch_jacobian(outputs, images).numpy().reshape(count, height * width, height * width)


# The autoregressive property (2016a Eq. 1), by gradients.


@pytest.mark.parametrize("variant", ["pixelcnn-categorical", "gated-bernoulli", "gated-conditional"])
def test_output_at_each_pixel_has_zero_gradient_wrt_itself_and_every_later_pixel(variant):
    jacobians = pixel_jacobians(shared_model(variant))
    for pixel in range(SIZE * SIZE):
        assert np.all(jacobians[:, pixel, pixel:] == 0), f"output {divmod(pixel, SIZE)} sees itself or a later pixel"
    assert np.any(jacobians[:, SIZE + 1, :SIZE + 1] != 0)  # and it does see earlier ones


@pytest.mark.parametrize("overrides", [{}, {"likelihood": "categorical", "conditional": True}])
def test_gated_stacks_leave_no_blind_spot(overrides):
    """Every earlier pixel reaches every output (2016b Sec. 2.2).

    The receptive field of the last horizontal stack spans R = 3 + 3 · 1 = 6 rows up and
    columns either side (a 7×7 first layer, then three layers with n = 3), so on 7×7 images it
    holds every earlier pixel: each must have a non-zero gradient for some of the inputs (a unit
    of the ReLU head can be off for one input, which zeroes that input's gradients).
    """
    model = tiny_model("gated-bernoulli", first_kernel_size=7, layers=3, filters=8, output_filters=16, **overrides)
    reaches = np.any(pixel_jacobians(model) != 0, axis=0)
    for pixel in range(SIZE * SIZE):
        missed = [divmod(earlier, SIZE) for earlier in range(pixel) if not reaches[pixel, earlier]]
        assert not missed, f"output {divmod(pixel, SIZE)} does not see {missed}"


def test_pixelcnn_has_the_blind_spot_the_gated_model_removes():
    """Stacked masked 3×3 convolutions miss pixels above-right of the output (2016b Sec. 2.2, Fig. 1).

    A 3×3 mask-A layer and two 3×3 mask-B blocks reach R = 3 pixels in every direction
    (rows i − 3 … i − 1 and the row so far). Of the earlier pixels in that window, output (3, 3)
    sees all but (1, 6), (2, 5) and (2, 6): mask B's taps never step right on the row above.
    """
    model = tiny_model("pixelcnn-bernoulli", first_kernel_size=3, layers=2, filters=8, output_filters=16)
    reaches = np.any(pixel_jacobians(model) != 0, axis=0)
    row, column = 3, 3
    window = [(i, j) for i in range(row - 3, row) for j in range(column - 3, column + 4)]
    window += [(row, j) for j in range(column - 3, column)]
    unseen = {(i, j) for i, j in window if not reaches[row * SIZE + column, i * SIZE + j]}
    assert unseen == {(1, 6), (2, 5), (2, 6)}


# Exact normalisation: Σ_x p(x) = 1 over every image.


@pytest.mark.parametrize("variant", ["pixelcnn-bernoulli", "gated-bernoulli", "gated-conditional"])
def test_probabilities_of_all_sixteen_binary_2x2_images_sum_to_one(variant):
    model = tiny_model(variant, image_shape=(2, 2, 1))
    redraw_weights(model)
    images = np.array(list(itertools.product([0.0, 1.0], repeat=4)), np.float32).reshape(16, 2, 2, 1)
    labels = tf.fill([16], tf.constant(3, tf.int64)) if model.config.conditional else None
    probabilities = np.exp(model.log_likelihood(images, labels).numpy().astype(np.float64))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert probabilities.max() > 2 * probabilities.min()  # far from uniform, so the check has teeth


@pytest.mark.parametrize("name, image_shape", [("zoo.pixelcnn", (1, 2, 1)), ("zoo.gated_pixelcnn", (1, 2, 1)),
                                               ("zoo.gated_pixelcnn", (2, 1, 1))],
                         ids=["pixelcnn-one-row", "gated-one-row", "gated-one-column"])
def test_probabilities_of_all_65536_two_pixel_8_bit_images_sum_to_one(name, image_shape):
    """Two pixels side by side (the horizontal path) and one above the other (the vertical path)."""
    model = zoo.get(name).build(tiny_config(name, likelihood="categorical", image_shape=image_shape))
    redraw_weights(model)
    levels = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), axis=-1).reshape(-1, *image_shape)
    log_likelihood = tf.concat([model.log_likelihood(chunk) for chunk in np.split(levels / 255.0, 4)], axis=0)
    probabilities = np.exp(log_likelihood.numpy().astype(np.float64))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert probabilities.max() > 2 * probabilities.min()


# The samplers behind serving_default: naive (a forward pass per pixel) and cached (Ramachandran et al. 2017).


@pytest.mark.parametrize("variant, sizes", [
    ("pixelcnn-bernoulli", {}),
    ("pixelcnn-categorical", {"first_kernel_size": 5, "kernel_size": 5, "layers": 3}),
    ("gated-bernoulli", {"first_kernel_size": 5, "kernel_size": 5, "layers": 3}),
    ("gated-conditional", {}),
], ids=["pixelcnn-bernoulli-n3", "pixelcnn-categorical-n5", "gated-bernoulli-n5", "gated-conditional-n3"])
def test_cached_sampler_draws_exactly_the_naive_samplers_images(variant, sizes):
    """Same seeds, same images, bit for bit: the caches compute every layer's output at the new
    pixel from the same inputs as the whole-image pass. Weights are redrawn large, so the
    logits depend strongly on earlier pixels and a wrong cache shows."""
    model = tiny_model(variant, **sizes)
    redraw_weights(model)
    labels = labels_for(model, len(SEEDS))
    naive = model.sample(SEEDS, labels, sampler="naive").numpy()
    cached = model.sample(SEEDS, labels, sampler="cached").numpy()
    np.testing.assert_array_equal(cached, naive)
    assert 0.05 < naive.mean() < 0.95  # not a constant image


@pytest.mark.parametrize("variant", ["pixelcnn-categorical", "gated-conditional"])
def test_xla_compiled_sampler_draws_the_graph_samplers_images(variant):
    """`sample(jit_compile=True)` runs the same loop under XLA on the same uniforms (drawn
    outside XLA, whose generators differ): the same images, for these weights bit for bit."""
    model = tiny_model(variant)
    redraw_weights(model)
    labels = labels_for(model, len(SEEDS))
    compiled = model.sample(SEEDS, labels, jit_compile=True).numpy()
    np.testing.assert_array_equal(compiled, model.sample(SEEDS, labels).numpy())
    assert 0.05 < compiled.mean() < 0.95  # not a constant image


def test_serving_uses_the_cached_sampler_and_unknown_samplers_are_errors():
    model = shared_model("pixelcnn-bernoulli")
    assert model.default_sampler == "cached"
    with pytest.raises(ValueError, match=r"unknown sampler 'fast'; pixelcnn has \['cached', 'naive'\]"):
        model.sample(SEEDS, sampler="fast")


@pytest.mark.parametrize("variant", ["gated-conditional"])  # the noise and the loop are the family's, not the network's
def test_each_sample_depends_only_on_its_seed(variant):
    model = shared_model(variant)
    batch = model.sample(SEEDS).numpy()
    permutation = [4, 2, 0, 5, 3, 1]
    np.testing.assert_array_equal(model.sample(SEEDS).numpy(), batch)
    np.testing.assert_array_equal(model.sample(tf.gather(SEEDS, permutation)).numpy(), batch[permutation])
    np.testing.assert_array_equal(model.sample(SEEDS[2:3]).numpy()[0], batch[2])
    assert all(np.any(batch[0] != other) for other in batch[1:])


@pytest.mark.parametrize("variant", ONE_OF_EACH)
def test_samples_lie_in_the_support_and_have_finite_log_likelihood(variant):
    model = shared_model(variant)
    samples = model.sample(SEEDS).numpy()
    assert samples.shape == (len(SEEDS), SIZE, SIZE, 1)
    levels = 1 if model.config.likelihood == "bernoulli" else 255
    np.testing.assert_allclose(samples * levels, np.round(samples * levels), rtol=0, atol=1e-4)  # k / levels
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert np.all(np.isfinite(model.log_likelihood(samples, labels_for(model, len(SEEDS)))))


def test_conditional_sampler_follows_the_label_and_rejects_labels_out_of_range():
    model = tiny_model("gated-conditional")
    rng = np.random.default_rng(0)
    for layer in model.network:  # V_f, V_g of Eq. 4 large, so the label visibly changes the image
        for projection in layer.label_projections:
            projection.kernel.assign(rng.normal(0.0, 2.0, projection.kernel.shape))
    function, specs = model.serving_signatures()["sample_conditional"]
    assert [spec.name for spec in specs] == ["seed", "label"]
    seeds = tf.constant([5, 5], tf.int64)
    images = function(seeds, tf.constant([0, 7], tf.int64))["images"].numpy()
    assert np.any(images[0] != images[1])  # same noise, different y
    np.testing.assert_array_equal(images[1], model.sample(seeds[:1], tf.constant([7], tf.int64))[0])
    for bad in (10, -1):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"label must be in \[0, 10\)"):
            function(seeds, tf.constant([3, bad], tf.int64))


# Training: the exact negative log-likelihood, one tiny fit per registry entry.


# The steps are the family's (zoo.autoregressive); zoo.pixelcnn fits through the CLI in tests/export/test_evaluate.py.
@pytest.mark.parametrize("variant", ["gated-conditional"])
def test_fit_on_a_fixed_batch_lowers_the_exact_nll(variant):
    model = tiny_model(variant, learning_rate=3e-3)
    model.compile_for_training(steps_per_epoch=20)
    batch = {"image": images_for(model.config, 8)}
    if model.config.conditional:
        batch["label"] = np.arange(8) % 10
    data = tf.data.Dataset.from_tensors(batch)
    before = -model.log_likelihood(batch["image"], batch.get("label")).numpy().mean()
    history = model.fit(data.repeat(20), epochs=1, verbose=0, shuffle=False).history
    after = model.evaluate(data, return_dict=True, verbose=0)

    assert int(model.optimizer.iterations) == 20
    assert all(np.isfinite(values[-1]) for values in history.values()), history
    assert after["nll"] < 0.98 * before, (before, after)
    assert after["loss"] == pytest.approx(after["nll"])
    assert after["bits_per_dim"] == pytest.approx(after["nll"] / (SIZE * SIZE * math.log(2.0)), rel=1e-5)
    expected = -model.log_likelihood(batch["image"], batch.get("label")).numpy().mean()
    assert after["nll"] == pytest.approx(expected, rel=1e-5)


# Keras contracts and the registry.


def test_same_seed_builds_the_same_initial_weights():
    first, second = tiny_model("gated-bernoulli"), tiny_model("gated-bernoulli")
    third = tiny_model("gated-bernoulli", seed=1)
    for mine, theirs, other in zip(first.get_weights(), second.get_weights(), third.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert any(np.any(mine != other) for mine, other in zip(first.get_weights(), third.get_weights()) if mine.any())


def test_registry_entries_are_presets_evaluated_by_exact_likelihood():
    assert zoo.get("zoo.pixelcnn").make_config() == PixelCNNConfig()
    gated = zoo.get("zoo.gated_pixelcnn").make_config()
    assert gated == PixelCNNConfig(architecture="gated")
    for name in NAMES:
        spec = zoo.get(name)
        assert spec.evaluation == ("exact_likelihood",)
        assert spec.dataset(spec.make_config()) == zoo.DatasetSpec("binarized_mnist", binarize=True)
    conditional = zoo.get("zoo.gated_pixelcnn").make_config(likelihood="categorical", conditional=True, dataset="mnist")
    assert zoo.get("zoo.gated_pixelcnn").dataset(conditional) == zoo.DatasetSpec("mnist", binarize=False, labels=True)


def test_signatures_and_summary_grids_are_declared_per_variant():
    plain, conditional = shared_model("pixelcnn-bernoulli"), shared_model("gated-conditional")
    assert set(plain.serving_signatures()) == {"serving_default", "sample_png", "log_likelihood"}
    assert set(conditional.serving_signatures()) == {"serving_default", "sample_png", "log_likelihood",
                                                     "sample_conditional"}
    assert [spec.name for spec in conditional.serving_signatures()["log_likelihood"][1]] == ["images", "label"]
    assert {key: len(value) for key, value in plain.summaries(None).items()} == {"samples": 16}
    assert {key: len(value) for key, value in conditional.summaries(None).items()} == {"samples": 16,
                                                                                         "per_class": 80}


@pytest.mark.parametrize("overrides, message", [
    ({"architecture": "rnn"}, "architecture must be 'pixelcnn' or 'gated'"),
    ({"likelihood": "logistic"}, "likelihood must be 'bernoulli' or 'categorical'"),
    ({"kernel_size": 4}, "must be odd and >= 3"),
    ({"first_kernel_size": 1}, "must be odd and >= 3"),
    ({"conditional": True}, "set architecture=gated"),
    ({"likelihood": "categorical"}, "set dataset=mnist or fashion_mnist"),
    ({"image_shape": (28, 28)}, "image_shape must be"),
])
def test_inconsistent_configs_are_errors_naming_the_fix(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        PixelCNNConfig(**overrides)


def test_conditional_can_be_set_from_the_command_line_syntax():
    values = config_lib.parse_assignments(["conditional=true", "likelihood=categorical"], PixelCNNConfig)
    assert values == {"conditional": True, "likelihood": "categorical"}
