"""zoo.gan: the one train_step of every registry entry, the objectives' wiring, samplers and configs."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import zoo
from export import runs
from zoo import config as config_lib
from zoo.gan import losses as gan_losses
from zoo.gan import GAN, GANConfig
from zoo.gan.latents import LatentInputs

GAN_NAMES = ["zoo.gan", "zoo.dcgan", "zoo.wgan_gp", "zoo.wgan", "zoo.cgan", "zoo.infogan", "zoo.ebgan"]
SEEDS = tf.constant([3, 141, -7, 2**40, 0, 11], tf.int64)


def tiny_model(name: str, **overrides) -> GAN:
    model = zoo.get(name).build(zoo.get(name).make_tiny_config(**overrides))
    model.compile_for_training(steps_per_epoch=2)
    return model


def batch_for(config: GANConfig, size: int | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    size = size or config.batch_size
    batch = {"image": tf.constant(rng.uniform(size=(size, *config.image_shape)), tf.float32)}
    if config.conditional:
        batch["label"] = tf.constant(rng.integers(0, config.num_classes, size), tf.int64)
    return batch


def weights_of(variables):
    return [variable.numpy() for variable in variables]


@pytest.mark.parametrize("name, overrides", [
    *[(name, {}) for name in GAN_NAMES if name != "zoo.wgan"],
    # A clipped critic passes G gradients of ~1e-9: at the paper's RMSProp rate of 5e-5, two steps
    # on a batch-norm scale of 1.0 can round away in float32.
    ("zoo.wgan", {"learning_rate": 1e-2}),
    ("zoo.dcgan", {"minibatch_discrimination": True}),
    ("zoo.dcgan", {"conditional": True}),  # labels as one-hot channels of D's input
])
def test_each_train_step_updates_discriminator_critic_steps_times_and_generator_once(name, overrides):
    model = tiny_model(name, **overrides)
    config = model.config
    generator_before = weights_of(model._generator_variables)
    discriminator_before = weights_of(model._discriminator_variables)

    history = model.fit(tf.data.Dataset.from_tensors(batch_for(config)).repeat(2), epochs=1, verbose=0, shuffle=False).history

    assert all(np.isfinite(values[-1]) for values in history.values()), history
    assert int(model.optimizer.iterations) == 2
    assert int(model.discriminator_optimizer.iterations) == 2 * config.critic_steps
    for before, variable in zip(generator_before, model._generator_variables):
        assert not np.array_equal(before, variable), variable.path
    changed = [not np.array_equal(b, v) for b, v in zip(discriminator_before, model._discriminator_variables)]
    assert sum(changed) >= len(changed) - 1  # at most an unused bias of a dead unit stays put


@pytest.mark.parametrize("name", ["zoo.infogan", "zoo.ebgan", "zoo.dcgan"])
def test_players_own_disjoint_variables_that_cover_the_model(name):
    model = tiny_model(name)
    generator = {id(v) for v in model._generator_variables}
    discriminator = {id(v) for v in model._discriminator_variables}
    assert not generator & discriminator
    assert generator | discriminator == {id(v) for v in model.trainable_variables}
    if name == "zoo.infogan":  # Q(c | x) trains with D (Chen et al. Sec. 5)
        posterior = {id(v) for v in model.category_posterior.trainable_variables}
        assert posterior and posterior <= discriminator


def batch_and_seed(model):
    """A batch (images in [0, 1]), its images in the networks' [−1, 1] range, its labels (or None), a step seed."""
    batch = batch_for(model.config)
    return batch, batch["image"] * 2.0 - 1.0, batch.get("label"), tf.constant([1, 2], tf.int64)


def test_wgan_gp_critic_loss_is_the_wasserstein_loss_plus_lambda_times_the_penalty():
    model = tiny_model("zoo.wgan_gp")
    batch, real, labels, seed = batch_and_seed(model)
    terms = model._discriminator_terms(batch, seed, training=True)
    latents = model.latent_inputs.draw(tf.shape(real)[0], labels, seed)
    fake = model.generate(latents, training=True)
    real_scores = model.discriminate(real, labels, True)["score"]
    fake_scores = model.discriminate(fake, labels, True)["score"]

    np.testing.assert_allclose(terms["wasserstein_estimate"], real_scores - fake_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        terms["discriminator_loss"], fake_scores - real_scores + 10.0 * terms["gradient_penalty"], rtol=1e-5,
        atol=1e-6)
    assert np.all(np.asarray(terms["gradient_penalty"]) >= 0.0)


