"""zoo.pixelrnn: the skew, the autoregressive property and the receptive fields by gradients, exact
normalisation, the pixel-by-pixel sampler, a tiny fit per cell, and Keras round trips."""

import functools
import itertools

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import config as config_lib
from zoo.autoregressive.pixelrnn import PixelRNN, PixelRNNConfig
from zoo.autoregressive.pixelrnn_layers import shift_down, skew, unskew

CELLS = ["row_lstm", "diagonal_bilstm"]
SIZE = 7  # image height and width
SEEDS = tf.constant([3, 141, -7, 2**40, 0, 11], tf.int64)
VARIANTS = {  # id → overrides: both cells, both likelihoods
    f"{cell}-{likelihood}": {"cell": cell, "likelihood": likelihood}
    for cell, likelihood in itertools.product(CELLS, ["bernoulli", "categorical"])
}


def tiny_config(**overrides) -> PixelRNNConfig:
    """The entry's tiny config (h = 4 after a 3×3 mask-A layer) on 7×7 images, with two LSTM layers."""
    values = dict(image_shape=(SIZE, SIZE, 1), layers=2)
    if overrides.get("likelihood") == "categorical":
        values["dataset"] = "mnist"  # 8-bit levels
    return zoo.get("zoo.pixelrnn").make_tiny_config(**{**values, **overrides})


def tiny_model(**overrides) -> PixelRNN:
    return zoo.get("zoo.pixelrnn").build(tiny_config(**overrides))


@functools.lru_cache(maxsize=None)
def shared_model(cell: str) -> PixelRNN:
    """One single-layer Bernoulli model per cell for the tests that only read it: the sampler is traced
    once per model (tracing, not running, is what takes time here)."""
    return tiny_model(cell=cell, layers=1)


def binary_images(count: int, shape=(SIZE, SIZE, 1), seed: int = 0) -> np.ndarray:
    """`count` noisy copies of two fixed binary prototypes, so there is structure to learn."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 2, size=(2, *shape))
    images = prototypes[rng.integers(0, 2, size=count)]
    return np.where(rng.random(images.shape) < 0.1, 1 - images, images).astype(np.float32)


def redraw_weights(model, scale=0.5, seed=0):
    """Weights ~ N(0, scale²): a model far from uniform whose logits depend strongly on earlier pixels."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, weight.shape).astype(np.float32) for weight in model.get_weights()])


def pixel_jacobians(model, count: int = 3, seed: int = 0) -> np.ndarray:
    """d logits[i] / d image[i'] for `count` random inputs: [count, H·W, H·W], pixels in raster order.

    One backward pass: each input is repeated H·W times and copy i backpropagates the logits of
    pixel i only. Categorical logits are projected on a random vector over the 256 levels first:
    the projection is zero exactly when every level's gradient is.
    """
    rng = np.random.default_rng(seed)
    height, width, _ = model.config.image_shape
    pixels = height * width
    images = tf.constant(np.repeat(rng.normal(size=(count, *model.config.image_shape)), pixels, axis=0), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = model(images)
        if logits.shape.rank == 5:
            logits = tf.tensordot(logits, tf.constant(rng.normal(size=logits.shape[-1]), tf.float32), axes=1)
        chosen = tf.reduce_sum(tf.reshape(logits, [count, pixels, pixels]) * tf.eye(pixels))
    return tape.gradient(chosen, images).numpy().reshape(count, pixels, pixels)


def unseen_earlier_pixels(model) -> dict:
    """(row, column) of each output → the earlier pixels none of the random inputs' logits depend on."""
    width = model.config.image_shape[1]
    reaches = np.any(pixel_jacobians(model) != 0, axis=0)
    return {divmod(pixel, width): {divmod(earlier, width) for earlier in range(pixel) if not reaches[pixel, earlier]}
            for pixel in range(len(reaches))}


# The skew of the Diagonal BiLSTM (Sec. 3.2, Fig. 3).


def test_skew_shifts_row_i_right_by_i_and_unskew_inverts_it():
    image = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4, 1)
    expected = [[1, 2, 3, 4, 0, 0],
                [0, 5, 6, 7, 8, 0],
                [0, 0, 9, 10, 11, 12]]
    np.testing.assert_array_equal(skew(image)[0, ..., 0], expected)
    np.testing.assert_array_equal(unskew(skew(image), 4), image)
    for shape in [(2, 5, 3, 2), (2, 3, 5, 2), (1, 1, 4, 1), (1, 4, 1, 1)]:  # taller, wider, one row, one column
        features = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        assert skew(features).shape == (shape[0], shape[1], shape[1] + shape[2] - 1, shape[3])
        np.testing.assert_array_equal(unskew(skew(features), shape[2]), features)
    np.testing.assert_array_equal(shift_down(image)[0, ..., 0], [[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8]])


