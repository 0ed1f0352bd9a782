"""zoo.common.distributions: shapes, hand-computed densities, the scale floor and config round trips."""

import math

import numpy as np
import pytest
import tensorflow_probability as tfp

from zoo.common import distributions
from zoo.common.distributions import SCALE_FLOOR, BernoulliLayer, GaussianLayer

tfd = tfp.distributions

FEATURES = 5
EVENT_SHAPES = [(4,), (2, 3)]
LEADING_SHAPES = [(7,), (3, 7)]  # [batch] and [k, batch]


def _gaussian(event_shape, scale_activation="softplus"):
    return GaussianLayer(event_shape, scale_activation=scale_activation)


def _bernoulli(event_shape, scale_activation=None):
    del scale_activation  # Bernoulli has no scale
    return BernoulliLayer(event_shape)


LAYERS = {"gaussian": _gaussian, "bernoulli": _bernoulli}


def _features(leading_shape, seed=0):
    return np.random.default_rng(seed).normal(size=(*leading_shape, FEATURES)).astype(np.float32)


def _projection(layer, features):
    """W f + b computed in float64 numpy from the layer's own kernel."""
    kernel, bias = (np.asarray(w, np.float64) for w in layer.projection.get_weights())
    return features.astype(np.float64) @ kernel + bias


def _softplus(values):
    return np.logaddexp(0.0, values)


@pytest.mark.parametrize("family", LAYERS)
@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
@pytest.mark.parametrize("leading_shape", LEADING_SHAPES)
def test_event_shape_is_layer_event_shape_and_batch_shape_is_leading_input_dims(
    family, event_shape, leading_shape
):
    dist = LAYERS[family](event_shape)(_features(leading_shape))
    assert isinstance(dist, tfd.Independent)
    assert tuple(dist.event_shape) == event_shape
    assert tuple(dist.batch_shape) == leading_shape
    assert dist.log_prob(dist.sample(seed=(0, 1))).shape == leading_shape


@pytest.mark.parametrize("family", LAYERS)
@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
def test_params_size_equals_projection_units(family, event_shape):
    layer = LAYERS[family](event_shape)
    per_event = 2 if family == "gaussian" else 1
    assert layer.params_size(event_shape) == per_event * math.prod(event_shape)
    assert layer.projection.units == type(layer).params_size(event_shape)


@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
def test_bernoulli_log_prob_matches_log_likelihood_from_logits(event_shape):
    layer = BernoulliLayer(event_shape)
    features = _features((3, 7))
    dist = layer(features)
    x = np.random.default_rng(1).integers(0, 2, size=(3, 7, *event_shape)).astype(np.float32)
    logits = _projection(layer, features)
    # log σ(ℓ) = -softplus(-ℓ), log(1 - σ(ℓ)) = -softplus(ℓ).
    flat_x = x.reshape(3, 7, -1)
    expected = -(flat_x * _softplus(-logits) + (1 - flat_x) * _softplus(logits)).sum(axis=-1)
    np.testing.assert_allclose(dist.log_prob(x), expected, rtol=1e-5)