def test_gan_terms_report_probabilities_and_use_the_configured_generator_loss():
    for generator_loss, reference in [("non_saturating", gan_losses.non_saturating_generator_loss),
                                      ("minimax", gan_losses.minimax_generator_loss)]:
        model = tiny_model("zoo.dcgan", generator_loss=generator_loss)
        batch, real, labels, seed = batch_and_seed(model)
        latents = model.latent_inputs.draw(tf.shape(real)[0], labels, seed)
        fake_logits = model.discriminate(model.generate(latents), labels)["score"]
        np.testing.assert_allclose(model._generator_terms(batch, seed, training=False)["generator_loss"],
                                   reference(fake_logits), rtol=1e-5, atol=1e-6)
        d_real = model._discriminator_terms(batch, seed, training=False)["d_real"]
        assert np.all((np.asarray(d_real) > 0.0) & (np.asarray(d_real) < 1.0))


def test_ebgan_energy_is_the_autoencoder_reconstruction_error_and_g_adds_the_pulling_away_term():
    model = tiny_model("zoo.ebgan")
    batch, real, labels, seed = batch_and_seed(model)
    output = model.discriminate(real, training=False)
    reconstruction = real
    for layer in model.encoder + model.head:
        reconstruction = layer(reconstruction, training=False)
    np.testing.assert_allclose(output["score"], np.mean((reconstruction - real) ** 2, axis=(1, 2, 3)), rtol=1e-5)

    terms = model._generator_terms(batch, seed, training=False)
    fake = model.generate(model.latent_inputs.draw(tf.shape(real)[0], labels, seed))
    fake_output = model.discriminate(fake)
    np.testing.assert_allclose(
        terms["generator_loss"],
        fake_output["score"] + 0.1 * gan_losses.pulling_away_term(fake_output["features"]), rtol=1e-5)


def test_infogan_players_both_ascend_the_mutual_information_bound():
    model = tiny_model("zoo.infogan")
    batch, real, labels, seed = batch_and_seed(model)
    latents = model.latent_inputs.draw(tf.shape(real)[0], labels, seed)
    fake_features = model.discriminate(model.generate(latents))["features"]
    log_q_category = model.category_posterior(fake_features).log_prob(latents["category"])
    log_q_continuous = model.continuous_posterior(fake_features).log_prob(latents["continuous"])
    expected = 1.0 * (log_q_category + np.log(10.0)) + 0.1 * (log_q_continuous + 2 * np.log(2.0))

    generator = model._generator_terms(batch, seed, training=False)
    fake_logits = model.discriminate(model.generate(latents))["score"]
    np.testing.assert_allclose(generator["generator_loss"],
                               gan_losses.non_saturating_generator_loss(fake_logits) - expected, rtol=1e-4,
                               atol=1e-5)
    discriminator = model._discriminator_terms(batch, seed, training=False)
    np.testing.assert_allclose(discriminator["mutual_information"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, keys", [("zoo.gan", {"noise"}), ("zoo.cgan", {"noise", "labels"}),
                                       ("zoo.infogan", {"noise", "category", "continuous"})])
def test_training_and_sampling_latents_hold_what_the_config_feeds_g_within_their_priors(name, keys):
    latent_inputs = LatentInputs(zoo.get(name).make_tiny_config())
    labels = tf.constant([4, 2, 0, 5, 3, 1], tf.int64)
    training = latent_inputs.draw(6, labels, tf.constant([1, 2], tf.int64))
    for latents in (training, latent_inputs.from_seeds(SEEDS)):
        assert set(latents) == keys
        assert latents["noise"].shape == (6, 6) and np.all(np.abs(latents["noise"]) <= 1.0)
        if "category" in keys:
            assert np.all((latents["category"].numpy() >= 0) & (latents["category"].numpy() < 10))
            assert np.all(np.abs(latents["continuous"]) <= 1.0)
    if "labels" in keys:
        np.testing.assert_array_equal(training["labels"], labels)  # y comes from the batch in training


