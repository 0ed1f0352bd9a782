"""zoo.draw: the variational bound and L_k over z_1 … z_T, the noise per step, gradients and one CLI fit."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from training import fit
from zoo.common import bounds
from zoo.common.stateless import per_example_normal_rows
from zoo.draw import model as draw

SEEDS = tf.constant([0, 1, 2, 3], tf.int64)


def tiny_model(**overrides) -> draw.DRAW:
    return draw.build(zoo.get("zoo.draw").make_tiny_config(**overrides))


def binary_images(config, count, seed=0):
    return (np.random.default_rng(seed).random((count, *config.image_shape)) < 0.4).astype(np.float32)


def _steps_are_distinct(noise):
    """noise [..., T, z]: no two steps t share their ε."""
    flat = np.reshape(noise, (-1, *noise.shape[-2:]))
    for example in flat:
        distances = np.abs(example[:, None] - example[None]).max(axis=-1)
        assert np.all(distances[~np.eye(len(example), dtype=bool)] > 1e-3)


def test_epsilon_is_drawn_afresh_at_every_step_in_training_and_sampling():
    model = tiny_model()
    _steps_are_distinct(model._training_noise(3).numpy())
    _steps_are_distinct(model._prior_noise(SEEDS).numpy())


def test_training_noise_differs_between_training_steps():
    model = tiny_model()
    assert not np.allclose(model._training_noise(2), model._training_noise(2))


def test_log_likelihood_with_one_sample_is_the_elbo_of_the_same_noise():
    model = tiny_model()
    images = binary_images(model.config, 4)
    result = model.log_likelihood(images, tf.ones([4], tf.int64), SEEDS).numpy()
    rows = per_example_normal_rows(SEEDS, 0, 1, model.config.glimpses * model.config.latent_units, stream=0)
    noise = tf.reshape(tf.transpose(rows, [1, 0, 2]), [1, 4, model.config.glimpses, model.config.latent_units])
    log_weights = model._importance_terms(images, noise)["log_weights"]
    np.testing.assert_allclose(result, bounds.elbo(log_weights), rtol=1e-5)


def test_closed_form_kl_is_the_expected_log_ratio_of_q_to_the_prior_over_the_sequence():
    # E[Σ_t log q(z_t|·) − log N(z_t; 0, I)] = E[Σ_t KL_t] (Eq. 10–11), so the Monte Carlo L_1 and
    # the closed-form ELBO agree in expectation; a −T/2 or −d/2 constant would not.
    model = tiny_model(latent_units=3)
    images = binary_images(model.config, 1)
    noise = tf.random.stateless_normal([20_000, 1, model.config.glimpses, 3], seed=[3, 4])
    terms = {name: value.numpy()[:, 0] for name, value in model._importance_terms(images, noise).items()}
    log_ratio = terms["reconstruction"] - terms["log_weights"]
    difference = log_ratio - terms["kl"]
    assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(len(difference))


def test_importance_weighted_bound_grows_with_k_on_average():
    model = tiny_model()
    images = np.repeat(binary_images(model.config, 1), 40, axis=0)
    seeds = tf.range(40, dtype=tf.int64)
    means = [model.log_likelihood(images, tf.fill([40], tf.constant(k, tf.int64)), seeds).numpy().mean()
             for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2], means


def test_log_likelihood_in_small_groups_and_chunks_equals_one_chunk(monkeypatch):
    model = tiny_model()
    images = binary_images(model.config, 3)
    num_samples = tf.constant([70, 1, 5], tf.int64)
    whole = model.log_likelihood(images, num_samples, SEEDS[:3]).numpy()
    monkeypatch.setattr(draw, "SAMPLES_PER_CHUNK", 64)  # one image per group, 64 samples per chunk
    np.testing.assert_allclose(model.log_likelihood(images, num_samples, SEEDS[:3]), whole, rtol=1e-5)


def test_served_log_likelihood_refuses_requests_beyond_its_budget_before_sampling():
    model = tiny_model()
    images = tf.zeros([2, *model.config.image_shape])
    served_log_likelihood, _ = model.serving_signatures()["log_likelihood"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="send fewer images or fewer samples per request"):
        served_log_likelihood(images, tf.fill([2], tf.constant(draw.MAX_SERVED_IMPORTANCE_SAMPLES, tf.int64)),
                              SEEDS[:2])


def test_canvas_sequence_ends_at_the_sample_and_stays_in_the_unit_interval():
    model = tiny_model()
    sequence = model.canvas_sequence(SEEDS).numpy()
    assert sequence.shape == (4, model.config.glimpses, *model.config.image_shape)
    np.testing.assert_allclose(sequence[:, -1], model.sample(SEEDS), rtol=1e-6)
    assert np.all((sequence >= 0) & (sequence <= 1))


@pytest.mark.parametrize("use_attention", [True, False])
def test_gradients_are_finite_at_extreme_windows_and_inputs(use_attention):
    model = tiny_model(attention=use_attention)
    if use_attention:
        for window in (model.reader.window, model.writer.window):  # off the image, needle-thin, faint
            kernel, _ = window.parameters.get_weights()
            window.parameters.set_weights([kernel, np.array([4.0, -4.0, -9.0, 3.0, -6.0], np.float32)])
    images = tf.constant(np.stack([np.zeros(model.config.image_shape), np.ones(model.config.image_shape)]),
                         tf.float32)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model._objective({"image": images}, 1)["elbo"])
    gradients = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(loss.numpy())
    assert all(np.all(np.isfinite(gradient)) for gradient in gradients)


@pytest.mark.parametrize("use_attention", [True, False])
def test_one_training_step_changes_the_weights_with_finite_metrics(use_attention):
    model = tiny_model(attention=use_attention)
    model.compile_for_training(steps_per_epoch=1)
    before = [weight.numpy().copy() for weight in model.trainable_weights]
    logs = model.train_step({"image": tf.constant(binary_images(model.config, 8))})
    assert all(np.isfinite(float(value)) for value in logs.values())
    assert any(not np.allclose(old, new.numpy()) for old, new in zip(before, model.trainable_weights))


def test_evaluation_with_importance_samples_reports_a_tighter_nll_than_the_elbo():
    model = tiny_model()
    model.compile_for_training(steps_per_epoch=1)
    model.use_importance_samples(50)
    data = tf.data.Dataset.from_tensor_slices({"image": binary_images(model.config, 16)}).batch(8)
    logs = model.evaluate(data, return_dict=True, verbose=0)
    np.testing.assert_allclose(logs["elbo"], logs["reconstruction"] - logs["kl"], rtol=1e-5)
    assert logs["nll"] < -logs["elbo"]


def test_colour_likelihood_is_each_channel_a_logistic_around_the_canvas_rounded_to_256_levels():
    """log D(x | c_T) for 8-bit colour: per pixel and channel, the logistic(2σ(c) − 1, s) mass of
    [y − 1/255, y + 1/255] at y = 2x − 1, the edge levels taking the tails; summed over pixels."""
    model = draw.build(zoo.get("zoo.draw_svhn").make_tiny_config())
    rng = np.random.default_rng(0)
    canvas = rng.normal(0.0, 2.0, (3, *model.config.image_shape)).astype(np.float32)
    levels = rng.integers(0, 256, canvas.shape)
    levels.reshape(-1)[:2] = [0, 255]  # both edge bins
    model.pixel_log_scale.assign([-2.0, -3.0, -1.5])

    def logistic_cdf(value):
        return 1.0 / (1.0 + np.exp(-value))

    centre = 2.0 / (1.0 + np.exp(-canvas.astype(np.float64))) - 1.0
    scale = np.exp(model.pixel_log_scale.numpy().astype(np.float64))
    y = 2.0 * levels / 255.0 - 1.0
    # The mass of [lower, upper] in standard units, as a difference of CDFs left of the centre and of
    # survival functions right of it, so that neither side cancels in float64.
    upper = np.where(levels == 255, np.inf, (y + 1 / 255 - centre) / scale)
    lower = np.where(levels == 0, -np.inf, (y - 1 / 255 - centre) / scale)
    mass = np.where(y < centre, logistic_cdf(upper) - logistic_cdf(lower), logistic_cdf(-lower) - logistic_cdf(-upper))
    expected = np.log(mass).sum(axis=(1, 2, 3))
    images = tf.constant(levels / 255.0, tf.float32)
    np.testing.assert_allclose(model._log_likelihood_of(tf.constant(canvas), images), expected, rtol=1e-5)


def test_colour_models_read_8_bit_images_and_report_bits_per_dimension():
    model = draw.build(zoo.get("zoo.draw_cifar10").make_tiny_config())
    assert zoo.get("zoo.draw_cifar10").dataset(model.config).binarize is False
    model.compile_for_training(steps_per_epoch=1)
    images = np.random.default_rng(1).integers(0, 256, (8, *model.config.image_shape)) / 255.0
    logs = model.test_step({"image": tf.constant(images, tf.float32)})
    np.testing.assert_allclose(float(logs["bits_per_dim"]), float(logs["nll"]) / (6 * 6 * 3 * np.log(2.0)), rtol=1e-5)


def _fit_through_the_cli(run_main, model, workdir, max_examples):
    """`training.fit`'s CLI (in this process) on a tiny DRAW network and the suite's data, export included."""
    tiny = ["--set", "glimpses=2", "--set", "encoder_units=8", "--set", "decoder_units=8", "--set", "latent_units=4"]
    run = ["--max_examples", max_examples, "--batch_size", "20", "--steps_per_epoch", "2",
           "--validation_steps", "2", "--no_download", "--verbose", "2"]
    result = run_main(fit.main, [model, "--workdir", workdir, *tiny, *run])
    assert result.returncode == 0, result.stderr[-4000:]
    assert list(workdir.rglob("model.keras")) and list(workdir.rglob("saved_model.pb"))
    return result


def test_cli_fit_trains_and_exports(run_main, tmp_path):
    _fit_through_the_cli(run_main, "zoo.draw", tmp_path, max_examples=200)


def test_cli_fit_of_the_two_digit_preset_trains_on_60_by_60_canvases_and_exports(run_main, tmp_path):
    result = _fit_through_the_cli(run_main, "zoo.draw_two_digit_mnist", tmp_path, max_examples=40)
    assert "dataset: two_digit_mnist (binarize: True)" in result.stdout
    assert '"image_shape": [60, 60, 1]' in result.stdout


def test_cli_fit_of_the_svhn_preset_trains_on_8_bit_colour_and_exports(run_main, tmp_path):
    result = _fit_through_the_cli(run_main, "zoo.draw_svhn", tmp_path, max_examples=40)
    assert "dataset: svhn_cropped (binarize: False)" in result.stdout
    assert '"likelihood": "discretized_logistic"' in result.stdout
