"""zoo.cvae: the quadrant masks, the conditional bound, what each network sees, and the samplers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.cvae import model as cvae

SEEDS = tf.range(6, dtype=tf.int64)


def _model(name="zoo.cvae", **overrides):
    return cvae.build(zoo.get(name).make_tiny_config(**overrides))


def _images(count, shape=(6, 6, 1), seed=0):
    return tf.constant((np.random.default_rng(seed).random((count, *shape)) < 0.5).astype(np.float32))


def _known(count, batch):
    return tf.tile(tf.constant([cvae.PAPER_KNOWN_QUADRANTS[count]], tf.float32), [batch, 1])


def test_quadrant_masks_cover_the_named_quadrants():
    masks = cvae.quadrant_mask(tf.eye(4), (6, 6, 2)).numpy()
    expected = np.zeros((4, 6, 6, 2))
    expected[0, :3, :3], expected[1, :3, 3:], expected[2, 3:, :3], expected[3, 3:, 3:] = 1, 1, 1, 1
    np.testing.assert_array_equal(masks, expected)


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_the_paper_setting_with_c_quadrants_knows_c_quarters_and_never_the_bottom_right(count):
    mask = cvae.quadrant_mask(_known(count, 1), (28, 28, 1)).numpy()[0, ..., 0]
    assert mask.sum() == count * 14 * 14
    assert mask[14:, 14:].sum() == 0
    if count:
        assert mask[14:, :14].all()  # the bottom left is given first (Sohn et al. Fig. 2)


def test_one_sample_bound_is_the_log_weight_and_averages_to_the_closed_form_elbo():
    """L_1 = log w for one z; E_q[log w] = E_q[log p(y | x, z)] − KL(q ‖ p(z | x)), the KL in closed form."""
    model = _model()
    images = _images(4)
    condition = {"image": images, "known_quadrants": _known(1, 4)}
    noise = tf.random.stateless_normal([20000, 4, model.config.latent_units], seed=[1, 2])
    terms = model._terms(images, condition, noise)
    one = model._terms(images, condition, noise[:1])
    np.testing.assert_allclose(-one["nll"], one["log_weights"][0], rtol=1e-6)
    log_weights = terms["log_weights"].numpy()
    standard_error = log_weights.std(axis=0) / np.sqrt(len(log_weights))
    assert np.all(np.abs(log_weights.mean(axis=0) - terms["elbo"].numpy()) < 4 * standard_error + 1e-4)


def test_importance_weighted_bound_is_above_the_elbo_of_the_same_samples_and_tightens_with_k():
    model = _model()
    images = _images(8, seed=3)
    condition = {"image": images, "known_quadrants": _known(2, 8)}
    noise = tf.random.stateless_normal([1000, 8, model.config.latent_units], seed=[3, 4])
    log_weights = model._terms(images, condition, noise)["log_weights"].numpy()  # [1000, 8]
    np.testing.assert_allclose(-model._terms(images, condition, noise[:10])["nll"],
                               np.log(np.mean(np.exp(log_weights[:10].astype(np.float64)), axis=0)), rtol=1e-5)
    # E[L_k] estimated from the same 1000 samples in 1000 / k groups of k: one group of 1 is too noisy to order.
    bounds = [np.mean(np.log(np.mean(np.exp(log_weights.reshape(k, -1, 8).astype(np.float64)), axis=0)))
              for k in (1, 10, 1000)]
    np.testing.assert_allclose(bounds[0], log_weights.mean(), rtol=1e-6)  # L_1 is the ELBO
    assert bounds[0] < bounds[1] < bounds[2]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_neither_the_prediction_nor_the_baseline_sees_the_pixels_they_predict(count):
    """The condition x holds the known quadrants only: changing the unknown pixels changes no completion
    and no baseline guess, and known pixels are copied to the output unchanged."""
    model = _model()
    images, other = _images(5, seed=1), _images(5, seed=2)
    known = _known(count, 5)
    mask = cvae.quadrant_mask(known, model.config.image_shape)
    changed_unknown = images * mask + other * (1.0 - mask)
    completions = model.complete(images, known, SEEDS[:5]).numpy()
    np.testing.assert_array_equal(completions, model.complete(changed_unknown, known, SEEDS[:5]).numpy())
    np.testing.assert_array_equal(completions * mask, (images * mask).numpy())
    features = model._condition({"image": images, "known_quadrants": known})[0]
    changed = model._condition({"image": changed_unknown, "known_quadrants": known})[0]
    np.testing.assert_array_equal(features.numpy(), changed.numpy())


def test_the_likelihood_counts_only_the_unknown_pixels():
    model = _model()
    images = _images(3)
    mask = cvae.quadrant_mask(_known(3, 3), model.config.image_shape)
    likelihood = model.generation_network(tf.zeros([3, model._condition_size + model.config.latent_units]))
    per_pixel = likelihood.distribution.log_prob(images)
    np.testing.assert_allclose(cvae.masked_log_prob(likelihood, images, 1.0 - mask),
                               tf.reduce_sum(per_pixel * (1.0 - mask), [1, 2, 3]), rtol=1e-6)
    assert np.all(cvae.masked_log_prob(likelihood, images, 1.0 - mask) > likelihood.log_prob(images))


def test_the_baseline_learns_from_its_own_loss_only_and_the_cvae_not_through_its_guess():
    model = _model()
    images = _images(4)
    condition = {"image": images, "known_quadrants": _known(1, 4)}
    noise = tf.random.stateless_normal([1, 4, model.config.latent_units], seed=[5, 6])
    baseline = model.baseline.trainable_variables
    others = [v for v in model.trainable_variables if all(v is not b for b in baseline)]
    with tf.GradientTape(persistent=True) as tape:
        terms = model._terms(images, condition, noise)
        cvae_loss = -tf.reduce_sum(terms["elbo"])
        baseline_loss = tf.reduce_sum(terms["baseline_nll"])
    assert all(gradient is None for gradient in tape.gradient(cvae_loss, baseline))
    assert all(gradient is None for gradient in tape.gradient(baseline_loss, others))
    assert all(gradient is not None for gradient in tape.gradient(baseline_loss, baseline))


@pytest.mark.parametrize("given", [(2,), (0, 3)])
def test_training_draws_known_quadrants_of_the_configured_counts(given):
    model = _model(given_quadrants=given)
    condition = model._training_condition({"image": _images(64)}, tf.constant([7, 8]))
    counts = tf.reduce_sum(condition["known_quadrants"], axis=1).numpy()
    assert set(counts) == set(given)
    for count in given:
        rows = condition["known_quadrants"].numpy()[counts == count]
        assert np.all(rows == cvae.PAPER_KNOWN_QUADRANTS[count])


def test_test_metrics_report_each_paper_setting_and_their_mean():
    model = _model()
    model.use_importance_samples(3)
    logs = model.test_step({"image": _images(8)})
    per_setting = [float(logs[f"nll_given_{count}"]) for count in (1, 2, 3)]
    assert float(logs["nll"]) == pytest.approx(np.mean(per_setting), rel=1e-5)
    assert {f"baseline_nll_given_{count}" for count in (1, 2, 3)} <= set(logs)


def test_label_samples_follow_the_label_and_the_seed():
    model = _model("zoo.cvae_label")
    labels = tf.constant([3, 3, 7], tf.int64)
    samples = model.sample_conditional(tf.constant([0, 1, 0], tf.int64), labels).numpy()
    assert samples.shape == (3, 6, 6, 1) and np.all((samples >= 0) & (samples <= 1))
    assert np.abs(samples[0] - samples[1]).max() > 1e-4  # same class, other seed
    assert np.abs(samples[0] - samples[2]).max() > 1e-4  # same seed, other class
    drawn = model.sample(SEEDS).numpy()
    seeded_labels = cvae.per_example_uniform(SEEDS, [], cvae.LABEL_STREAM, 0, 10, tf.int64)
    np.testing.assert_array_equal(drawn, model.sample_conditional(SEEDS, seeded_labels).numpy())


def test_complete_signature_refuses_known_quadrants_other_than_zero_or_one():
    model = _model()
    complete, _ = model.serving_signatures()["complete"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="known_quadrants must hold 0 or 1"):
        complete(_images(1), tf.constant([[0, 2, 1, 0]], tf.int64), SEEDS[:1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be finite"):
        complete(tf.fill([1, 6, 6, 1], np.nan), tf.constant([[1, 0, 1, 0]], tf.int64), SEEDS[:1])


def test_config_refuses_counts_outside_zero_to_three():
    with pytest.raises(zoo.ConfigError, match="given_quadrants"):
        zoo.get("zoo.cvae").make_tiny_config(given_quadrants=(1, 4))


@pytest.mark.parametrize("name", ["zoo.cvae", "zoo.cvae_label"])
def test_annealed_importance_sampling_of_log_p_y_given_x_matches_a_brute_force_prior_average(name):
    """"conditional_ais": log p(y | x) = log ∫ p(z | x) p(y | x, z) dz under each condition; with a 2-d latent,
    an average over 200 000 draws of p(z | x) is exact to a few hundredths of a nat. The weights are seeded:
    over unseeded ones AIS with 16 chains is usually within 0.04 nats, but once in many runs beyond 0.1."""
    from zoo.common import ais

    keras.utils.set_random_seed(0)
    model = _model(name, latent_units=2)
    images = _images(3)
    batch = {"image": images, "label": tf.constant([1, 4, 7], tf.int64)}
    for position, condition in enumerate(model.ais_conditions()):
        annealer = ais.Annealer(lambda given, condition=condition: model.conditioned_density(given, condition))
        estimate = annealer.log_marginal(batch, images, chains=16, num_steps=200, seed=tf.constant([1, position]))
        density = model.conditioned_density(batch, condition)
        latents = density.prior_latents([200000, 3], tf.constant([3, position]))
        brute_force = tf.reduce_logsumexp(density.log_decoder(images, latents), axis=0) - np.log(200000.0)
        np.testing.assert_allclose(estimate.log_marginal, brute_force, atol=0.1, err_msg=condition)


def test_the_conditioned_density_scores_only_the_hidden_pixels_and_simulates_only_them():
    model = _model()
    images = _images(4)
    density = model.conditioned_density({"image": images}, "given_2")  # the left half known
    latents = density.prior_latents([5, 4], tf.constant([1, 2]))
    flipped_known = tf.concat([1.0 - images[:, :, :3], images[:, :, 3:]], axis=2)
    np.testing.assert_allclose(density.log_decoder(flipped_known, latents), density.log_decoder(images, latents),
                               rtol=1e-6)
    simulated = density.decoder_sample(latents[0], tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(simulated[:, :, :3], images.numpy()[:, :, :3])
    assert set(np.unique(simulated)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="unknown condition 'given_4'"):
        model.conditioned_density({"image": images}, "given_4")
