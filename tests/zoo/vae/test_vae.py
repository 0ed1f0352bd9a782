"""zoo.vae: samplers, the importance-weighted objective and one tiny fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.vae import model as vae
from zoo.common import bounds
from zoo.common.stateless import ROWS_PER_BLOCK, per_example_normal_rows

LAYERS = [1, 2]
SEEDS = tf.constant([0, 1, 2, 3, 4, 5], tf.int64)


def _binary_images(config, count, seed=0):
    """`count` noisy copies of two fixed binary prototypes, so there is structure to learn."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((2, *config.image_shape)) < 0.5
    images = prototypes[rng.integers(0, 2, size=count)]
    flips = rng.random(images.shape) < 0.1
    return np.logical_xor(images, flips).astype(np.float32)


def _normal_log_pdf(values, loc=0.0, scale=1.0):
    return -0.5 * ((values - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)


TWO_LAYERS = {"stochastic_layers": 2, "hidden_units": (16, 8), "latent_units": (4, 2)}


@pytest.fixture
def make_model():
    """`make_model(stochastic_layers=1, **overrides)`: the registry's tiny VAE (big_vision style)."""
    def build_model(stochastic_layers=1, **overrides):
        depth = TWO_LAYERS if stochastic_layers == 2 else {}
        return vae.build(zoo.get("zoo.vae").make_tiny_config(**{**depth, **overrides}))

    return build_model


# The sampler behind serving_default (determinism, batch order and reloads: tests/contract).


@pytest.mark.parametrize("layers", LAYERS)
def test_different_seeds_give_different_samples(make_model, layers):
    samples = make_model(stochastic_layers=layers).sample(SEEDS).numpy().reshape(len(SEEDS), -1)
    distances = np.abs(samples[:, None] - samples[None]).max(axis=-1)
    assert np.all(distances[~np.eye(len(SEEDS), dtype=bool)] > 1e-4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("layers", LAYERS)
def test_sample_and_reconstruction_are_images_in_unit_interval(make_model, layers, likelihood):
    model = make_model(stochastic_layers=layers, likelihood=likelihood)
    samples = model.sample(SEEDS).numpy()
    reconstructions = model(_binary_images(model.config, 4)).numpy()
    assert samples.shape == (len(SEEDS), *model.config.image_shape)
    for images in (samples, reconstructions):
        assert np.all((images >= 0.0) & (images <= 1.0))


# Deterministic paths.


@pytest.mark.parametrize("layers", LAYERS)
def test_encode_decode_and_call_shapes(make_model, layers):
    model = make_model(stochastic_layers=layers)
    images = _binary_images(model.config, 3)
    codes = model.encode(images)
    latent_units = model.config.architecture[1]
    assert sorted(codes) == sorted(
        f"{stat}_{layer}" for layer in range(1, layers + 1) for stat in ("mean", "stddev")
    )
    for layer, units in enumerate(latent_units, start=1):
        assert codes[f"mean_{layer}"].shape == (3, units)
        assert codes[f"stddev_{layer}"].shape == (3, units)
        assert np.all(codes[f"stddev_{layer}"].numpy() > 0.0)
    latent = np.random.default_rng(0).normal(size=(5, latent_units[-1])).astype(np.float32)
    assert model.decode(latent).shape == (5, *model.config.image_shape)
    assert model(images).shape == images.shape


@pytest.mark.parametrize("layers", LAYERS)
def test_call_decodes_top_posterior_mean(make_model, layers):
    model = make_model(stochastic_layers=layers)
    images = _binary_images(model.config, 3)
    top_mean = model.encode(images)[f"mean_{layers}"]
    np.testing.assert_allclose(model(images), model.decode(top_mean), atol=1e-6)


# The importance-weighted objective (Burda et al. 2016, Eq. 8).


def _noise(model, k, batch, seed=0):
    return [
        tf.random.stateless_normal([k, batch, units], seed=[seed, layer])
        for layer, units in enumerate(model.latent_units)
    ]


@pytest.mark.parametrize("layers", LAYERS)
def test_importance_log_weights_equal_reconstruction_minus_kl(make_model, layers):
    model = make_model(stochastic_layers=layers)
    images = _binary_images(model.config, 3)
    terms = model._importance_terms(images, _noise(model, 4, 3))
    for name in ("log_weights", "reconstruction", "kl"):
        assert terms[name].shape == (4, 3)
    np.testing.assert_allclose(
        terms["log_weights"], terms["reconstruction"] - terms["kl"], rtol=1e-5, atol=1e-4
    )
    # q(h_1 | x) does not depend on the noise, so its mean is the encoder's.
    np.testing.assert_allclose(terms["posterior_means"][0], model.encode(images)["mean_1"], atol=1e-6)


def test_importance_log_weights_match_hand_computed_one_layer_log_weights(make_model):
    model = make_model(stochastic_layers=1)
    images = _binary_images(model.config, 3)
    (epsilon,) = _noise(model, 4, 3)
    log_weights = model._importance_terms(images, [epsilon])["log_weights"].numpy()

    codes = model.encode(images)
    loc, scale = codes["mean_1"].numpy()[None], codes["stddev_1"].numpy()[None]
    h = loc + scale * epsilon.numpy()
    logits = model.observation_decoder(h).distribution.logits.numpy().reshape(4, 3, -1)
    x = images.reshape(1, 3, -1)
    log_px_given_h = -(x * np.logaddexp(0.0, -logits) + (1 - x) * np.logaddexp(0.0, logits)).sum(-1)
    log_ph = _normal_log_pdf(h).sum(-1)
    log_qh = _normal_log_pdf(h, loc, scale).sum(-1)
    np.testing.assert_allclose(log_weights, log_px_given_h + log_ph - log_qh, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("layers", LAYERS)
def test_log_likelihood_with_one_sample_equals_per_example_log_weight(make_model, layers):
    model = make_model(stochastic_layers=layers)
    images = _binary_images(model.config, 3)
    seeds = SEEDS[:3]
    result = model.log_likelihood(images, tf.ones([3], tf.int64), seeds)
    noise = [
        tf.transpose(per_example_normal_rows(seeds, 0, 1, units, stream=layer), [1, 0, 2])
        for layer, units in enumerate(model.latent_units)
    ]
    log_weights = model._importance_terms(images, noise)["log_weights"]
    np.testing.assert_allclose(result, log_weights[0], rtol=1e-6)
    np.testing.assert_allclose(result, bounds.elbo(log_weights), rtol=1e-6)


@pytest.mark.parametrize("layers", LAYERS)
def test_log_likelihood_with_mixed_k_matches_each_example_alone(make_model, layers):
    model = make_model(stochastic_layers=layers)
    images = _binary_images(model.config, 4)
    num_samples = tf.constant([1, 7, 3, 2], tf.int64)
    seeds = SEEDS[:4]
    batched = model.log_likelihood(images, num_samples, seeds).numpy()
    alone = [
        model.log_likelihood(images[b : b + 1], num_samples[b : b + 1], seeds[b : b + 1]).numpy()[0]
        for b in range(4)
    ]
    np.testing.assert_allclose(batched, alone, rtol=1e-5)


def test_log_likelihood_in_small_groups_and_chunks_equals_one_chunk(make_model, monkeypatch):
    model = make_model(stochastic_layers=2)
    images = _binary_images(model.config, 3)
    num_samples = tf.constant([150, 1, 70], tf.int64)
    whole = model.log_likelihood(images, num_samples, SEEDS[:3]).numpy()  # the default chunk holds all 221
    monkeypatch.setattr(vae, "SAMPLES_PER_CHUNK", 2 * ROWS_PER_BLOCK)  # groups of 2 images, 1 block each per chunk
    np.testing.assert_allclose(model.log_likelihood(images, num_samples, SEEDS[:3]), whole, rtol=1e-5)


@pytest.mark.parametrize("images, samples", [
    (1, vae.MAX_SERVED_IMPORTANCE_SAMPLES + 1),
    (2, 2**62 + 600_000),  # images x samples overflows int64 to a small positive number
    (2**11, 2**10),
])
def test_served_log_likelihood_refuses_requests_beyond_its_budget_before_sampling(make_model, images, samples):
    model = make_model()
    batch = tf.zeros([images, *model.config.image_shape])
    served_log_likelihood, _ = model.serving_signatures()["log_likelihood"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="send fewer images or fewer samples per request"):
        served_log_likelihood(batch, tf.fill([images], tf.constant(samples, tf.int64)),
                              tf.range(images, dtype=tf.int64))


def test_log_likelihood_rejects_non_positive_sample_counts(make_model):
    model = make_model()
    images = _binary_images(model.config, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_importance_samples"):
        model.log_likelihood(images, tf.constant([1, 0], tf.int64), SEEDS[:2])


@pytest.mark.parametrize("objective, k", [("elbo", 1), ("iwae", 5)])
def test_evaluate_reports_consistent_bound_terms(make_model, objective, k):
    model = make_model(objective=objective, k=k)
    model.compile_for_training(steps_per_epoch=1)
    data = tf.data.Dataset.from_tensor_slices({"image": _binary_images(model.config, 16)}).batch(8)
    logs = model.evaluate(data, return_dict=True, verbose=0)
    assert set(logs) >= {"loss", "bound", "elbo", "nll", "reconstruction", "kl", "active_units_1"}
    np.testing.assert_allclose(logs["elbo"], logs["reconstruction"] - logs["kl"], rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], -logs["bound"], rtol=1e-6)
    expected_bound = -logs["nll"] if objective == "iwae" else logs["elbo"]
    np.testing.assert_allclose(logs["bound"], expected_bound, rtol=1e-6)
    assert 0 <= logs["active_units_1"] <= model.latent_units[0]


@pytest.mark.parametrize(  # each variant once; a graph-mode fit costs seconds of tracing
    "layers, objective, k", [(1, "elbo", 1), (2, "iwae", 5)], ids=["vae-1-layer", "iwae-2-layers"]
)
def test_fit_on_binary_data_reduces_loss(make_model, layers, objective, k):
    keras.utils.set_random_seed(0)
    model = make_model(
        stochastic_layers=layers, objective=objective, k=k,
        learning_rate_schedule="constant", learning_rate=1e-2,
    )
    model.compile_for_training(steps_per_epoch=8)
    data = tf.data.Dataset.from_tensor_slices({"image": _binary_images(model.config, 64)}).batch(8)
    losses = model.fit(data, epochs=4, shuffle=False, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]


# Optimisation schedule (Burda et al. 2016, Sec. 5).

_STAGE_STARTS = [(3**i - 1) // 2 for i in range(8)]  # epochs 0, 1, 4, 13, 40, 121, 364, 1093


@pytest.mark.parametrize(
    "epoch, stage",
    sorted(
        {(2, 1), (3, 1), (5000, 7)}  # 1093 is the last stage start
        | {(start, stage) for stage, start in enumerate(_STAGE_STARTS)}
        | {(start - 1, stage - 1) for stage, start in enumerate(_STAGE_STARTS) if stage > 0}
    ),
)
def test_staged_decay_learning_rate_is_tenth_root_per_stage(epoch, stage):
    steps_per_epoch = 3
    schedule = vae.StagedDecay(1e-3, steps_per_epoch=steps_per_epoch)
    expected = 1e-3 * 10 ** (-stage / 7)
    for step in (epoch * steps_per_epoch, epoch * steps_per_epoch + steps_per_epoch - 1):
        np.testing.assert_allclose(schedule(step), expected, rtol=1e-6)


def test_staged_decay_config_round_trip():
    schedule = vae.StagedDecay(2e-3, steps_per_epoch=5, stages=4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored.get_config() == schedule.get_config()
    np.testing.assert_array_equal(restored(100), schedule(100))


@pytest.mark.parametrize(
    "schedule, expected_learning_rate",
    [
        ("burda", {"initial_learning_rate": 2e-3, "steps_per_epoch": 3, "stages": 8}),
        ("constant", 2e-3),
    ],
)
def test_compile_for_training_builds_adam_from_config(make_model, schedule, expected_learning_rate):
    model = make_model(learning_rate_schedule=schedule, learning_rate=2e-3, adam_epsilon=1e-3)
    model.compile_for_training(steps_per_epoch=3)
    optimizer_config = model.optimizer.get_config()
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert (optimizer_config["beta_1"], optimizer_config["beta_2"]) == (0.9, 0.999)
    assert optimizer_config["epsilon"] == 1e-3
    learning_rate = optimizer_config["learning_rate"]
    if isinstance(learning_rate, dict):
        assert learning_rate["class_name"] == "StagedDecay"
        learning_rate = learning_rate["config"]
    assert learning_rate == pytest.approx(expected_learning_rate)


# The serving interface.


@pytest.mark.parametrize("layers", LAYERS)
def test_serving_signatures_have_batch_polymorphic_inputs_and_trace(make_model, layers):
    model = make_model(stochastic_layers=layers)
    signatures = model.serving_signatures()
    assert set(signatures) == {"serving_default", "sample_png", "reconstruct", "encode", "decode", "log_likelihood"}
    for name, (function, input_signature) in signatures.items():
        assert all(spec.shape[0] is None for spec in input_signature), name
        inputs = [
            tf.fill([3, *spec.shape[1:]], tf.constant(2, spec.dtype))
            if spec.dtype == tf.int64
            else tf.random.stateless_uniform([3, *spec.shape[1:]], seed=[0, 0])
            for spec in input_signature
        ]
        outputs = tf.function(function, input_signature=input_signature)(*inputs)
        assert isinstance(outputs, dict) and outputs, name
        for output in outputs.values():
            assert output.shape[0] == 3, name


def test_summaries_shapes(make_model):
    model = make_model()
    images = _binary_images(model.config, 5)
    grids = model.summaries(images)
    assert grids["prior_samples"].shape == (64, *model.config.image_shape)
    assert grids["reconstructions"].shape == (10, *model.config.image_shape)
    np.testing.assert_array_equal(grids["reconstructions"][::2], images)


@pytest.mark.parametrize("stochastic_layers", LAYERS)
def test_the_densities_annealed_importance_sampling_uses_make_up_the_importance_weights(make_model, stochastic_layers):
    """log p(h) + log p(x | h) of the AIS capability is log p(x, h) of the bound: log w + log q(h | x) for the
    same h, all layers side by side."""
    model = make_model(stochastic_layers)
    images = tf.constant(_binary_images(model.config, 5))
    noise = [tf.random.stateless_normal([3, 5, units], seed=[7, layer]) for layer, units in enumerate(model.latent_units)]
    features = tf.reshape(images, [5, -1])
    layers, log_q = [], 0.0
    for network, epsilon in zip(model.inference_networks, noise):
        posterior = network(layers[-1] if layers else features)
        layers.append(posterior.distribution.loc + posterior.distribution.scale * epsilon)
        log_q += posterior.log_prob(layers[-1])
    latents = tf.concat(layers, axis=-1)
    log_joint = model.log_prior(latents) + model.log_decoder(images, latents)
    np.testing.assert_allclose(log_joint, model._importance_terms(images, noise)["log_weights"] + log_q,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("stochastic_layers", LAYERS)
def test_prior_latents_and_decoder_samples_are_the_ancestral_sampler_s(make_model, stochastic_layers):
    model = make_model(stochastic_layers)
    latents = model.prior_latents([2000], tf.constant([1, 2]))
    assert latents.shape == (2000, sum(model.latent_units))
    top = latents[:, -model.latent_units[-1]:].numpy()
    np.testing.assert_allclose(top.mean(axis=0), 0.0, atol=0.1)  # h_L ~ N(0, I): 2000 draws, std of mean ≈ 0.022
    np.testing.assert_allclose(top.std(axis=0), 1.0, atol=0.1)
    images = model.decoder_sample(latents[:4], tf.constant([3, 4])).numpy()
    assert images.shape == (4, *model.config.image_shape) and set(np.unique(images)) <= {0.0, 1.0}
    np.testing.assert_array_equal(model.prior_latents([3], tf.constant([1, 2])),
                                  model.prior_latents([3], tf.constant([1, 2])))