@pytest.mark.parametrize("scale_activation", distributions.SCALE_ACTIVATIONS)
@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
def test_gaussian_log_prob_matches_normal_density_with_scale_floor(event_shape, scale_activation):
    layer = GaussianLayer(event_shape, scale_activation=scale_activation)
    features = _features((3, 7))
    dist = layer(features)
    x = np.random.default_rng(2).normal(size=(3, 7, *event_shape)).astype(np.float32)
    loc, raw_scale = np.split(_projection(layer, features), 2, axis=-1)
    activation = _softplus if scale_activation == "softplus" else np.exp
    scale = activation(raw_scale) + SCALE_FLOOR
    z = (x.reshape(3, 7, -1) - loc) / scale
    expected = (-0.5 * z**2 - np.log(scale) - 0.5 * np.log(2 * np.pi)).sum(axis=-1)
    np.testing.assert_allclose(dist.log_prob(x), expected, rtol=1e-5)
    np.testing.assert_allclose(dist.mean().numpy().reshape(3, 7, -1), loc, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale_activation", distributions.SCALE_ACTIVATIONS)
def test_gaussian_scale_is_floored_for_very_negative_preactivations(scale_activation):
    layer = GaussianLayer((3,), scale_activation=scale_activation)
    layer.build((None, FEATURES))
    kernel = np.zeros((FEATURES, 6), np.float32)
    bias = np.array([0.0, 0.0, 0.0, -1e4, -100.0, -20.0], np.float32)  # loc, then raw scale
    layer.projection.set_weights([kernel, bias])
    dist = layer(_features((4,)))
    scale = dist.distribution.scale.numpy()
    assert np.all(scale >= np.float32(SCALE_FLOOR))
    np.testing.assert_allclose(scale[:, 0], SCALE_FLOOR, rtol=1e-6)
    # The density at the mean stays finite: -log σ is bounded by -log SCALE_FLOOR.
    log_prob_at_mean = dist.log_prob(dist.mean()).numpy()
    assert np.all(np.isfinite(log_prob_at_mean))
    assert np.all(log_prob_at_mean <= 3 * (-np.log(SCALE_FLOOR) - 0.5 * np.log(2 * np.pi)) + 1e-3)


def test_gaussian_layer_rejects_unknown_scale_activation():
    with pytest.raises(ValueError, match="softplus"):
        GaussianLayer((3,), scale_activation="relu")


@pytest.mark.parametrize(
    "family, scale_activation", [("gaussian", "softplus"), ("gaussian", "exp"), ("bernoulli", None)]
)
@pytest.mark.parametrize("event_shape", EVENT_SHAPES)
def test_get_config_from_config_round_trip_gives_same_layer(family, scale_activation, event_shape):
    layer = LAYERS[family](event_shape, scale_activation)
    features = _features((7,))
    original = layer(features)
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    restored(features)
    restored.set_weights(layer.get_weights())
    result = restored(features)
    np.testing.assert_array_equal(result.mean(), original.mean())
    np.testing.assert_array_equal(result.stddev(), original.stddev())


def test_reparameterize_is_loc_plus_scale_times_noise():
    dist = GaussianLayer((4,))(_features((3, 7)))
    noise = np.random.default_rng(3).normal(size=(3, 7, 4)).astype(np.float32)
    expected = dist.distribution.loc.numpy() + dist.distribution.scale.numpy() * noise
    np.testing.assert_allclose(distributions.reparameterize(dist, noise), expected, rtol=1e-6)


def test_reparameterize_broadcasts_sample_axis_over_batch_distribution():
    dist = GaussianLayer((4,))(_features((7,)))
    noise = np.random.default_rng(4).normal(size=(5, 7, 4)).astype(np.float32)
    samples = distributions.reparameterize(dist, noise).numpy()
    assert samples.shape == (5, 7, 4)
    np.testing.assert_allclose(
        samples[2], dist.distribution.loc.numpy() + dist.distribution.scale.numpy() * noise[2], rtol=1e-6
    )


def test_standard_normal_log_prob_is_sum_of_unit_normal_log_densities():
    prior = distributions.standard_normal(3)
    h = np.array([[0.0, 1.0, -2.0], [0.5, 0.5, 0.5]], np.float32)
    expected = (-0.5 * h**2 - 0.5 * np.log(2 * np.pi)).sum(axis=-1)
    np.testing.assert_allclose(prior.log_prob(h), expected, rtol=1e-6)


@pytest.mark.parametrize("event_shape", [(), (2, 3)])
def test_categorical_log_prob_is_log_softmax_of_the_projection_summed_over_the_event(event_shape):
    num_classes = 4
    layer = distributions.CategoricalLayer(num_classes, event_shape)
    features = _features((7,))
    dist = layer(features)
    values = np.random.default_rng(1).integers(0, num_classes, size=(7, *event_shape))

    logits = _projection(layer, features).reshape(7, *event_shape, num_classes)
    log_softmax = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    expected = np.take_along_axis(log_softmax, values[..., None], axis=-1)[..., 0].reshape(7, -1).sum(axis=1)

    assert tuple(dist.event_shape) == event_shape and tuple(dist.batch_shape) == (7,)
    assert layer.projection.units == distributions.CategoricalLayer.params_size(num_classes, event_shape)
    np.testing.assert_allclose(dist.log_prob(values), expected, rtol=1e-5, atol=1e-5)


def test_categorical_layer_config_round_trip_gives_same_probabilities():
    layer = distributions.CategoricalLayer(5, (3,))
    features = _features((4,))
    original = layer(features)
    restored = distributions.CategoricalLayer.from_config(layer.get_config())
    restored(features)
    restored.set_weights(layer.get_weights())
    np.testing.assert_array_equal(restored(features).distribution.logits_parameter(),
                                  original.distribution.logits_parameter())


@pytest.mark.parametrize("learned_prior", [False, True])
def test_closed_form_kl_between_gaussians_matches_tfp_and_a_monte_carlo_estimate(learned_prior):
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(3, 4)).astype(np.float32)
    scale = rng.uniform(0.3, 2.0, size=(3, 4)).astype(np.float32)
    gaussian = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)
    prior = (tfd.Independent(tfd.Normal(rng.normal(size=(3, 4)).astype(np.float32),
                                        rng.uniform(0.5, 1.5, size=(3, 4)).astype(np.float32)), 1)
             if learned_prior else distributions.standard_normal(4))
    closed_form = distributions.kl_between_gaussians(gaussian, prior).numpy()
    np.testing.assert_allclose(closed_form, tfd.kl_divergence(gaussian, prior), rtol=1e-5)
    # −½ per dimension: a Gaussian has KL 0 from itself, not −d/2.
    assert np.max(np.abs(distributions.kl_between_gaussians(prior, prior))) < 1e-6
    samples = gaussian.sample(200_000, seed=1)
    log_ratios = gaussian.log_prob(samples) - prior.log_prob(samples)
    standard_error = np.std(log_ratios, axis=0) / np.sqrt(200_000)
    assert np.all(np.abs(np.mean(log_ratios, axis=0) - closed_form) < 4 * standard_error)