def test_generator_input_is_noise_one_hot_category_continuous_codes_then_one_hot_label():
    latent_inputs = LatentInputs(zoo.get("zoo.infogan").make_tiny_config(conditional=True))
    latents = {"noise": tf.fill([2, 6], 0.5), "category": tf.constant([3, 0], tf.int64),
               "continuous": tf.constant([[0.1, -0.2], [0.3, 0.4]]), "labels": tf.constant([9, 1], tf.int64)}
    inputs = latent_inputs.generator_input(latents).numpy()
    assert inputs.shape == (2, latent_inputs.size) == (2, 6 + 10 + 2 + 10)
    np.testing.assert_array_equal(inputs[:, :6], 0.5)
    np.testing.assert_array_equal(inputs[:, 6:16], np.eye(10)[[3, 0]])
    np.testing.assert_allclose(inputs[:, 16:18], latents["continuous"])
    np.testing.assert_array_equal(inputs[:, 18:], np.eye(10)[[9, 1]])


@pytest.mark.parametrize("name", ["zoo.dcgan", "zoo.cgan", "zoo.infogan"])
def test_each_sample_depends_only_on_its_seed(name):
    model = tiny_model(name)
    batch = model.sample(SEEDS).numpy()
    permutation = [4, 2, 0, 5, 3, 1]
    assert batch.shape == (6, 8, 8, 1) and batch.min() >= 0.0 and batch.max() <= 1.0
    np.testing.assert_allclose(model.sample(tf.gather(SEEDS, permutation)).numpy(), batch[permutation], atol=1e-6)
    np.testing.assert_allclose(model.sample(SEEDS[2:3]).numpy()[0], batch[2], atol=1e-6)
    assert np.abs(batch[0] - batch[1]).max() > 1e-4


def test_conditional_sampler_follows_the_label_and_rejects_labels_out_of_range():
    model = tiny_model("zoo.cgan")
    function, _ = model.serving_signatures()["sample_conditional"]
    seeds = tf.constant([5, 5], tf.int64)
    images = function(seeds, tf.constant([0, 7], tf.int64))["images"].numpy()
    assert np.abs(images[0] - images[1]).max() > 1e-4  # same z, different y
    np.testing.assert_allclose(images[1], model.sample(seeds[:1], labels=tf.constant([7], tf.int64))[0], atol=1e-6)
    for bad in (10, -1):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"label must be in \[0, 10\)"):
            function(seeds, tf.constant([3, bad], tf.int64))


def test_infogan_sampler_with_codes_uses_the_given_codes():
    model = tiny_model("zoo.infogan")
    function, specs = model.serving_signatures()["sample_with_codes"]
    assert [spec.name for spec in specs] == ["seed", "category", "continuous"]
    seeds = tf.constant([9, 9, 9], tf.int64)
    images = function(seeds, tf.constant([1, 1, 2], tf.int64),
                      tf.constant([[0.0, 0.0], [1.5, 0.0], [0.0, 0.0]]))["images"].numpy()
    assert np.abs(images[0] - images[1]).max() > 1e-5 and np.abs(images[0] - images[2]).max() > 1e-5
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"category must be in \[0, 10\)"):
        function(seeds[:1], tf.constant([10], tf.int64), tf.zeros([1, 2]))


@pytest.mark.parametrize("name, grids", [
    ("zoo.gan", {"samples": 64}),
    ("zoo.cgan", {"samples": 64, "per_class": 80}),
    ("zoo.infogan", {"samples": 64, "traversal_category": 80, "traversal_continuous_1": 64,
                     "traversal_continuous_2": 64}),
])
def test_summary_grids_come_from_fixed_seeds(name, grids):
    model = tiny_model(name)
    first, second = model.summaries(None), model.summaries(None)
    assert {key: len(value) for key, value in first.items()} == grids
    for key in grids:
        np.testing.assert_array_equal(first[key], second[key])
    if name == "zoo.infogan":  # one seed per row, c_1 swept along it
        row = first["traversal_continuous_1"].numpy()[:8]
        assert all(np.abs(row[i] - row[i + 1]).max() > 0 for i in range(7))


def test_signatures_are_declared_per_variant():
    assert set(tiny_model("zoo.gan").serving_signatures()) == {"serving_default", "sample_png"}
    assert "sample_conditional" in tiny_model("zoo.cgan").serving_signatures()
    assert "sample_with_codes" in tiny_model("zoo.infogan").serving_signatures()


