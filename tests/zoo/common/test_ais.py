"""zoo.common.ais: annealed importance sampling against a linear-Gaussian model, whose log p(x) is exact."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from zoo.common import ais

tfd = tfp.distributions

LATENT, OBSERVED, NOISE = 2, 3, 0.3  # p(z) = N(0, I_2), p(x | z) = N(W z + b, 0.3² I_3)
WEIGHTS = np.array([[1.5, -0.5], [0.3, 2.0], [-1.0, 0.8]], np.float32)
BIAS = np.array([0.2, -0.1, 0.5], np.float32)
CHAINS = 32


def simulated(count, seed=0):
    """(z, x) ~ p(z) p(x | z): x [count, 3] and its exact posterior sample z [count, 2]."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((count, LATENT)).astype(np.float32)
    return z, (z @ WEIGHTS.T + BIAS + NOISE * rng.standard_normal((count, OBSERVED))).astype(np.float32)


def exact_log_marginal(x):
    """log N(x; b, W Wᵀ + σ² I): z integrated out in closed form."""
    covariance = WEIGHTS @ WEIGHTS.T + NOISE**2 * np.eye(OBSERVED, dtype=np.float32)
    return tfd.MultivariateNormalTriL(BIAS, tf.linalg.cholesky(covariance)).log_prob(x).numpy()


class LinearGaussian:
    """The model as a `zoo.contract.DecoderDensity` over x [batch, 3] (the contract's images)."""

    def prior_latents(self, shape, seed):
        return tf.random.stateless_normal([*shape, LATENT], seed=seed)

    def log_prior(self, z):
        return tfd.MultivariateNormalDiag(tf.zeros(LATENT), tf.ones(LATENT)).log_prob(z)

    def log_decoder(self, x, z):  # z [chains, batch, 2] → log N(x_b; W z + b, σ² I) [chains, batch]
        mean = tf.einsum("ij,cbj->cbi", WEIGHTS, z) + BIAS
        return tfd.Independent(tfd.Normal(mean, NOISE), 1).log_prob(x)

    def decoder_sample(self, z, seed):
        return z @ WEIGHTS.T + BIAS + NOISE * tf.random.stateless_normal([tf.shape(z)[0], OBSERVED], seed=seed)


ANNEALER = ais.Annealer(lambda given: LinearGaussian())  # one graph for every run of this module


def run(x, num_steps, seed=0, reverse_from=None):
    schedule = ais.sigmoid_schedule(num_steps)
    if reverse_from is None:
        initial = tf.random.stateless_normal([CHAINS, len(x), LATENT], seed=[seed, 1])
    else:
        initial, schedule = tf.tile(tf.constant(reverse_from)[None], [CHAINS, 1, 1]), schedule[::-1]
    return ANNEALER.run((), tf.constant(x), initial, schedule, tf.constant([seed, 2], tf.int32))


def test_the_schedule_rises_from_0_to_1_densest_at_the_ends():
    schedule = ais.sigmoid_schedule(100).numpy()
    steps = np.diff(schedule)
    assert schedule[0] == 0.0 and schedule[-1] == pytest.approx(1.0) and np.all(steps > 0)
    assert steps[0] < steps[50] and steps[-1] < steps[50]
    with pytest.raises(ValueError, match="at least one annealing step"):
        ais.sigmoid_schedule(0)


def test_one_step_is_importance_sampling_from_the_prior():
    """With β: 0 → 1 in one step, log w = log p(x | z_0) for z_0 ~ p(z), whatever HMC then does."""
    _, x = simulated(4)
    estimate = run(x, num_steps=1)
    initial = tf.random.stateless_normal([CHAINS, len(x), LATENT], seed=[0, 1])
    np.testing.assert_allclose(estimate.log_weights, LinearGaussian().log_decoder(x, initial), rtol=1e-6,
                               atol=1e-6)


def test_forward_and_reverse_chains_sandwich_the_exact_log_marginal():
    """Bidirectional Monte Carlo on simulated data: forward AIS ≤ log p(x) ≤ reverse AIS, each up to its
    noise, and with 1000 steps both lie within a few standard errors (and 0.05 nats) of the truth."""
    posterior_z, x = simulated(6)
    exact = exact_log_marginal(x)
    forward, reverse = run(x, num_steps=1000), run(x, num_steps=1000, reverse_from=posterior_z)
    for estimate in (forward, reverse):
        assert np.all(np.abs(estimate.log_marginal - exact) <= 4 * estimate.standard_error + 0.05)
        assert np.all(np.abs(estimate.acceptance - ais.TARGET_ACCEPTANCE) < 0.1)  # the pilot's step sizes
    assert np.all(forward.log_marginal <= exact + 4 * forward.standard_error)
    assert np.all(reverse.log_marginal >= exact - 4 * reverse.standard_error)


def test_more_annealing_steps_bring_the_estimate_to_log_p_x_and_close_the_bidirectional_gap():
    posterior_z, x = simulated(6, seed=1)
    exact = exact_log_marginal(x)
    error, gap = {}, {}
    for steps in (5, 1000):
        forward, reverse = run(x, steps, seed=3), run(x, steps, seed=3, reverse_from=posterior_z)
        error[steps] = np.abs(forward.log_marginal - exact).mean()
        gap[steps] = (reverse.log_marginal - forward.log_marginal).numpy().mean()
    assert error[1000] < 0.1 < error[5]
    assert gap[1000] < 0.2 < 0.5 < gap[5]


def test_standard_error_of_the_log_mean_weight_by_the_delta_method():
    log_weights = tf.constant(np.log([[1.0, 10.0], [3.0, 10.0], [2.0, 10.0], [2.0, 10.0]]), tf.float32)
    weights = np.array([1.0, 3.0, 2.0, 2.0])
    expected = weights.std() / np.sqrt(4) / weights.mean()
    np.testing.assert_allclose(ais.standard_error_of_log_mean(log_weights), [expected, 0.0], rtol=1e-5, atol=1e-7)


def test_an_annealer_traces_its_graph_once_for_all_batches_seeds_and_both_directions_of_a_size():
    """An evaluation anneals batch after batch, then forward and reverse for its bidirectional check: all of these
    run the graph traced on the first call (a trace takes seconds)."""
    annealer = ais.Annealer(lambda given: LinearGaussian())
    for seed in range(3):
        _, x = simulated(4, seed=seed)
        estimate = annealer.log_marginal((), tf.constant(x), chains=2, num_steps=3, seed=tf.constant([seed, 0]))
        assert estimate.log_weights.shape == (2, 4)
    forward, reverse = annealer.bidirectional((), 4, chains=2, num_steps=3, seed=tf.constant([1, 2]))
    assert np.all(forward.log_weights != reverse.log_weights)
    assert annealer.transitions.experimental_get_tracing_count() == 1
