"""zoo.ali: the pairs D judges, each player's update, the encoder's paths and one CLI fit → evaluate."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from export import runs
from training import evaluate, fit
from zoo import config as config_lib
from zoo.ali import ALIConfig
from zoo.ali.model import ENCODER_STREAM, PRIOR_STREAM
from zoo.common import steps

ENCODERS = {"deterministic": {}, "uniform_prior": {"prior": "uniform"}, "gaussian": {"stochastic_encoder": True}}
SEED = tf.constant([1, 2], tf.int64)


def tiny_model(**overrides):
    """A tiny model whose initial weights do not depend on what ran before."""
    keras.utils.set_random_seed(0)
    spec = zoo.get("zoo.ali")
    model = spec.build(spec.make_tiny_config(**overrides))
    model.compile_for_training(steps_per_epoch=2)
    return model


def batch_for(model, size: int = 16, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": tf.constant(rng.uniform(size=(size, *model.config.image_shape)), tf.float32)}


def fold(stream: int):
    return tf.random.experimental.stateless_fold_in(SEED, stream)


def softplus(values):
    return np.logaddexp(0.0, values)


@pytest.mark.parametrize("overrides", ENCODERS.values(), ids=ENCODERS.keys())
def test_discriminator_judges_real_pairs_x_and_its_code_and_fake_pairs_g_of_z_and_z(overrides, monkeypatch):
    model = tiny_model(**overrides)
    batch = batch_for(model)
    judged, discriminate = [], model.discriminate

    def recording(images, latents, training=False):
        judged.append((images.numpy(), latents.numpy()))
        return discriminate(images, latents, training)

    monkeypatch.setattr(model, "discriminate", recording)
    terms = {name: value.numpy() for name, value in model._objective(batch, SEED, training=False).items()}

    x = batch["image"] * 2.0 - 1.0
    z = model._draw_prior(16, fold(PRIOR_STREAM))  # z ~ p(z), from the step's seed
    z_hat = model.infer(x, fold(ENCODER_STREAM))  # ẑ = G_z(x), with the step's ε for a Gaussian encoder
    assert len(judged) == 2
    (real_images, real_latents), (fake_images, fake_latents) = judged
    np.testing.assert_array_equal(real_images, x)
    np.testing.assert_allclose(real_latents, z_hat, atol=1e-6)
    np.testing.assert_array_equal(fake_latents, z)
    np.testing.assert_allclose(fake_images, model.generate(z), atol=1e-6)
    if model.config.stochastic_encoder:  # ALI: ẑ is a draw from q(z | x), not its mean
        assert np.abs(real_latents - model.encode_features(batch["image"])).min() > 0.0
    else:  # BiGAN: ẑ = E(x)
        np.testing.assert_allclose(real_latents, model.encode_features(batch["image"]), atol=1e-6)
    if model.config.prior == "uniform":  # z and E(x) inside the support of U[−1, 1]^d
        assert np.abs(z).max() <= 1.0 and np.abs(real_latents).max() < 1.0

    real, fake = discriminate(x, z_hat).numpy(), discriminate(model.generate(z), z).numpy()
    d_real, d_fake = 1.0 / (1.0 + np.exp(-real)), 1.0 / (1.0 + np.exp(-fake))
    np.testing.assert_allclose(terms["d_real"], d_real, rtol=1e-5)
    np.testing.assert_allclose(terms["d_fake"], d_fake, rtol=1e-5)
    # −log D(x, ẑ) − log(1 − D(x̃, z)) for D; labels swapped for G_x and G_z (ALI Alg. 1).
    np.testing.assert_allclose(terms["discriminator_loss"], softplus(-real) + softplus(fake), rtol=1e-5)
    np.testing.assert_allclose(terms["generator_loss"], softplus(real) + softplus(-fake), rtol=1e-5)
    reconstructions = (model.generate(z_hat).numpy() + 1.0) / 2.0
    np.testing.assert_allclose(terms["reconstruction_error"],
                               np.mean((reconstructions - batch["image"].numpy()) ** 2, axis=(1, 2, 3)), rtol=1e-5)


def test_players_own_disjoint_variables_that_cover_the_model():
    for overrides in [*ENCODERS.values(), {"dropout": 0.2}]:
        model = tiny_model(**overrides)
        generator = {id(v) for v in model._generator_variables}
        discriminator = {id(v) for v in model._discriminator_variables}
        encoder = {id(v) for layer in [*model.encoder_layers, model.encoder_head] for v in layer.trainable_variables}
        assert encoder and encoder <= generator  # G_z trains with G_x (ALI Alg. 1)
        assert not generator & discriminator
        assert generator | discriminator == {id(v) for v in model.trainable_variables}


def _d_on_the_steps_pairs(model, batch, state):
    """Mean D(x, G_z(x)), D(G_x(z), z) and D's loss over the pairs a train_step draws from the seed generator's
    `state`."""
    model.seed_generator.state.assign(state)
    terms = model._objective(batch, steps.replica_seed(model.seed_generator), training=False)
    model.seed_generator.state.assign(state)
    return [float(np.mean(terms[name])) for name in ("d_real", "d_fake", "discriminator_loss")]


@pytest.mark.parametrize("stepping", ["discriminator", "generator_and_encoder"])
def test_each_players_step_moves_d_on_the_steps_pairs_its_own_way_and_leaves_the_other_players_weights(stepping):
    # Without batch norm: with it, D's logits over a batch are normalised, so a step can trade one pair's
    # probability against another's and the mean probabilities need not move as D's loss says.
    model = tiny_model(learning_rate=1e-3, batch_norm=False)
    batch, state = batch_for(model, size=64), model.seed_generator.state.numpy()
    stepped, held = ((model.discriminator_optimizer, model._discriminator_variables),
                     (model.optimizer, model._generator_variables))
    if stepping != "discriminator":
        stepped, held = held, stepped
    held[0].learning_rate.assign(0.0)
    held_before = [v.numpy() for v in held[1]]
    stepped_before = [v.numpy() for v in stepped[1]]
    d_real, d_fake, d_loss = _d_on_the_steps_pairs(model, batch, state)

    model.train_step(batch)

    after_real, after_fake, after_loss = _d_on_the_steps_pairs(model, batch, state)
    assert int(model.optimizer.iterations) == int(model.discriminator_optimizer.iterations) == 1
    for before, variable in zip(held_before, held[1]):  # the other player's optimizer never touches them
        np.testing.assert_array_equal(before, variable.numpy(), err_msg=variable.path)
    assert all(not np.array_equal(before, v.numpy()) for before, v in zip(stepped_before, stepped[1]))
    # D's loss moves so for any small step (for G's, as D(x, ẑ) depends only on G_z's weights and D(x̃, z) only on
    # G_x's, which also fixes each probability's direction). D's two terms share its weights: that each probability
    # moves its way holds for this fixed toy model and batch (for about 1 initialisation in 8, D's step lowers
    # D(real) slightly while lowering its loss).
    if stepping == "discriminator":  # D ascends V: real pairs up, fake pairs down
        assert after_loss < d_loss and after_real > d_real and after_fake < d_fake
    else:  # G_x and G_z descend it (labels swapped): real pairs down, fake pairs up
        assert after_loss > d_loss and after_real < d_real and after_fake > d_fake


def test_batch_norm_sits_where_the_authors_put_it_learns_its_statistics_in_training_only():
    """net.py: G_x's two hidden layers and the second hidden layer of G_z are batch-normalised (D's, too, there,
    not here). A train step moves the moving statistics; sampling and test steps use them, so a sample is the
    same in any batch."""
    def normalised(layers):
        """Which of the Dense layers of `layers` (0, 1, … in order) batch norm follows."""
        dense = [position for position, layer in enumerate(layers) if isinstance(layer, keras.layers.Dense)]
        return [index for index, position in enumerate(dense)
                if position + 1 < len(layers) and isinstance(layers[position + 1], keras.layers.BatchNormalization)]

    model = tiny_model()
    assert normalised(model.generator_layers) == [0, 1]
    assert normalised(model.encoder_layers) == [1]
    assert normalised(model.image_branch) == normalised(model.latent_branch) == []
    assert normalised(model.joint_layers) == []
    assert tiny_model(batch_norm=False).non_trainable_weights == []

    moving = [weight for weight in model.non_trainable_weights if "moving" in weight.path]
    assert len(moving) == 2 * 3  # mean and variance of each of the three
    before = [weight.numpy() for weight in moving]
    batch = batch_for(model, size=16)
    model.test_step(batch)
    model.sample(tf.range(8, dtype=tf.int64))
    for old, weight in zip(before, moving):
        np.testing.assert_array_equal(old, weight.numpy(), err_msg=weight.path)
    model.train_step(batch)
    assert all(not np.array_equal(old, weight.numpy()) for old, weight in zip(before, moving))
    np.testing.assert_allclose(model.sample(tf.constant([3], tf.int64)),
                               model.sample(tf.constant([7, 3, 5], tf.int64))[1:2], atol=1e-6)


@pytest.mark.parametrize("overrides", ENCODERS.values(), ids=ENCODERS.keys())
def test_encode_gives_one_code_per_image_and_reconstruct_is_g_of_that_code(overrides):
    model = tiny_model(**overrides)
    images = batch_for(model, size=5)["image"]
    served = {name: function for name, (function, _) in model.serving_signatures().items()}
    latent = served["encode"](images)["latent"].numpy()
    reconstructions = served["reconstruct"](images)["images"].numpy()

    assert latent.shape == (5, 4) and reconstructions.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(served["encode"](images)["latent"], latent)  # deterministic, also for ALI
    np.testing.assert_allclose(reconstructions, (model.generate(latent).numpy() + 1.0) / 2.0, atol=1e-6)
    assert 0.0 <= reconstructions.min() and reconstructions.max() <= 1.0
    grids = model.summaries(images)
    np.testing.assert_allclose(grids["reconstructions"][1::2], reconstructions, atol=1e-6)
    np.testing.assert_array_equal(grids["reconstructions"][0::2], images)


def test_samples_are_g_of_a_draw_from_the_prior_of_each_seed():
    for overrides in ENCODERS.values():
        model = tiny_model(**overrides)
        seeds = tf.constant([3, 3, 8], tf.int64)
        samples = model.sample(seeds).numpy()
        np.testing.assert_array_equal(samples[0], samples[1])
        assert np.abs(samples[0] - samples[2]).max() > 1e-4


@pytest.mark.parametrize("overrides, message", [
    ({"prior": "laplace"}, "prior must be 'uniform' or 'normal'"),
    ({"stochastic_encoder": True, "prior": "uniform"}, "set prior=normal with stochastic_encoder=true"),
    ({"latent_dim": 0}, "latent_dim and units must be >= 1"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
])
def test_inconsistent_configs_are_errors_naming_the_fix(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        ALIConfig(**overrides)


def test_the_default_config_is_bigans_mnist_setup_with_alis_prior():
    config = zoo.get("zoo.ali").make_config()
    assert (config.latent_dim, config.prior, config.stochastic_encoder, config.units) == (50, "normal", False, 1024)
    assert (config.batch_size, config.learning_rate, config.adam_beta_1) == (128, 2e-4, 0.5)
    assert zoo.get("zoo.ali").evaluation == ("sample_quality", "feature_1nn", "ais")


# One CLI run: a first epoch under MirroredStrategy over 2 virtual CPUs (a child process), resumed to a second
# epoch with export, then training.evaluate with the 1-NN accuracy (both in this process). The GAN family's CLI
# tests cover the rest of fit.

REPO = pathlib.Path(__file__).resolve().parents[3]
TINY = ["--set", "units=8", "--set", "latent_dim=4", "--max_examples", "200", "--batch_size", "20",
        "--steps_per_epoch", "2", "--validation_steps", "1", "--no_download", "--verbose", "2"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, run_main):
    workdir = tmp_path_factory.mktemp("ali") / "run"
    # Virtual CPUs must be set before TensorFlow starts, so the mirrored epoch runs in a child process.
    first = subprocess.run([sys.executable, "-m", "training.fit", "zoo.ali", "--workdir", str(workdir), *TINY,
                            "--epochs", "1", "--no_export", "--strategy", "mirrored", "--virtual_cpus", "2"],
                           cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)},
                           capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_CACHE_DIR", str(workdir.parent / "cache"))  # a tiny classifier, never in ~/.cache
        resumed = run_main(fit.main, ["zoo.ali", "--workdir", workdir, *TINY, "--epochs", "2", "--resume"])
        evaluated = run_main(evaluate.main, [workdir, "--max_examples", "200", "--num_samples", "200",
                                             "--classifier_max_examples", "2000", "--classifier_epochs", "1",
                                             "--no_download"])
    for result in (resumed, evaluated):
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return workdir, first, resumed, json.loads(evaluated.stdout.strip().splitlines()[-1])


def test_cli_fit_trains_under_mirrored_resumes_both_optimizers_and_exports(cli_run):
    workdir, first, resumed, _ = cli_run
    assert "replicas: 2" in first.stdout and "(resuming after epoch 1)" in resumed.stdout
    spec, config = runs.read_run(workdir)
    model = spec.build(config)
    model.compile_for_training(2)
    assert runs.restore_checkpoint(model, runs.checkpoint_dir(workdir)) == 2
    assert int(model.optimizer.iterations) == int(model.discriminator_optimizer.iterations) == 4
    assert (workdir / "model.keras").is_file() and (workdir / "serving" / "ali" / "1" / "saved_model.pb").is_file()


def test_cli_evaluate_reports_the_losses_sample_quality_and_the_nearest_neighbour_accuracy(cli_run):
    _, _, _, line = cli_run
    assert line["model"] == "zoo.ali" and line["epochs"] == 2
    assert {"discriminator_loss", "generator_loss", "d_real", "d_fake", "reconstruction_error", "fid"} <= set(line)
    assert 0.0 <= line["nearest_neighbour_accuracy"] <= 1.0
    assert 0.0 <= line["nearest_neighbour_accuracy_euclidean"] <= 1.0
    assert line["nearest_neighbour_references"] == 200
