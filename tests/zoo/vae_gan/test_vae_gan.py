"""zoo.vae_gan: Algorithm 1's three losses, their signs, and which player each one moves."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.vae_gan import model as vae_gan

SEED = tf.constant([3, 4])


def _model(**overrides):
    keras.utils.set_random_seed(0)
    return vae_gan.build(zoo.get("zoo.vae_gan").make_tiny_config(**overrides))


def _images(count=16):
    return tf.constant(np.random.default_rng(0).random((count, 8, 8, 1)).astype(np.float32))


def _mean_terms(model, images):
    return {name: float(tf.reduce_mean(value)) for name, value in model._terms(images, SEED, training=True).items()}


def _descend(model, player, steps=5, learning_rate=0.05):
    images = _images()
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model._terms(images, SEED, training=True)[f"{player}_loss"])
        variables = model.players[player]
        for variable, gradient in zip(variables, tape.gradient(loss, variables)):
            variable.assign_sub(learning_rate * gradient)


def test_the_losses_on_a_toy_discriminator_are_those_of_algorithm_1():
    """A toy Dis: Dis_l(x) = the pixels, ℓ(x) = 3 · mean pixel. Each loss against its formula."""
    model = _model(similarity_weight=0.5)
    seen = []

    def toy(images, training=False):
        seen.append(images)
        return tf.reshape(images, [tf.shape(images)[0], -1]), 3.0 * tf.reduce_mean(images, axis=[1, 2, 3])

    model.discriminate = toy
    images = _images(4)
    terms = model._terms(images, SEED, training=False)
    real, reconstruction, prior_sample = [image.numpy() for image in seen]
    np.testing.assert_allclose(real, images.numpy() * 2 - 1, rtol=1e-6)  # Dis sees [−1, 1] pixels
    logit = {name: 3.0 * value.mean(axis=(1, 2, 3)) for name, value in
             (("real", real), ("reconstruction", reconstruction), ("prior", prior_sample))}
    log_sigmoid = lambda value: -np.logaddexp(0.0, -value)  # noqa: E731
    feature_error = 0.5 * ((real - reconstruction) ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(terms["feature_error"], feature_error, rtol=1e-5)
    np.testing.assert_allclose(terms["encoder_loss"], terms["kl"] + feature_error, rtol=1e-5)
    np.testing.assert_allclose(  # −L_GAN: log Dis(x) + log(1 − Dis(x̃)) + log(1 − Dis(x_p)), negated
        terms["discriminator_loss"],
        -(log_sigmoid(logit["real"]) + log_sigmoid(-logit["reconstruction"]) + log_sigmoid(-logit["prior"])),
        rtol=1e-5)
    np.testing.assert_allclose(  # γ L_llike and the non-saturating side of the GAN term on both fakes
        terms["decoder_loss"],
        0.5 * feature_error - log_sigmoid(logit["reconstruction"]) - log_sigmoid(logit["prior"]), rtol=1e-5)


def test_a_decoder_step_makes_the_discriminator_believe_its_fakes_more():
    """The trap of ports of Alg. 1: the decoder must raise Dis(x̃) and Dis(x_p), never lower them."""
    model = _model(similarity_weight=0.0)
    before = _mean_terms(model, _images())
    _descend(model, "decoder")
    after = _mean_terms(model, _images())
    assert after["d_reconstruction"] > before["d_reconstruction"]
    assert after["d_prior_sample"] > before["d_prior_sample"]


@pytest.mark.parametrize("generator_loss", ["non_saturating", "minimax"])
def test_a_discriminator_step_tells_real_from_both_kinds_of_fake(generator_loss):
    model = _model(generator_loss=generator_loss)
    before = _mean_terms(model, _images())
    _descend(model, "discriminator")
    after = _mean_terms(model, _images())
    assert after["d_real"] > before["d_real"]
    assert after["d_reconstruction"] < before["d_reconstruction"]
    assert after["d_prior_sample"] < before["d_prior_sample"]


def test_an_encoder_step_lowers_the_prior_and_feature_terms():
    model = _model()
    before = _mean_terms(model, _images())
    _descend(model, "encoder", learning_rate=0.01)
    assert _mean_terms(model, _images())["encoder_loss"] < before["encoder_loss"]


def test_each_player_owns_its_weights_and_one_train_step_moves_all_three():
    model = _model()
    model.compile_for_training(1)
    owned = [id(variable) for variables in model.players.values() for variable in variables]
    assert len(owned) == len(set(owned)) and set(owned) == {id(v) for v in model.trainable_variables}
    before = {player: [v.numpy() for v in variables] for player, variables in model.players.items()}
    model.train_step({"image": _images()})
    for player, variables in model.players.items():
        assert any(np.abs(v.numpy() - old).max() > 0 for v, old in zip(variables, before[player])), player
    assert {optimizer.name for optimizer in model.optimizers.values()} == {
        "encoder_optimizer", "decoder_optimizer", "discriminator_optimizer"}


def test_a_checkpoint_restores_all_three_players_and_their_optimizers(tmp_path):
    """Resume needs every player's RMSProp state (its iterations and mean squares), not only the weights."""
    from export import runs

    model = _model()
    model.compile_for_training(1)
    model.train_step({"image": _images()})
    model.train_step({"image": _images()})
    runs.save_checkpoint(model, tmp_path, 1)
    fresh = _model()
    fresh.compile_for_training(1)
    assert runs.restore_checkpoint(fresh, tmp_path) == 1
    for player, optimizer in model.optimizers.items():
        restored = fresh.optimizers[player]
        assert int(restored.iterations) == int(optimizer.iterations) == 2, player
        for saved, loaded in zip(optimizer.variables, restored.variables):
            np.testing.assert_array_equal(saved.numpy(), loaded.numpy(), err_msg=f"{player}: {saved.path}")
    for saved, loaded in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy(), err_msg=saved.path)
