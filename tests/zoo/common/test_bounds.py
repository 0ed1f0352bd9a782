"""Numerical identities of zoo.bounds (Burda et al. 2016, Eq. 8 and Theorem 1)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.common import bounds

tfd = tfp.distributions


def _numpy_log_mean_exp(values, axis):
    return np.log(np.mean(np.exp(np.asarray(values, np.float64)), axis=axis))


class LinearGaussian:
    """p(z) = N(0, 1), p(x | z) = N(a z + b, s²), so p(x) = N(b, a² + s²) and the
    posterior is Gaussian with precision 1 + a²/s² and mean a (x - b) / (s² + a²)."""

    a, b, s, x = 2.0, 0.5, 0.7, 1.3

    def __init__(self):
        posterior_variance = 1.0 / (1.0 + self.a**2 / self.s**2)
        self.posterior_loc = posterior_variance * self.a * (self.x - self.b) / self.s**2
        self.posterior_scale = np.sqrt(posterior_variance)
        self.log_px = float(
            tfd.Normal(np.float64(self.b), np.sqrt(self.a**2 + self.s**2)).log_prob(self.x)
        )

    def q(self, loc_shift: float = 0.0, scale_factor: float = 1.0):
        """q(z | x): the exact posterior, shifted by loc_shift stddevs and widened."""
        return tfd.Normal(
            np.float64(self.posterior_loc + loc_shift * self.posterior_scale),
            np.float64(scale_factor * self.posterior_scale),
        )

    def log_weights(self, q, sample_shape, seed):
        """log w = log p(z) + log p(x | z) - log q(z | x) for z ~ q, float64."""
        z = q.sample(sample_shape, seed=seed)
        log_prior = tfd.Normal(np.float64(0.0), np.float64(1.0)).log_prob(z)
        log_likelihood = tfd.Normal(self.a * z + self.b, np.float64(self.s)).log_prob(
            np.float64(self.x)
        )
        return log_prior + log_likelihood - q.log_prob(z)


@pytest.fixture(scope="module")
def linear_gaussian():
    return LinearGaussian()


def test_iwae_bound_with_one_sample_equals_elbo_exactly():
    log_weights = tf.random.stateless_normal([1, 9], seed=[0, 1], stddev=30.0)
    np.testing.assert_array_equal(bounds.iwae_bound(log_weights), bounds.elbo(log_weights))


def test_elbo_is_mean_of_log_weights_over_sample_axis():
    log_weights = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(bounds.elbo(log_weights, axis=1), log_weights.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_log_mean_exp_matches_float64_reference(axis):
    values = np.random.default_rng(1).normal(scale=3.0, size=(7, 5)).astype(np.float32)
    np.testing.assert_allclose(
        bounds.log_mean_exp(values, axis=axis), _numpy_log_mean_exp(values, axis), rtol=1e-6, atol=1e-5
    )


@pytest.mark.parametrize("offset", [1e4, -1e4])
def test_log_mean_exp_is_finite_and_shift_equivariant_at_extreme_values(offset):
    # exp(±1e4) overflows even float64, so the reference is log_mean_exp(v + c) = log_mean_exp(v) + c.
    values = np.random.default_rng(2).normal(size=(6, 4))
    result = bounds.log_mean_exp(tf.constant(values + offset, tf.float32)).numpy()
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, _numpy_log_mean_exp(values, 0) + offset, rtol=1e-6)


def test_log_mean_exp_of_widely_spread_values_is_dominated_by_the_largest():
    result = bounds.log_mean_exp(tf.constant([1e4, -1e4], tf.float32))
    np.testing.assert_allclose(result, 1e4 - np.log(2.0), rtol=1e-7)


_EXTREME_LOG_WEIGHTS = np.array(  # [k = 3, batch = 5]; each column is one example
    [
        [1e4, -1e4, 0.0, 1e4, -3e38],
        [-1e4, -1e4, 1e4, 1e4, 3e38],
        [0.0, -1e4, -1e4, 1e4, 0.0],
    ],
    np.float32,
)


def _softmax_over_samples(log_weights):
    shifted = np.exp(log_weights - log_weights.max(axis=0))
    return shifted / shifted.sum(axis=0)


@pytest.mark.parametrize(
    "bound, expected_gradient",
    [
        (bounds.iwae_bound, _softmax_over_samples),  # ∂L_k/∂log w_j: normalised importance weights
        (bounds.elbo, lambda log_weights: np.full_like(log_weights, 1 / len(log_weights))),
    ],
    ids=["iwae", "elbo"],
)
def test_bound_gradients_are_finite_at_extreme_float32_inputs(bound, expected_gradient):
    log_weights = tf.constant(_EXTREME_LOG_WEIGHTS)
    with tf.GradientTape() as tape:
        tape.watch(log_weights)
        total = tf.reduce_sum(bound(log_weights))
    gradient = tape.gradient(total, log_weights).numpy()
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(
        gradient, expected_gradient(_EXTREME_LOG_WEIGHTS.astype(np.float64)), rtol=1e-6, atol=1e-7
    )


def _chunked(log_weights: np.ndarray, num_samples, samples_per_chunk: int, calls: list | None = None):
    """iwae_bound_in_chunks over the rows of a fixed [k, batch] array of log-weights."""
    table = tf.constant(log_weights)

    def log_weights_of_samples(start, count):
        if calls is not None:
            calls.append((int(start), int(count)))
        return table[start:start + count]

    return bounds.iwae_bound_in_chunks(log_weights_of_samples, tf.constant(num_samples), samples_per_chunk)


@pytest.mark.parametrize("samples_per_chunk", [1, 2, 4, 6, 100])
def test_iwae_bound_in_chunks_equals_the_bound_over_each_examples_first_k_weights(samples_per_chunk):
    log_weights = np.random.default_rng(3).normal(scale=5.0, size=(6, 4)).astype(np.float32)
    num_samples = np.array([1, 3, 6, 2])
    chunked = _chunked(log_weights, num_samples, samples_per_chunk).numpy()
    expected = [bounds.iwae_bound(log_weights[:n, b]).numpy() for b, n in enumerate(num_samples)]
    np.testing.assert_allclose(chunked, expected, rtol=1e-6)


def test_iwae_bound_in_chunks_asks_for_one_chunk_at_a_time_and_no_sample_beyond_the_largest_k():
    calls = []
    _chunked(np.zeros((10, 2), np.float32), [7, 3], samples_per_chunk=3, calls=calls)
    assert calls == [(0, 3), (3, 3), (6, 1)]


def test_iwae_bound_in_chunks_gradient_is_finite_and_zero_on_unused_weights():
    log_weights = tf.constant(_EXTREME_LOG_WEIGHTS)
    num_samples = tf.constant([1, 2, 3, 2, 2])
    with tf.GradientTape() as tape:
        tape.watch(log_weights)
        total = tf.reduce_sum(bounds.iwae_bound_in_chunks(
            lambda start, count: log_weights[start:start + count], num_samples, samples_per_chunk=2))
    gradient = tape.gradient(total, log_weights).numpy()
    assert np.all(np.isfinite(gradient))
    unused = np.arange(3)[:, None] >= num_samples.numpy()[None, :]
    np.testing.assert_array_equal(gradient[unused], 0.0)
    np.testing.assert_allclose(gradient.sum(axis=0), 1.0, rtol=1e-6)


def test_log_weights_under_exact_posterior_all_equal_log_px(linear_gaussian):
    log_weights = linear_gaussian.log_weights(linear_gaussian.q(), [50], seed=(6, 7)).numpy()
    np.testing.assert_allclose(log_weights, linear_gaussian.log_px, rtol=1e-12)
    np.testing.assert_allclose(bounds.iwae_bound(log_weights), linear_gaussian.log_px, rtol=1e-12)


_KS = (1, 2, 4, 8, 16, 32, 64)
_DRAWS = 4000


@pytest.fixture(scope="module")
def imperfect_bounds(linear_gaussian):
    """L_k for k in _KS, per draw, [len(_KS), _DRAWS]; L_k uses the first k of 64 weights."""
    q = linear_gaussian.q(loc_shift=0.5, scale_factor=1.5)
    log_weights = linear_gaussian.log_weights(q, [max(_KS), _DRAWS], seed=(1, 2))
    return np.stack([bounds.iwae_bound(log_weights[:k]).numpy() for k in _KS])


def _standard_error(values):
    return values.std(axis=-1) / np.sqrt(values.shape[-1])


def test_iwae_bound_is_non_decreasing_in_k_in_expectation(imperfect_bounds):
    increments = np.diff(imperfect_bounds, axis=0)  # L_2k - L_k per draw
    assert np.all(increments.mean(axis=1) >= -3 * _standard_error(increments))
    # The bound tightens for real: a constant (ELBO-like) or reversed bound fails here.
    total = imperfect_bounds[-1] - imperfect_bounds[0]
    assert total.mean() > 10 * _standard_error(total)


def test_iwae_bound_never_exceeds_analytic_log_px_in_expectation(linear_gaussian, imperfect_bounds):
    means = imperfect_bounds.mean(axis=1)
    assert np.all(means <= linear_gaussian.log_px + 3 * _standard_error(imperfect_bounds))
    # With k = 1 the gap is KL(q || p(z | x)) ≈ 0.35 nats, far above the noise.
    assert means[0] < linear_gaussian.log_px - 0.2


def test_iwae_bound_approaches_log_px_as_k_grows(linear_gaussian, imperfect_bounds):
    gaps = linear_gaussian.log_px - imperfect_bounds.mean(axis=1)
    assert gaps[-1] < gaps[0] / 10
    q = linear_gaussian.q(loc_shift=0.5, scale_factor=1.5)
    large_k = bounds.iwae_bound(linear_gaussian.log_weights(q, [4096, 8], seed=(3, 4))).numpy()
    assert abs(large_k.mean() - linear_gaussian.log_px) < 0.01
