"""zoo.avb: the adversary's estimate of the KL, adaptive contrast, the encoder's moments, the update rule."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import zoo
from zoo.avb import model as avb
from zoo.common import distributions

tfd = tfp.distributions


def _model(**overrides):
    return avb.build(zoo.get("zoo.avb").make_tiny_config(**overrides))


def _images(count, seed=0):
    return tf.constant((np.random.default_rng(seed).random((count, 6, 6, 1)) < 0.5).astype(np.float32))


def _gaussian_encoder(model, mean, scale):
    """Replaces the implicit encoder by q(z | x) = N(mean, diag scale²), whatever x: its KL is known."""
    def posterior(images, noise, moment_noise=None):
        latents = mean + scale * noise[0, :, :len(mean)]  # the first noise network's standard normal draws
        if moment_noise is None:
            return latents, None, None
        return latents, tf.broadcast_to(mean, tf.shape(latents)), tf.broadcast_to(scale**2, tf.shape(latents))

    model.posterior = posterior


MEAN, SCALE = tf.constant([1.0, -0.5, 0.3]), tf.constant([0.5, 1.5, 0.8])


def _closed_form_kl():
    q = tfd.Independent(tfd.Normal(MEAN, SCALE), reinterpreted_batch_ndims=1)
    return float(distributions.kl_between_gaussians(q, distributions.standard_normal(3)))


def test_a_trained_adversary_recovers_the_analytic_kl_of_a_gaussian_encoder():
    """T* = log q(z | x) − log p(z) (Prop. 1), so E_q[T] → KL(q ‖ p) as the adversary trains on Eq. 3."""
    keras.utils.set_random_seed(0)
    model = _model(adversary_units=64, adversary_layers=2, batch_size=256)
    _gaussian_encoder(model, MEAN, SCALE)
    optimizer = keras.optimizers.Adam(3e-3)
    images = tf.zeros([256, 6, 6, 1])  # one x: q does not depend on it here

    @tf.function
    def adversary_step(seed):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model._terms(images, seed)["adversary_loss"])
        variables = model._adversary_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for step in range(3000):
        adversary_step(tf.constant([step, 1]))
    estimates = [float(tf.reduce_mean(model._terms(images, tf.constant([10**6 + i, 2]))["kl_estimate"]))
                 for i in range(20)]
    assert np.mean(estimates) == pytest.approx(_closed_form_kl(), abs=0.15)


def test_adaptive_contrast_adds_the_closed_form_kl_of_r_and_shows_the_adversary_standardised_latents():
    """With contrast, kl_estimate = T(x, z̃) + KL(r_α ‖ p); for a Gaussian q, r_α = q and z̃ ~ N(0, I)."""
    model = _model(adaptive_contrast=True)
    _gaussian_encoder(model, MEAN, SCALE)
    seen = []
    score = model.adversary_score
    model.adversary_score = lambda images, latents: seen.append(latents) or score(images, latents)
    terms = model._terms(tf.zeros([4000, 6, 6, 1]), tf.constant([3, 4]))
    np.testing.assert_allclose(terms["contrast_kl"].numpy(), _closed_form_kl(), rtol=1e-3)
    np.testing.assert_allclose(terms["kl_estimate"], terms["t_posterior"] + terms["contrast_kl"], rtol=1e-6)
    standardised = seen[0].numpy()
    np.testing.assert_allclose(standardised.mean(axis=0), 0.0, atol=0.06)
    np.testing.assert_allclose(standardised.std(axis=0), 1.0, atol=0.05)


def test_the_encoder_moments_are_those_of_its_samples():
    """E[z | x] = a_0 + Σ a_i E[v_i] and Var[z | x] = Σ a_i² Var[v_i], against many draws for one image."""
    model = _model(noise_basis=3, noise_hidden_layers=2)
    image = _images(1)
    draws = 20000
    images = tf.tile(image, [draws, 1, 1, 1])
    noise = tf.random.stateless_normal([3, draws, model.config.noise_units], seed=[5, 6])
    moment_noise = tf.random.stateless_normal([3, draws, model.config.noise_units], seed=[7, 8])
    latents, mean, variance = model.posterior(images, noise, moment_noise)
    latents = latents.numpy()
    np.testing.assert_allclose(mean[0], latents.mean(axis=0), atol=4 * latents.std(axis=0).max() / np.sqrt(draws))
    np.testing.assert_allclose(variance[0], latents.var(axis=0), rtol=0.05)


def test_the_adversary_step_separates_the_pairs_and_touches_only_the_adversary():
    model = _model()
    model.compile_for_training(1)
    images = _images(64)
    seed = tf.constant([1, 1])
    before = model._terms(images, seed)
    autoencoder = [v.numpy() for v in model._autoencoder_variables]
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model._terms(images, seed)["adversary_loss"])
        model._descend(model.adversary_optimizer, tape, loss, model._adversary_variables)
    after = model._terms(images, seed)
    def gap(terms):  # how much higher T scores posterior pairs than prior pairs
        return float(tf.reduce_mean(terms["t_posterior"]) - tf.reduce_mean(terms["t_prior"]))

    assert float(tf.reduce_mean(after["adversary_loss"])) < float(tf.reduce_mean(before["adversary_loss"]))
    assert gap(after) > gap(before)
    for value, variable in zip(autoencoder, model._autoencoder_variables):
        np.testing.assert_array_equal(value, variable.numpy())


def test_the_vae_step_descends_t_minus_the_log_likelihood_with_the_encoder_and_decoder_only():
    """Eq. 7: the encoder and decoder descend T(x, z) − log p(x | z); the players' weights are disjoint and
    cover the model, so neither update moves the other's."""
    model = _model()
    images = _images(32)
    terms = model._terms(images, tf.constant([2, 2]))
    np.testing.assert_allclose(terms["loss"], terms["t_posterior"] - terms["reconstruction"], rtol=1e-6)
    np.testing.assert_allclose(terms["elbo_estimate"], -terms["loss"], rtol=1e-6)
    adversary = {id(v) for v in model._adversary_variables}
    autoencoder = {id(v) for v in model._autoencoder_variables}
    assert not adversary & autoencoder
    assert adversary | autoencoder == {id(v) for v in model.trainable_variables}
    decoder = {id(v) for v in model.decoder.trainable_variables}
    encoder = {id(v) for v in model.noise_networks.trainable_variables + model.encoder_offset.trainable_variables}
    assert decoder | encoder <= autoencoder