def test_weight_clipping_keeps_every_critic_weight_within_c():
    model = tiny_model("zoo.wgan")
    model.fit(tf.data.Dataset.from_tensors(batch_for(model.config)).repeat(2), verbose=0, shuffle=False)
    largest = max(float(np.abs(v).max()) for v in model._discriminator_variables)
    assert largest <= 0.01 + 1e-7


def test_checkpoint_restores_both_optimizers(tmp_path):
    model = tiny_model("zoo.wgan_gp")
    model.fit(tf.data.Dataset.from_tensors(batch_for(model.config)).repeat(3), verbose=0, shuffle=False)
    runs.save_checkpoint(model, tmp_path, epoch=1)

    restored = tiny_model("zoo.wgan_gp")
    assert runs.restore_checkpoint(restored, tmp_path) == 1
    assert int(restored.optimizer.iterations) == 3
    assert int(restored.discriminator_optimizer.iterations) == 3 * model.config.critic_steps
    for mine, theirs in zip(restored.discriminator_optimizer.variables, model.discriminator_optimizer.variables):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(restored.sample(SEEDS), model.sample(SEEDS))


def test_conditional_models_ask_for_labels_and_gans_fed_noise_alone_also_for_ais():
    """AIS anneals over the noise only: a GAN whose G also takes y or codes has no p(x | z) of z alone."""
    for name in GAN_NAMES:
        spec = zoo.get(name)
        assert spec.dataset(spec.make_config()).labels == (name == "zoo.cgan")
        noise_only = name not in ("zoo.cgan", "zoo.infogan")
        assert spec.evaluation == ("sample_quality", "ais") if noise_only else ("sample_quality",)


@pytest.mark.parametrize("overrides, message", [
    ({"architecture": "resnet"}, "architecture must be 'mlp' or 'dcgan'"),
    ({"loss": "hinge"}, "loss must be"),
    ({"critic_steps": 5, "batch_size": 64}, "batch_size must be a positive multiple of critic_steps"),
    ({"architecture": "dcgan", "image_shape": (30, 30, 1)}, "divisible by 4"),
    ({"loss": "energy", "minibatch_discrimination": True}, "minibatch_discrimination needs a scoring"),
    ({"architecture": "dcgan", "gradient_penalty_weight": 10.0}, "set normalization=layer or none"),
    ({"gradient_penalty_weight": 10.0, "minibatch_discrimination": True}, "minibatch discrimination mixes"),
    ({"weight_clip": 0.01}, "weight_clip is implemented for the dcgan critic"),
    ({"architecture": "dcgan", "weight_clip": 0.01, "minibatch_discrimination": True}, "would stay unclipped"),
    ({"categorical_code": 1}, "categorical_code needs >= 2"),
])
def test_inconsistent_configs_are_errors_naming_the_fix(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        GANConfig(**overrides)


def test_generator_loss_can_be_set_from_the_command_line_syntax():
    values = config_lib.parse_assignments(["generator_loss=minimax", "minibatch_discrimination=true"], GANConfig)
    assert values == {"generator_loss": "minimax", "minibatch_discrimination": True}
    with pytest.raises(config_lib.ConfigError, match="valid keys: .*architecture"):
        config_lib.parse_assignments(["generator_los=minimax"], GANConfig)


# Family features under MirroredStrategy over 2 virtual CPUs, in one child process: virtual
# devices must be set before TensorFlow starts, and one strategy serves all models (TF collectives
# of two MirroredStrategy objects in one process collide).
MIRRORED_FITS = """
import json, sys
from training import distribute
distribute.use_virtual_cpus(2)
import numpy as np, tensorflow as tf, zoo

strategy = distribute.make_strategy("mirrored")
results = {}
for name in sys.argv[1:]:
    spec = zoo.get(name)
    config = spec.make_tiny_config()
    with strategy.scope():
        model = spec.build(config)
        model.compile_for_training(2)
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(size=(config.batch_size, 8, 8, 1)).astype("float32")}
    if config.conditional:
        batch["label"] = rng.integers(0, 10, config.batch_size)
    history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), verbose=0, shuffle=False).history
    results[name] = {"logs": {key: float(values[-1]) for key, values in history.items()},
                     "generator_steps": int(model.optimizer.iterations.numpy()),
                     "discriminator_steps": int(model.discriminator_optimizer.iterations.numpy()),
                     "critic_steps": config.critic_steps, "replicas": strategy.num_replicas_in_sync}
print(json.dumps(results))
"""


def test_batch_norm_penalty_and_code_heads_train_under_mirrored_strategy_over_two_virtual_cpus():
    # Batch norm in D (InfoGAN's D is DCGAN's), the gradient penalty and the InfoGAN heads; the MLP networks,
    # labels and the CLI under mirrored are covered by tests/training/test_gan_fit.py (zoo.cgan).
    names = ["zoo.wgan_gp", "zoo.infogan"]
    repo = pathlib.Path(__file__).resolve().parents[3]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(repo)}
    result = subprocess.run([sys.executable, "-c", MIRRORED_FITS, *names], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])

    assert sorted(results) == sorted(names)
    for name, run in results.items():
        assert run["replicas"] == 2
        assert all(np.isfinite(value) for value in run["logs"].values()), (name, run["logs"])
        assert run["generator_steps"] == 2 and run["discriminator_steps"] == 2 * run["critic_steps"], name