# The autoregressive property (Eq. 1), by gradients.


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_at_each_pixel_has_zero_gradient_wrt_itself_and_every_later_pixel(variant):
    jacobians = pixel_jacobians(tiny_model(**VARIANTS[variant]))
    for pixel in range(SIZE * SIZE):
        assert np.all(jacobians[:, pixel, pixel:] == 0), f"output {divmod(pixel, SIZE)} sees itself or a later pixel"
    assert np.any(jacobians[:, SIZE + 1, :SIZE + 1] != 0)  # and it does see earlier ones


def test_diagonal_bilstm_sees_every_earlier_pixel_when_the_first_layer_reaches_the_end_of_the_row_above():
    """Sec. 3.2: "the entire available context". On images 4 wide the 7×7 mask-A layer (Table 1) reaches
    the last pixel of the row above from every column; everything further up and left comes through
    the two LSTM directions, so every output depends on every earlier pixel."""
    model = tiny_model(cell="diagonal_bilstm", image_shape=(6, 4, 1), first_kernel_size=7, filters=8)
    unseen = {pixel: missed for pixel, missed in unseen_earlier_pixels(model).items() if missed}
    assert not unseen, f"outputs miss earlier pixels: {unseen}"


def test_diagonal_bilstm_misses_only_the_last_pixel_of_the_row_above_beyond_the_first_layer():
    """The one gap of Sec. 3.2's construction: features at row i − 1 never contain pixel (i − 1, W − 1)
    (mask A, then mask B), so the right direction, shifted down, cannot bring it; only the first
    layer's kernel can, from columns j ≥ W − 1 − r. With a 3×3 first layer (r = 1) on 7×7 images,
    outputs (i ≥ 1, j ≤ 4) miss exactly (i − 1, 6) and every other earlier pixel reaches them."""
    unseen = unseen_earlier_pixels(tiny_model(cell="diagonal_bilstm", filters=8))
    expected = {(row, column): ({(row - 1, SIZE - 1)} if row >= 1 and column <= SIZE - 3 else set())
                for row in range(SIZE) for column in range(SIZE)}
    assert unseen == expected


def test_row_lstm_sees_a_triangle_above_the_pixel():
    """Sec. 3.1, Fig. 4: the state-to-state kernel reaches one more column either side per row up, so
    output (6, 0) misses (3, 6), three rows up and six columns right (the Diagonal BiLSTM above sees it),
    and output (1, 1) misses the row above from column 3 on."""
    unseen = unseen_earlier_pixels(tiny_model(cell="row_lstm", filters=8))
    assert {(3, 5), (3, 6), (2, 6)} <= unseen[(6, 0)]
    assert unseen[(1, 1)] == {(0, 3), (0, 4), (0, 5), (0, 6)}


# Exact normalisation: Σ_x p(x) = 1 over every image.


@pytest.mark.parametrize("cell", CELLS)
def test_probabilities_of_all_sixteen_binary_2x2_images_sum_to_one(cell):
    model = tiny_model(cell=cell, image_shape=(2, 2, 1))
    redraw_weights(model)
    images = np.array(list(itertools.product([0.0, 1.0], repeat=4)), np.float32).reshape(16, 2, 2, 1)
    probabilities = np.exp(model.log_likelihood(images).numpy().astype(np.float64))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert probabilities.max() > 2 * probabilities.min()  # far from uniform, so the check has teeth


@pytest.mark.parametrize("cell, image_shape", [("row_lstm", (2, 1, 1)), ("diagonal_bilstm", (1, 2, 1))],
                         ids=["row_lstm-one-column", "diagonal_bilstm-one-row"])
