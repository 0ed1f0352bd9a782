"""zoo.gan_losses: hand-computed values, float32 stability, saturation, optima and penalties."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.gan import losses as gan_losses
from zoo.gan.losses import LOSSES, LossPair, loss_pair

MODERATE_LOGITS = np.array([-3.0, -0.5, 0.0, 0.7, 2.5])
EXTREME_LOGITS = np.array([-1e4, -100.0, 100.0, 1e4], np.float32)


def _sigmoid(values):
    return 1.0 / (1.0 + np.exp(-values))


def _value_and_gradient(function, *args):
    args = [tf.constant(a, tf.float32) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args)
        value = function(*args)
    return value.numpy(), [g.numpy() for g in tape.gradient(value, args)]


def test_classifier_losses_match_log_sigmoid_definitions():
    real, fake = MODERATE_LOGITS, MODERATE_LOGITS[::-1].copy()
    np.testing.assert_allclose(
        gan_losses.discriminator_loss(real, fake),
        -np.log(_sigmoid(real)) - np.log(1.0 - _sigmoid(fake)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        gan_losses.minimax_generator_loss(fake), np.log(1.0 - _sigmoid(fake)), rtol=1e-6
    )
    np.testing.assert_allclose(
        gan_losses.non_saturating_generator_loss(fake), -np.log(_sigmoid(fake)), rtol=1e-6
    )


def test_wasserstein_losses_are_score_differences():
    real, fake = MODERATE_LOGITS, 2.0 * MODERATE_LOGITS + 1.0
    np.testing.assert_allclose(gan_losses.wasserstein_critic_loss(real, fake), fake - real)
    np.testing.assert_allclose(gan_losses.wasserstein_generator_loss(fake), -fake)


PER_EXAMPLE_LOSSES = {
    "discriminator": lambda logits: gan_losses.discriminator_loss(logits, -logits),
    "minimax_generator": gan_losses.minimax_generator_loss,
    "non_saturating_generator": gan_losses.non_saturating_generator_loss,
    "wasserstein_critic": lambda scores: gan_losses.wasserstein_critic_loss(scores, -scores),
    "wasserstein_generator": gan_losses.wasserstein_generator_loss,
    "energy_discriminator": lambda e: gan_losses.energy_discriminator_loss(e, -e, margin=1.0),
    "energy_generator": gan_losses.energy_generator_loss,
}


@pytest.mark.parametrize("name", PER_EXAMPLE_LOSSES)
def test_losses_and_gradients_are_finite_and_per_example_at_extreme_logits(name):
    value, (gradient,) = _value_and_gradient(PER_EXAMPLE_LOSSES[name], EXTREME_LOGITS)
    assert value.shape == EXTREME_LOGITS.shape
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(gradient))


def test_softplus_losses_are_exact_at_extreme_logits():
    # −log σ(−1e4) = 1e4 exactly in float32; log σ(1e4) underflows to 0, not NaN.
    np.testing.assert_allclose(
        gan_losses.non_saturating_generator_loss(EXTREME_LOGITS), [1e4, 100.0, 0.0, 0.0], atol=1e-30
    )
    np.testing.assert_allclose(
        gan_losses.minimax_generator_loss(EXTREME_LOGITS), [0.0, 0.0, -100.0, -1e4], atol=1e-30
    )


def test_minimax_generator_loss_saturates_where_non_saturating_does_not():
    _, (minimax_gradient,) = _value_and_gradient(gan_losses.minimax_generator_loss, [-10.0])
    _, (non_saturating_gradient,) = _value_and_gradient(
        gan_losses.non_saturating_generator_loss, [-10.0]
    )
    assert abs(minimax_gradient[0]) < 1e-3
    np.testing.assert_allclose(non_saturating_gradient, [-1.0], atol=1e-4)


def test_discriminator_loss_is_minimised_at_density_ratio():
    # p_data(x) E[−log D(x)] + p_g(x) E[−log(1 − D(x))] at one point x, for several densities;
    # the other argument is pinned at ∓1e4, where softplus is exactly 0 in float32.
    p_data = tf.constant([0.1, 0.5, 0.3, 0.9, 0.02])
    p_g = tf.constant([0.4, 0.5, 0.05, 0.1, 0.6])
    logit = tf.Variable(tf.zeros_like(p_data))
    pinned = tf.fill(tf.shape(p_data), 1e4)

    @tf.function
    def minimise():
        for _ in tf.range(2000):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(
                    p_data * gan_losses.discriminator_loss(logit, -pinned)
                    + p_g * gan_losses.discriminator_loss(pinned, logit)
                )
            logit.assign_sub(5.0 * tape.gradient(loss, logit))

    minimise()
    np.testing.assert_allclose(tf.sigmoid(logit), p_data / (p_data + p_g), atol=1e-4)


def _linear_critic(weights):
    return lambda images: tf.reduce_sum(weights * images, axis=[1, 2, 3])


def _images(seed, batch=5):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, 2, 3, 2)), tf.float32)


EPSILONS = tf.constant([0.0, 0.25, 0.5, 0.9, 1.0])


def test_gradient_penalty_of_linear_critic_is_squared_norm_gap_for_every_epsilon():
    weights = _images(0, batch=1)[0]
    penalty = gan_losses.gradient_penalty(_linear_critic(weights), _images(1), _images(2), EPSILONS)
    expected = (np.linalg.norm(weights.numpy()) - 1.0) ** 2
    np.testing.assert_allclose(penalty, np.full(5, expected), rtol=1e-5)


def test_gradient_penalty_of_quadratic_critic_is_closed_form_at_interpolate():
    # f(x) = ½ Σ a x² has ∇f(x̂) = a ⊙ x̂, with x̂ = ε x + (1 − ε) x̃.
    scale = tf.abs(_images(0, batch=1)[0])
    real, fake = _images(1), _images(2)
    penalty = gan_losses.gradient_penalty(
        lambda images: 0.5 * tf.reduce_sum(scale * images**2, axis=[1, 2, 3]), real, fake, EPSILONS
    )
    eps = EPSILONS.numpy()[:, None, None, None]
    interpolates = eps * real.numpy() + (1.0 - eps) * fake.numpy()
    norms = np.linalg.norm((scale.numpy() * interpolates).reshape(5, -1), axis=1)
    np.testing.assert_allclose(penalty, (norms - 1.0) ** 2, rtol=1e-5)


def test_gradient_penalty_is_differentiable_with_respect_to_critic_weights():
    weights = tf.Variable(_images(0, batch=1)[0])
    with tf.GradientTape() as tape:
        penalty = tf.reduce_sum(
            gan_losses.gradient_penalty(_linear_critic(weights), _images(1), _images(2), EPSILONS)
        )
    gradient = tape.gradient(penalty, weights).numpy()
    # d/dw Σ_b (‖w‖ − 1)² = 5 · 2 (‖w‖ − 1) w / ‖w‖.
    w = weights.numpy()
    norm = np.linalg.norm(w)
    np.testing.assert_allclose(gradient, 5 * 2 * (norm - 1.0) * w / norm, rtol=1e-4)
    assert np.all(np.isfinite(gradient)) and np.any(gradient != 0)


def test_gradient_penalty_of_zero_gradient_critic_is_one_with_finite_gradient():
    weights = tf.Variable(tf.zeros([2, 3, 2]))
    with tf.GradientTape() as tape:
        penalty = gan_losses.gradient_penalty(
            _linear_critic(weights), _images(1), _images(2), EPSILONS
        )
    np.testing.assert_array_equal(penalty, np.ones(5))
    assert np.all(np.isfinite(tape.gradient(penalty, weights)))


def test_gradient_penalty_of_input_independent_critic_is_one():
    penalty = gan_losses.gradient_penalty(
        lambda images: tf.zeros(tf.shape(images)[:1]), _images(1), _images(2), EPSILONS
    )
    np.testing.assert_array_equal(penalty, np.ones(5))


def test_energy_discriminator_hinge_is_active_only_below_margin():
    real = np.array([0.3, 0.3, 0.3, 0.3, 0.3], np.float32)
    fake = np.array([0.0, 0.5, 1.9, 2.0, 7.0], np.float32)
    value, (_, fake_gradient) = _value_and_gradient(
        lambda r, f: gan_losses.energy_discriminator_loss(r, f, margin=2.0), real, fake
    )
    np.testing.assert_allclose(value, real + np.maximum(2.0 - fake, 0.0), rtol=1e-6)
    np.testing.assert_allclose(fake_gradient, [-1.0, -1.0, -1.0, 0.0, 0.0])
    np.testing.assert_allclose(gan_losses.energy_generator_loss(fake), fake)


def _pulling_away_reference(rows):
    rows = rows.reshape(len(rows), -1).astype(np.float64)
    total = 0.0
    for i, s_i in enumerate(rows):
        for j, s_j in enumerate(rows):
            if i != j:
                total += (s_i @ s_j / (np.linalg.norm(s_i) * np.linalg.norm(s_j))) ** 2
    return total / (len(rows) * (len(rows) - 1))


def test_pulling_away_term_matches_definition():
    rows = np.random.default_rng(0).normal(size=(6, 2, 4)).astype(np.float32)
    np.testing.assert_allclose(
        gan_losses.pulling_away_term(rows), _pulling_away_reference(rows), rtol=1e-5
    )


def test_pulling_away_term_is_zero_for_orthogonal_rows_and_one_for_parallel_rows():
    assert gan_losses.pulling_away_term(np.eye(4, 6, dtype=np.float32)).numpy() == 0.0
    parallel = np.array([[1.0], [-3.0], [0.01], [250.0]], np.float32) * np.arange(1.0, 6.0)
    np.testing.assert_allclose(gan_losses.pulling_away_term(parallel), 1.0, rtol=1e-6)


def test_pulling_away_term_is_invariant_to_row_scale():
    rows = np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32)
    scales = np.array([[1e-3], [2.0], [-5.0], [1e3], [0.5]], np.float32)
    np.testing.assert_allclose(
        gan_losses.pulling_away_term(rows * scales), gan_losses.pulling_away_term(rows), rtol=1e-5
    )


def test_pulling_away_term_treats_zero_row_as_orthogonal_with_finite_gradient():
    rows = tf.constant([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]])
    value, (gradient,) = _value_and_gradient(gan_losses.pulling_away_term, rows)
    np.testing.assert_allclose(value, 2.0 / 6.0, rtol=1e-6)  # only (0, 1) and (1, 0) count
    assert np.all(np.isfinite(gradient))


def test_pulling_away_term_of_single_example_is_zero():
    value, (gradient,) = _value_and_gradient(gan_losses.pulling_away_term, [[3.0, -1.0]])
    assert value == 0.0 and np.all(np.isfinite(gradient))


def test_mutual_information_bound_is_tight_for_exact_posterior_and_zero_for_uniform_q():
    # c ~ Uniform{1..K}, H(c) = log K; x reveals c, so I(c; x) = log K.
    num_codes = 10
    entropy = np.log(num_codes)
    exact = gan_losses.mutual_information_bound(np.zeros(4), entropy)  # Q(c | x) = 1
    uniform = gan_losses.mutual_information_bound(np.full(4, -np.log(num_codes)), entropy)
    np.testing.assert_allclose(exact, np.full(4, np.log(num_codes)))
    np.testing.assert_allclose(uniform, np.zeros(4), atol=1e-12)


EXPECTED_PAIRS = {
    "minimax": (gan_losses.discriminator_loss, gan_losses.minimax_generator_loss),
    "non_saturating": (gan_losses.discriminator_loss, gan_losses.non_saturating_generator_loss),
    "wasserstein": (gan_losses.wasserstein_critic_loss, gan_losses.wasserstein_generator_loss),
}


@pytest.mark.parametrize("name", EXPECTED_PAIRS)
def test_loss_pair_maps_name_to_its_functions(name):
    pair = loss_pair(name)
    assert isinstance(pair, LossPair)
    assert (pair.discriminator, pair.generator) == EXPECTED_PAIRS[name]


def test_energy_loss_pair_uses_margin():
    pair = loss_pair("energy", margin=3.0)
    assert pair.generator is gan_losses.energy_generator_loss
    np.testing.assert_allclose(pair.discriminator(np.float32([0.5]), np.float32([1.0])), [2.5])


def test_every_name_in_losses_builds_a_pair():
    assert set(LOSSES) == {"minimax", "non_saturating", "wasserstein", "energy"}
    for name in LOSSES:
        assert isinstance(loss_pair(name), LossPair)


def test_unknown_loss_name_error_lists_valid_names():
    with pytest.raises(ValueError, match="hinge") as error:
        loss_pair("hinge")
    assert all(name in str(error.value) for name in LOSSES)