@pytest.mark.parametrize("architecture", ["mlp", "dcgan"])
def test_conditional_discriminator_judges_the_image_label_pair_not_the_label_alone(architecture):
    model = tiny_model("zoo.cgan", architecture=architecture)
    images = batch_for(model.config, size=2)["image"] * 2.0 - 1.0
    pairs = tf.repeat(images, 2, axis=0)  # x1, x1, x2, x2
    labels = tf.constant([3, 8, 3, 8], tf.int64)
    scores = model.discriminate(pairs, labels)["score"].numpy()
    # A label that only shifted D's output by a per-class constant would make this exactly 0.
    interaction = (scores[0] - scores[1]) - (scores[2] - scores[3])
    assert abs(interaction) > 1e-5


# Annealed importance sampling with a Gaussian observation model (Wu et al. 2017).


def test_the_annealed_latent_maps_a_standard_normal_onto_the_uniform_noise_g_is_trained_on():
    model = tiny_model("zoo.gan")
    latents = model.prior_latents([200_000], tf.constant([1, 2])).numpy()
    noise = tf.math.erf(latents / np.sqrt(2.0)).numpy()  # what generated_mean feeds G
    assert noise.min() >= -1.0 and noise.max() <= 1.0
    quarters = np.histogram(noise.ravel(), bins=4, range=(-1.0, 1.0))[0] / noise.size
    np.testing.assert_allclose(quarters, 0.25, atol=0.005)
    np.testing.assert_allclose(model.log_prior(latents[:3]),
                               -0.5 * (latents[:3] ** 2).sum(-1) - 0.5 * latents.shape[-1] * np.log(2 * np.pi),
                               rtol=1e-5)


def test_the_decoder_density_is_a_gaussian_of_the_configured_stddev_around_the_generator():
    model = tiny_model("zoo.dcgan")
    latents = model.prior_latents([2, 3], tf.constant([3, 4]))
    images = tf.constant(np.random.default_rng(0).random((3, *model.config.image_shape)), tf.float32)
    mean = (model.generate({"noise": tf.math.erf(tf.reshape(latents, [6, -1]) / np.sqrt(2.0))}) + 1.0) / 2.0
    mean = mean.numpy().reshape(2, 3, -1)
    for stddev in (0.1, 0.5):
        model.use_observation_stddev(stddev)
        expected = (-0.5 * ((images.numpy().reshape(1, 3, -1) - mean) / stddev) ** 2
                    - np.log(stddev) - 0.5 * np.log(2 * np.pi)).sum(-1)
        np.testing.assert_allclose(model.log_decoder(images, latents), expected, rtol=1e-4)
    with pytest.raises(ValueError, match="must be positive"):
        model.use_observation_stddev(0.0)


def test_annealed_importance_sampling_of_a_gan_matches_a_brute_force_average_over_its_prior():
    from zoo.common import ais

    model = tiny_model("zoo.gan", noise_dim=2)
    model.use_observation_stddev(0.3)
    images = model.decoder_sample(model.prior_latents([3], tf.constant([5, 6])), tf.constant([7, 8]))
    estimate = ais.Annealer(lambda given: model).log_marginal((), images, chains=16, num_steps=300,
                                                              seed=tf.constant([1, 2]))
    prior = model.prior_latents([100_000, 3], tf.constant([9, 10]))
    brute_force = tf.reduce_logsumexp(model.log_decoder(images, prior), axis=0) - np.log(100_000.0)
    np.testing.assert_allclose(estimate.log_marginal, brute_force, atol=0.15)
