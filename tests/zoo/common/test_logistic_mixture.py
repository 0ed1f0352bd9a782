"""zoo.common.logistic_mixture: the discretized logistic mixture (PixelCNN++): normalisation, a
high-precision reference of Eqs. 2-3, finiteness at extremes, sampling and config."""

import decimal
import math

import numpy as np
import pytest
import tensorflow as tf

from zoo.common.logistic_mixture import (
    LOG_SCALE_FLOOR,
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureLayer,
)

LEVELS = np.arange(256, dtype=np.float32)
IMAGE = (2, 3, 3)  # batch, height, width
FEATURES = 8

# Means inside, on and beyond the [-1, 1] range; log-scales from the floor to very wide.
EXTREME_LOCS = [-5.0, -1.0, -0.3, 0.0, 0.7, 1.0, 5.0]
EXTREME_LOG_SCALES = [LOG_SCALE_FLOOR, -4.0, 0.0, 3.0, 20.0]


def _random_mixture(batch, channels, components, seed, locs=None, log_scales=None):
    rng = np.random.default_rng(seed)
    shape = (*batch, components, channels)
    locs = rng.uniform(-1.2, 1.2, size=shape) if locs is None else locs
    log_scales = rng.uniform(LOG_SCALE_FLOOR, 1.0, size=shape) if log_scales is None else log_scales
    coefficients = np.tanh(rng.normal(size=(*batch, components, channels * (channels - 1) // 2)))
    return DiscretizedLogisticMixture(
        mixture_logits=rng.normal(size=(*batch, components)).astype(np.float32) * 3,
        locs=locs.astype(np.float32),
        log_scales=log_scales.astype(np.float32),
        coefficients=coefficients.astype(np.float32),
    )


def _extreme_grid(components=3, channels=1):
    """Batch [len(EXTREME_LOCS), len(EXTREME_LOG_SCALES)]; every component shares the grid point."""
    locs, log_scales = np.meshgrid(EXTREME_LOCS, EXTREME_LOG_SCALES, indexing="ij")
    tile = (1, 1, components, channels)
    return np.tile(locs[..., None, None], tile), np.tile(log_scales[..., None, None], tile)


def _log_sum_probabilities(log_probs, axis=0):
    """log Σ exp(log_probs) in float64, so 65536-term sums add no float32 rounding of their own."""
    log_probs = np.asarray(log_probs, np.float64)
    peak = log_probs.max(axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.exp(log_probs - peak).sum(axis=axis))


# ---------------------------------------------------------------------------------------------
# Normalisation.


@pytest.mark.parametrize("components", [1, 3])
def test_probabilities_of_the_256_levels_of_a_grey_pixel_sum_to_one(components):
    locs, log_scales = _extreme_grid(components)
    locs = locs + np.linspace(0.0, 0.05, components)[:, None]  # distinct components
    dist = _random_mixture(locs.shape[:2], 1, components, seed=0, locs=locs, log_scales=log_scales)
    values = (LEVELS / 255).reshape(256, 1, 1, 1)
    np.testing.assert_allclose(_log_sum_probabilities(dist.log_prob(values)), 0.0, atol=1e-5)
    random = _random_mixture((20,), 1, components, seed=1)
    np.testing.assert_allclose(_log_sum_probabilities(random.log_prob(values[:, 0])), 0.0, atol=1e-5)


def test_joint_probabilities_of_a_two_channel_pixel_sum_to_one():
    dist = _random_mixture((3,), 2, 3, seed=2)
    grid = np.stack(np.meshgrid(LEVELS, LEVELS, indexing="ij"), axis=-1).reshape(-1, 1, 2) / 255
    np.testing.assert_allclose(_log_sum_probabilities(dist.log_prob(grid)), 0.0, atol=1e-5)


@pytest.mark.parametrize("extreme", [False, True])
def test_rgb_red_marginal_and_green_and_blue_conditionals_each_sum_to_one(extreme):
    """Σ_r p(r) = 1, Σ_g p(g | r) = 1 and Σ_b p(b | r, g) = 1, whence Σ p(r, g, b) = 1."""
    if extreme:
        locs, log_scales = _extreme_grid(components=2, channels=3)
        dist = _random_mixture(locs.shape[:2], 3, 2, seed=3, locs=locs, log_scales=log_scales)
    else:
        dist = _random_mixture((6,), 3, 4, seed=3)
    log_weights = tf.nn.log_softmax(dist.mixture_logits)  # [..., K]
    batch_rank = len(dist.batch_shape)

    def log_joint(fixed, channel):
        """log p(x_0, …, x_channel) for x_channel over the 256 levels, earlier channels `fixed`."""
        values = np.zeros((256, *dist.batch_shape, 3), np.float32)
        values[..., :channel] = np.asarray(fixed) / 255
        values[..., channel] = (LEVELS / 255).reshape(256, *[1] * batch_rank)
        log_probs = dist.channel_log_probs(values)[..., : channel + 1]  # [256, ..., K, channel + 1]
        return tf.reduce_logsumexp(log_weights + tf.reduce_sum(log_probs, axis=-1), axis=-1)

    # Marginals of far-tail values are ~e^-1000, known to float32's relative precision only.
    log_red = log_joint([], 0)
    np.testing.assert_allclose(_log_sum_probabilities(log_red), 0.0, atol=1e-5)
    for red in (0, 131, 255):
        log_red_green = log_joint([red], 1)
        np.testing.assert_allclose(
            _log_sum_probabilities(log_red_green), log_red[red], rtol=1e-6, atol=1e-5)
        for green in (0, 77):
            log_rgb = log_joint([red, green], 2)
            np.testing.assert_allclose(
                _log_sum_probabilities(log_rgb), log_red_green[green], rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Eqs. 2-3 against a reference in 60-digit decimal arithmetic.

decimal.getcontext().prec = 60


def _sigmoid(z):
    return 1 / (1 + (-z).exp())


def _bin_probability(level, loc, scale):
    """Eq. 2 for one component: σ((y + δ − μ)/s) − σ((y − δ − μ)/s), ±∞ at the edges.

    In the upper tail the difference is taken as σ(−b) − σ(−a), so it keeps its digits."""
    centre = decimal.Decimal(2 * level) / 255 - 1
    half_width = decimal.Decimal(1) / 255
    upper = None if level == 255 else (centre + half_width - loc) / scale
    lower = None if level == 0 else (centre - half_width - loc) / scale
    if lower is None:
        return _sigmoid(upper)
    if upper is None:
        return _sigmoid(-lower)
    if lower > 0:
        return _sigmoid(-lower) - _sigmoid(-upper)
    return _sigmoid(upper) - _sigmoid(lower)


def _reference_pixel_log_prob(levels, logits, locs, log_scales, coefficients):
    """log Σ_k π_k Π_c P(x_c | μ_kc + Σ_{j<c} α_kcj y_j, s_kc) ([1] Eqs. 2-3), one pixel."""
    D = decimal.Decimal
    weights = [D(float(w)).exp() for w in logits]
    total = sum(weights)
    centres = [D(2 * int(k)) / 255 - 1 for k in levels]
    probability = D(0)
    for k, weight in enumerate(weights):
        term = weight / total
        for c, level in enumerate(levels):
            loc = D(float(locs[k, c])) + sum(
                D(float(coefficients[k, c * (c - 1) // 2 + j])) * centres[j] for j in range(c))
            term *= _bin_probability(int(level), loc, D(float(log_scales[k, c])).exp())
        probability += term
    return float(probability.ln())


def _layer_parameters(layer, features, channels, components):
    """The documented layout and squashing, in float64 numpy from the layer's own weights."""
    kernel, bias = (np.asarray(w, np.float64) for w in layer.projection.get_weights())
    params = features.astype(np.float64) @ kernel + bias
    k, c = components, channels
    logits, locs, log_scales, coefficients = np.split(params, np.cumsum([k, k * c, k * c]), axis=-1)
    leading = params.shape[:-1]
    return (
        logits,
        locs.reshape(*leading, k, c),
        np.maximum(log_scales.reshape(*leading, k, c), LOG_SCALE_FLOOR),
        np.tanh(coefficients.reshape(*leading, k, c * (c - 1) // 2)),
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_layer_log_prob_matches_high_precision_reference_of_eqs_2_and_3(channels):
    components = 4
    rng = np.random.default_rng(4)
    layer = DiscretizedLogisticMixtureLayer(components, channels)
    features = rng.normal(size=(*IMAGE, FEATURES)).astype(np.float32)
    layer.build(features.shape)
    kernel = rng.normal(size=(FEATURES, layer.params_size(components, channels)))
    bias = np.zeros(kernel.shape[1])
    bias[components * (1 + channels): components * (1 + 2 * channels)] = -4.0  # log-scales near the floor
    layer.projection.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    levels = rng.integers(0, 256, size=(*IMAGE, channels))
    levels[0, 0, 0] = 0
    levels[0, 0, 1] = 255
    images = (levels / 255).astype(np.float32)

    dist = layer(features)
    logits, locs, log_scales, coefficients = _layer_parameters(layer, features, channels, components)
    assert log_scales.min() == LOG_SCALE_FLOOR and np.abs(locs).max() > 1  # the test reaches both
    expected = np.vectorize(
        lambda b, h, w: _reference_pixel_log_prob(levels[b, h, w], logits[b, h, w], locs[b, h, w],
                                                  log_scales[b, h, w], coefficients[b, h, w])
    )(*np.indices(IMAGE))
    pixel_log_probs = dist.distribution.log_prob(images).numpy()
    assert expected.min() < -200  # far tails, where σ(a) − σ(b) underflows in float32
    np.testing.assert_allclose(pixel_log_probs, expected, rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(dist.log_prob(images), expected.sum(axis=(1, 2)), rtol=2e-6)


# ---------------------------------------------------------------------------------------------
# Finite values and gradients at extremes.


@pytest.mark.parametrize("channels", [1, 3])
def test_log_prob_and_its_gradients_are_finite_at_extreme_parameters_and_edge_levels(channels):
    locs, log_scales = _extreme_grid(components=2, channels=channels)
    dist = _random_mixture(locs.shape[:2], channels, 2, seed=5, locs=locs, log_scales=log_scales)
    params = [tf.Variable(p) for p in (dist.mixture_logits, dist.locs, dist.log_scales, dist.coefficients)]
    values = np.array([0, 1, 127, 254, 255], np.float32).reshape(5, 1, 1, 1) / 255
    values = np.broadcast_to(values, (5, *dist.batch_shape, channels))
    with tf.GradientTape() as tape:
        log_probs = DiscretizedLogisticMixture(*params).log_prob(values)
        total = tf.reduce_sum(log_probs)
    gradients = tape.gradient(total, params)
    assert np.all(np.isfinite(log_probs))
    for param, gradient in zip(params, gradients):
        if param.shape.num_elements():  # grey pixels have no coefficients
            assert np.all(np.isfinite(gradient)), param.name


def test_layer_floors_log_scales_squashes_coefficients_and_keeps_gradients_finite():
    components, channels = 2, 3
    layer = DiscretizedLogisticMixtureLayer(components, channels)
    features = np.random.default_rng(6).normal(size=(*IMAGE, FEATURES)).astype(np.float32)
    layer.build(features.shape)
    kernel = np.zeros((FEATURES, layer.params_size(components, channels)), np.float32)
    bias = np.full(kernel.shape[1], 50.0, np.float32)  # means and coefficients far beyond ±1
    bias[components * (1 + channels): components * (1 + 2 * channels)] = -1e4  # log-scales
    layer.projection.set_weights([kernel, bias])
    images = np.zeros((*IMAGE, channels), np.float32)
    with tf.GradientTape() as tape:
        dist = layer(features)
        log_prob = dist.log_prob(images)
        total = tf.reduce_sum(log_prob)
    gradients = tape.gradient(total, layer.trainable_weights)
    np.testing.assert_array_equal(dist.distribution.log_scales, LOG_SCALE_FLOOR)
    np.testing.assert_array_equal(dist.distribution.coefficients, 1.0)
    assert np.all(np.isfinite(log_prob)) and np.all(log_prob < -1e4)
    for gradient in gradients:
        assert np.all(np.isfinite(gradient))


# ---------------------------------------------------------------------------------------------
# Sampling.


def _chi_square(counts, probabilities, min_expected=5.0):
    """Pearson's statistic over cells with ≥ min_expected expected counts, the rest pooled."""
    expected = counts.sum() * probabilities
    keep = expected >= min_expected
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    statistic = np.sum((observed - expected) ** 2 / np.maximum(expected, 1e-12))
    return statistic, keep.sum()  # degrees of freedom: cells - 1


@pytest.mark.parametrize("loc", [0.0, 0.93])  # 0.93: much of the mass in the edge level 255
def test_single_component_grey_samples_follow_the_level_probabilities(loc):
    dist = DiscretizedLogisticMixture(
        mixture_logits=[0.0], locs=[[loc]], log_scales=[[math.log(0.03)]])
    samples = dist.sample(4000, seed=(7, 8)).numpy()
    counts = np.bincount(np.round(samples[:, 0] * 255).astype(int), minlength=256)
    probabilities = np.exp(dist.log_prob((LEVELS / 255)[:, None]).numpy())
    statistic, dof = _chi_square(counts, probabilities)
    assert dof >= 10
    assert statistic < dof + 5 * math.sqrt(2 * dof)


def test_two_channel_mixture_samples_follow_the_joint_probabilities():
    """Checks component choice and the α y_R shift of the second channel's mean in sampling."""
    dist = DiscretizedLogisticMixture(
        mixture_logits=[0.3, -0.2],
        locs=[[-0.4, 0.1], [0.5, -0.3]],
        log_scales=[[math.log(0.05), math.log(0.02)], [math.log(0.03), math.log(0.04)]],
        coefficients=[[0.8], [-0.6]],
    )
    samples = np.round(dist.sample(5000, seed=(9, 10)).numpy() * 255).astype(int)
    counts = np.bincount(samples[:, 0] * 256 + samples[:, 1], minlength=256 * 256)
    grid = np.stack(np.meshgrid(LEVELS, LEVELS, indexing="ij"), axis=-1).reshape(-1, 2) / 255
    probabilities = np.exp(dist.log_prob(grid).numpy())
    statistic, dof = _chi_square(counts, probabilities)
    assert dof >= 50
    assert statistic < dof + 5 * math.sqrt(2 * dof)


@pytest.mark.parametrize("channels", [1, 3])
def test_layer_samples_are_images_on_the_256_level_grid_and_deterministic_for_a_seed(channels):
    layer = DiscretizedLogisticMixtureLayer(3, channels)
    dist = layer(np.random.default_rng(11).normal(size=(*IMAGE, FEATURES)).astype(np.float32))
    samples = dist.sample(seed=(12, 13)).numpy()
    assert samples.shape == (*IMAGE, channels) and samples.dtype == np.float32
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    np.testing.assert_array_equal(samples * 255, np.round(samples * 255))
    np.testing.assert_array_equal(dist.sample(seed=(12, 13)), samples)
    assert not np.array_equal(dist.sample(seed=(12, 14)), samples)
    assert np.all(np.isfinite(dist.log_prob(samples))) and dist.log_prob(samples).shape == IMAGE[:1]


def test_sample_from_uniforms_of_one_logistic_is_the_inverse_cdf_of_the_levels():
    """With one component, level k is drawn iff F(k − 1) ≤ u < F(k), F the CDF over the 256 levels."""
    dist = DiscretizedLogisticMixture(mixture_logits=[0.0], locs=[[0.2]], log_scales=[[math.log(0.05)]])
    cdf = np.cumsum(np.exp(dist.log_prob((LEVELS / 255)[:, None]).numpy().astype(np.float64)))
    u = np.concatenate([np.linspace(1e-6, 1 - 1e-6, 4001), [1e-30, 1e-9, 1 - 2**-24]])
    expected = np.minimum(np.searchsorted(cdf, u, side="right"), 255)
    uniforms = np.stack([np.full_like(u, 0.5), u], axis=-1).astype(np.float32)
    levels = np.round(dist.sample_from_uniforms(uniforms).numpy()[:, 0] * 255).astype(int)
    near_a_step = np.min(np.abs(u[:, None] - cdf[None, :]), axis=1) < 1e-5  # float32 may fall either side
    assert near_a_step.mean() < 0.02
    np.testing.assert_array_equal(levels[~near_a_step], expected[~near_a_step])
    assert levels[-3] == 0 and levels[-1] == 255 and len(np.unique(levels)) > 50


def test_sample_from_uniforms_picks_the_component_by_inverting_the_mixture_cdf():
    """Components far apart and narrow, with π = (0.2, 0.5, 0.3): u_0 in [0, 0.2) gives the first,
    [0.2, 0.7) the second, [0.7, 1) the third; u_1 = 1/2 then gives the level at its location."""
    component_levels = np.array([51, 128, 204])
    dist = DiscretizedLogisticMixture(
        mixture_logits=np.log([0.2, 0.5, 0.3]).astype(np.float32),
        locs=(2 * component_levels[:, None] / 255 - 1).astype(np.float32), log_scales=[[math.log(1e-3)]] * 3)
    u_0 = np.array([1e-7, 0.1, 0.199, 0.201, 0.5, 0.699, 0.701, 0.9, 1 - 1e-7], np.float32)
    uniforms = np.stack([u_0, np.full_like(u_0, 0.5)], axis=-1)
    levels = np.round(dist.sample_from_uniforms(uniforms).numpy()[:, 0] * 255).astype(int)
    np.testing.assert_array_equal(levels, component_levels[[0, 0, 0, 1, 1, 1, 2, 2, 2]])


UNIFORM_SAMPLING_MIXTURES = {  # channels → a 3-component mixture; the second channel's location shifts with α y_0
    1: dict(mixture_logits=[0.3, -0.2, 0.5], locs=[[-0.4], [0.5], [0.93]],
            log_scales=np.log([[0.05], [0.03], [0.02]]).astype(np.float32)),
    2: dict(mixture_logits=[0.3, -0.2, 0.5], locs=[[-0.4, 0.1], [0.5, -0.3], [0.05, 0.6]],
            log_scales=np.log([[0.05, 0.02], [0.03, 0.04], [0.02, 0.03]]).astype(np.float32),
            coefficients=[[0.8], [-0.6], [0.3]]),
}


@pytest.mark.parametrize("channels", [1, 2])
def test_samples_from_uniforms_follow_the_probabilities(channels):
    dist = DiscretizedLogisticMixture(**UNIFORM_SAMPLING_MIXTURES[channels])
    uniforms = np.random.default_rng(17).uniform(1e-7, 1.0, size=(5000, 1 + channels)).astype(np.float32)
    samples = np.round(dist.sample_from_uniforms(uniforms).numpy() * 255).astype(int)
    cells = samples[:, 0] * 256 + samples[:, 1] if channels == 2 else samples[:, 0]
    counts = np.bincount(cells, minlength=256**channels)
    grid = np.stack(np.meshgrid(*[LEVELS] * channels, indexing="ij"), axis=-1).reshape(-1, channels) / 255
    statistic, dof = _chi_square(counts, np.exp(dist.log_prob(grid).numpy()))
    assert dof >= 20
    assert statistic < dof + 5 * math.sqrt(2 * dof)


def test_sample_from_uniforms_broadcasts_over_a_layers_batch_onto_the_256_level_grid():
    layer = DiscretizedLogisticMixtureLayer(3, 3)
    dist = layer(np.random.default_rng(18).normal(size=(*IMAGE, FEATURES)).astype(np.float32)).distribution
    uniforms = np.random.default_rng(19).uniform(1e-7, 1.0, size=(5, *IMAGE, 4)).astype(np.float32)
    samples = dist.sample_from_uniforms(uniforms).numpy()
    assert samples.shape == (5, *IMAGE, 3) and samples.min() >= 0.0 and samples.max() <= 1.0
    np.testing.assert_array_equal(samples * 255, np.round(samples * 255))
    np.testing.assert_array_equal(dist.sample_from_uniforms(uniforms[1]), samples[1])
    assert np.all(np.isfinite(dist.log_prob(samples)))


# ---------------------------------------------------------------------------------------------
# Layer contracts.


@pytest.mark.parametrize("components, channels, size", [(10, 3, 100), (5, 3, 50), (10, 1, 30), (4, 2, 24)])
def test_params_size_counts_logit_means_log_scales_and_coefficients(components, channels, size):
    assert DiscretizedLogisticMixtureLayer.params_size(components, channels) == size
    assert DiscretizedLogisticMixtureLayer(components, channels).projection.units == size


def test_layer_event_is_the_image_and_batch_is_the_leading_axis():
    dist = DiscretizedLogisticMixtureLayer(2, 3)(np.zeros((*IMAGE, FEATURES), np.float32))
    assert tuple(dist.batch_shape) == IMAGE[:1] and tuple(dist.event_shape) == (*IMAGE[1:], 3)


def test_get_config_from_config_round_trip_gives_same_log_prob_and_samples():
    layer = DiscretizedLogisticMixtureLayer(num_mixtures=3, channels=3, name="likelihood")
    features = np.random.default_rng(14).normal(size=(*IMAGE, FEATURES)).astype(np.float32)
    original = layer(features)
    restored = DiscretizedLogisticMixtureLayer.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    restored.build(features.shape)
    restored.set_weights(layer.get_weights())
    result = restored(features)
    samples = original.sample(seed=(15, 16))
    np.testing.assert_array_equal(result.sample(seed=(15, 16)), samples)
    np.testing.assert_array_equal(result.log_prob(samples), original.log_prob(samples))