def test_probabilities_of_all_65536_two_pixel_8_bit_images_sum_to_one(cell, image_shape):
    """Two pixels one above the other (the Row LSTM's recurrence) and side by side (the Diagonal
    BiLSTM's skewed columns)."""
    model = tiny_model(cell=cell, likelihood="categorical", image_shape=image_shape)
    redraw_weights(model)
    levels = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), axis=-1).reshape(-1, *image_shape)
    probabilities = np.exp(model.log_likelihood(levels / 255.0).numpy().astype(np.float64))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert probabilities.max() > 2 * probabilities.min()


# The sampler behind serving_default (its per-seed noise is the family's, tested in test_pixelcnn.py).


@pytest.mark.parametrize("cell", CELLS)
def test_samples_are_binary_images_with_finite_log_likelihood(cell):
    model = shared_model(cell)
    samples = model.sample(SEEDS).numpy()
    assert samples.shape == (len(SEEDS), SIZE, SIZE, 1)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    assert np.all(np.isfinite(model.log_likelihood(samples)))


# Training: the exact negative log-likelihood.


@pytest.mark.parametrize("cell", CELLS)
def test_fit_on_a_fixed_batch_lowers_the_exact_nll(cell):
    """Gradients flow through the recurrences; the metrics' bookkeeping is the family's (test_pixelcnn.py)."""
    model = tiny_model(cell=cell, layers=1, learning_rate=3e-3)
    model.compile_for_training(steps_per_epoch=20)
    images = binary_images(8)
    before = -model.log_likelihood(images).numpy().mean()
    model.fit(tf.data.Dataset.from_tensors({"image": images}).repeat(20), epochs=1, verbose=0, shuffle=False)
    after = -model.log_likelihood(images).numpy().mean()
    assert int(model.optimizer.iterations) == 20
    assert np.isfinite(after) and after < 0.98 * before, (before, after)


# Config, registry and Keras contracts.


@pytest.mark.parametrize("overrides, message", [
    ({"cell": "grid_lstm"}, "cell must be 'row_lstm' or 'diagonal_bilstm'"),
    ({"likelihood": "logistic"}, "likelihood must be 'bernoulli' or 'categorical'"),
    ({"likelihood": "categorical"}, "set dataset=mnist or fashion_mnist"),
    ({"row_kernel_size": 4}, "row_kernel_size must be odd and >= 3"),
    ({"first_kernel_size": 6}, "first_kernel_size must be odd and >= 3"),
    ({"layers": 0}, "layers must be >= 1"),
    ({"filters": 0}, "filters must be >= 1"),
    ({"output_filters": 0}, "output_filters must be >= 1"),
    ({"image_shape": (28, 28)}, "image_shape must be"),
])
def test_inconsistent_configs_are_errors_naming_the_fix(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        PixelRNNConfig(**overrides)


def test_pixelrnn_is_unconditional_and_conditional_is_not_a_config_key():
    assert PixelRNNConfig().conditional is False and "conditional" not in config_lib.to_dict(PixelRNNConfig())
    with pytest.raises(config_lib.ConfigError, match="unknown config key.*valid keys: .*cell"):
        config_lib.parse_assignments(["conditional=true"], PixelRNNConfig)
    assert config_lib.parse_assignments(["cell=row_lstm"], PixelRNNConfig) == {"cell": "row_lstm"}


def test_registry_entry_is_the_paper_config_evaluated_by_exact_likelihood():
    spec = zoo.get("zoo.pixelrnn")
    assert spec.make_config() == PixelRNNConfig()
    assert (PixelRNNConfig().cell, PixelRNNConfig().layers, PixelRNNConfig().filters) == ("diagonal_bilstm", 7, 16)
    assert spec.evaluation == ("exact_likelihood",)
    assert spec.dataset(spec.make_config()) == zoo.DatasetSpec("binarized_mnist", binarize=True)
    assert spec.dataset(tiny_config(likelihood="categorical")) == zoo.DatasetSpec("mnist", binarize=False)
    assert set(shared_model("row_lstm").serving_signatures()) == {"serving_default", "sample_png", "log_likelihood"}


def test_same_seed_builds_the_same_initial_weights():
    first, second, third = tiny_model(), tiny_model(), tiny_model(seed=1)
    for mine, theirs in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert any(np.any(mine != other) for mine, other in zip(first.get_weights(), third.get_weights()) if mine.any())