def test_annealed_importance_sampling_reaches_the_decoder_density():
    """The "ais" capability: log p(x) = log ∫ p(z) p(x | z) dz; AIS matches a brute-force prior average."""
    from zoo.common import ais

    model = _model(latent_units=2)
    images = _images(3)
    estimate = ais.Annealer(lambda given: model).log_marginal((), images, chains=16, num_steps=200,
                                                              seed=tf.constant([1, 2]))
    latents = model.prior_latents([200000, 3], tf.constant([3, 4]))
    brute_force = tf.reduce_logsumexp(model.log_decoder(images, latents), axis=0) - np.log(200000.0)
    np.testing.assert_allclose(estimate.log_marginal, brute_force, atol=0.1)


def test_encode_and_reconstruct_are_per_seed_draws_of_the_implicit_encoder():
    model = _model()
    images = _images(2)
    signatures = model.serving_signatures()
    encode = signatures["encode"][0]
    first = encode(images, tf.constant([0, 1], tf.int64))["latent"].numpy()
    again = encode(images[::-1], tf.constant([1, 0], tf.int64))["latent"].numpy()
    other = encode(images, tf.constant([5, 6], tf.int64))["latent"].numpy()
    np.testing.assert_allclose(first, again[::-1], atol=1e-6)
    assert np.abs(first - other).max() > 1e-4  # the noise enters the encoder
    reconstructions = signatures["reconstruct"][0](images, tf.constant([0, 1], tf.int64))["images"].numpy()
    np.testing.assert_allclose(reconstructions, model._image_mean(first).numpy(), atol=1e-6)


def test_the_importance_sampled_bound_with_r_alpha_is_below_log_p_x_and_reaches_it_with_k():
    """q has no density, but r_α (q's mean and variance) is a proposal like any other: L_k ≤ log p(x), → log p(x)."""
    model = _model(latent_units=2, contrast_samples=256)
    images = _images(3, seed=4)
    prior = model.prior_latents([200_000, 3], tf.constant([3, 4]))
    log_p_x = (tf.reduce_logsumexp(model.log_decoder(images, prior), axis=0) - np.log(200_000.0)).numpy()
    bounds = {k: np.mean([model.importance_sampled_bound(images, k, tf.constant([k, seed])).numpy()
                          for seed in range(20)], axis=0) for k in (1, 1000)}
    assert np.all(bounds[1] < bounds[1000])
    assert np.all(bounds[1000] <= log_p_x + 0.02)
    # With q's moments those of the prior, the proposal is good enough for L_1000 to reach log p(x).
    _gaussian_encoder(model, tf.zeros([2]), tf.ones([2]))
    close = np.mean([model.importance_sampled_bound(images, 1000, tf.constant([7, seed])).numpy()
                     for seed in range(20)], axis=0)
    np.testing.assert_allclose(close, log_p_x, atol=0.1)
