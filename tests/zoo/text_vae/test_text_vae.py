"""zoo.lstm_lm and zoo.text_vae: causal decoders and their receptive fields, the likelihood's masking, the
bound at k = 1, KL annealing, generation, the vocabulary and "+init"."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.common import distributions, text
from zoo.text_vae import decoders, language_model, model as text_vae

WORDS = tuple(f"w{i}" for i in range(30))


def _build(name="zoo.text_vae", **overrides):
    spec = zoo.get(name)
    return spec.build(spec.make_tiny_config(**overrides).with_vocabulary(WORDS))


def _ids(model, texts):
    return model.tokenizer(tf.constant(texts))


TEXTS = ["w1 w2 w3 w4 w5", "w6 w7", "w8 w9 w10 w11 w12 w13 w14 w15", "w3"]


@pytest.mark.parametrize("dilations", [(1, 2, 4), (1, 2, 4, 8, 16)], ids=["scnn", "mcnn"])
def test_the_dilated_decoder_reads_exactly_its_receptive_field_of_earlier_inputs(dilations):
    """∂h_t/∂x_s is exactly zero for s > t (causal) and for s <= t − R, R = 1 + (k − 1) Σ d; nonzero in between."""
    decoder = decoders.DilatedConvDecoder(channels=64, dilations=dilations, kernel_size=3)
    length = 80
    decoder.build((None, length, 5))
    inputs = tf.random.stateless_normal([1, length, 5], [1, 2])
    receptive_field = decoder.receptive_field
    assert receptive_field == 1 + 2 * sum(dilations)
    t = length - 5
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        output = tf.reduce_sum(decoder(inputs)[0, t])
    reads = np.abs(tape.gradient(output, inputs).numpy()[0]).sum(axis=-1) > 0
    np.testing.assert_array_equal(np.flatnonzero(reads), np.arange(t - receptive_field + 1, t + 1))


def test_the_lstm_decoder_is_causal():
    decoder = decoders.LSTMDecoder(units=8)
    decoder.build((None, 10, 5))
    inputs = tf.random.stateless_normal([1, 10, 5], [3, 4])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        output = tf.reduce_sum(decoder(inputs)[0, 4])
    reads = np.abs(tape.gradient(output, inputs).numpy()[0]).sum(axis=-1) > 0
    np.testing.assert_array_equal(np.flatnonzero(reads), np.arange(5))


@pytest.mark.parametrize("decoder", ["lstm", "scnn"])
def test_one_step_at_a_time_gives_the_features_of_the_whole_sequence(decoder):
    """`start`/`step`, which sampling uses, compute what `call` does on the whole sequence, with weights (biases
    too) as training leaves them, not as initialised: zero biases would hide how the text's start is padded."""
    model = _build(decoder=decoder)
    rng = np.random.default_rng(0)
    model.decoder.set_weights([rng.normal(0.0, 0.3, weight.shape) for weight in model.decoder.get_weights()])
    inputs = tf.random.stateless_normal([3, 20, model.config.embedding_size + model.latent_size], [5, 6])
    whole = model.decoder(inputs)
    state, steps = model.decoder.start(3), []
    for t in range(20):
        features, state = model.decoder.step(state, inputs[:, t])
        steps.append(features)
    np.testing.assert_allclose(tf.stack(steps, axis=1), whole, atol=1e-5)


@pytest.mark.parametrize("decoder", ["lstm", "lcnn"])
def test_a_words_prediction_depends_on_no_later_word(decoder):
    """p(x_t | x_<t) through the model's own shifting (`sequences`): changing the words from t = 4 on changes
    none of the predictions at positions <= 4 (which read words < 4), and changes later ones."""
    model = _build(decoder=decoder, dropout=0.0)
    ids = _ids(model, ["w1 w2 w3 w4 w5 w6 w7 w8"])
    changed = tf.concat([ids[:, :4], _ids(model, ["w20 w21 w22 w23"])[:, :4]], axis=1)

    def logits(words):
        inputs, _, _ = language_model.sequences(words)
        return model.decoder_logits(inputs, tf.zeros([1, model.latent_size])).numpy()[0]

    before, after = logits(ids), logits(changed)
    np.testing.assert_array_equal(before[:5], after[:5])
    assert not np.allclose(before[5:], after[5:])


def test_sequences_predict_each_word_then_eos_from_bos():
    ids = tf.constant([[7, 8, 9, 0, 0], [5, 0, 0, 0, 0]], tf.int64)
    inputs, targets, mask = language_model.sequences(ids)
    begin, end = language_model.BEGIN_ID, language_model.END_ID
    np.testing.assert_array_equal(inputs, [[begin, 7, 8, 9, end, 0], [begin, 5, end, 0, 0, 0]])
    np.testing.assert_array_equal(targets, [[7, 8, 9, end, 0, 0], [5, end, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])


@pytest.mark.parametrize("decoder", ["lstm", "scnn"])
def test_padding_changes_no_likelihood(decoder):
    """The same texts padded further (here to 3 × max_words) have the same log p and word counts."""
    model = _build("zoo.lstm_lm", decoder=decoder)
    ids = _ids(model, TEXTS)
    log_p, words = model.log_likelihood_of(ids)
    longer, longer_words = model.log_likelihood_of(tf.pad(ids, [[0, 0], [0, 2 * ids.shape[1]]]))
    np.testing.assert_allclose(longer, log_p, rtol=1e-6)
    np.testing.assert_array_equal(longer_words, words)
    np.testing.assert_array_equal(words, [6, 3, 9, 2])  # words and <eos> (the third text is cut at 8 words)


def test_perplexity_is_the_corpus_exponent_of_nll_per_word():
    model = _build("zoo.lstm_lm")
    ids = _ids(model, TEXTS)
    log_p, words = model.log_likelihood_of(ids)
    logs = model.test_step({"text": ids})
    np.testing.assert_allclose(logs["perplexity"], np.exp(-np.sum(log_p) / np.sum(words)), rtol=1e-5)
    np.testing.assert_allclose(logs["nll"], -np.mean(log_p), rtol=1e-5)


def test_the_bound_at_k_1_is_the_elbo_and_its_mean_is_reconstruction_minus_the_closed_form_kl():
    """L_1 = log p(x | z) + log p(z) − log q(z | x) for the one z drawn; over many z its mean is
    E_q[log p(x | z)] − KL(q ‖ p), the KL in closed form."""
    model = _build()
    ids = _ids(model, TEXTS)
    posterior = model.posterior(ids)
    seed = tf.constant([3, 4], tf.int64)
    bound = model.importance_bound(ids, posterior, 1, seed)
    first_chunk = tf.random.experimental.stateless_fold_in(seed, tf.constant(0, tf.int64))  # chunk 0's noise
    z = distributions.reparameterize(posterior, tf.random.stateless_normal([1, 4, model.latent_size], first_chunk))
    reconstruction, _ = model.log_likelihood_of(ids, z)
    log_weight = reconstruction[0] + model.prior.log_prob(z[0]) - posterior.log_prob(z[0])
    np.testing.assert_allclose(bound, log_weight, rtol=1e-5)

    samples = 4000
    many = distributions.reparameterize(posterior, tf.random.stateless_normal([samples, 4, model.latent_size], [7, 8]))
    reconstructions, _ = model.log_likelihood_of(ids, many)
    kl = distributions.kl_between_gaussians(posterior, model.prior)
    log_weights = reconstructions + model.prior.log_prob(many) - posterior.log_prob(many)
    error = 4 * np.std(log_weights, axis=0) / np.sqrt(samples)
    assert np.all(np.abs(np.mean(log_weights, axis=0) - (np.mean(reconstructions, axis=0) - kl)) < error)


def test_more_importance_samples_tighten_the_bound():
    model = _build()
    ids = _ids(model, TEXTS)
    posterior = model.posterior(ids)
    one = np.mean([model.importance_bound(ids, posterior, 1, tf.constant([s, 0], tf.int64)) for s in range(50)], 0)
    fifty = model.importance_bound(ids, posterior, 50, tf.constant([99, 0], tf.int64))
    assert np.all(fifty > one)


def test_kl_annealing_rises_linearly_to_1_on_schedule_and_training_uses_it():
    start, steps = 0.01, 100
    weights = [float(text_vae.kl_weight(step, start, steps)) for step in (0, 50, 100, 250)]
    np.testing.assert_allclose(weights, [0.01, 0.505, 1.0, 1.0], rtol=1e-6)
    assert float(text_vae.kl_weight(0, start, 0)) == 1.0

    model = _build(kl_weight_start=0.25, kl_annealing_steps=4)
    model.compile_for_training(steps_per_epoch=2)
    batch = {"text": _ids(model, TEXTS)}
    for step, expected in enumerate([0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0]):
        model.reset_metrics()
        assert float(model.train_step(batch)["kl_weight"]) == pytest.approx(expected), step
    model.reset_metrics()
    assert float(model.test_step(batch)["kl_weight"]) == 1.0  # the test metrics are the bound itself


def test_a_lower_temperature_approaches_the_greedy_text_and_bad_temperatures_are_refused():
    model = _build(decoder="scnn")
    seeds = tf.constant([1, 2, 3], tf.int64)
    latent = tf.random.stateless_normal([3, model.latent_size], [1, 1])
    sampled = model.generate(3, latent=latent, seeds=seeds, temperature=tf.fill([3], 1e-4))
    np.testing.assert_array_equal(sampled, model.generate(3, latent=latent))
    served = dict(model.serving_signatures())["sample_text"][0]
    for bad, message in ((0.0, "temperature must be > 0"), (np.nan, "must be finite")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            served(seeds, tf.constant([1.0, bad, 1.0]))


def test_samples_never_hold_padding_or_bos_and_end_at_eos():
    model = _build("zoo.lstm_lm")
    ids = model.generate(64, seeds=tf.range(64, dtype=tf.int64), temperature=tf.fill([64], 3.0)).numpy()
    assert not np.any(ids == language_model.BEGIN_ID)
    for row in ids:
        ended = np.flatnonzero(row == language_model.END_ID)
        words = row[:ended[0]] if len(ended) else row
        assert np.all(words != 0), row  # padding only after <eos>
        assert len(words) <= model.config.max_words + 1


def test_the_vocabulary_round_trip_reads_unknown_words_as_unk():
    words = ("w1", "w2", "w3", "w4", "w5", ",", "!", "(", ")", "don't")
    spec = zoo.get("zoo.lstm_lm")
    model = spec.build(spec.make_tiny_config(max_words=12).with_vocabulary(words))
    ids = _ids(model, ["W1 w2, w3!", "w4 (zebra) don't w5", "\"w1\""])
    np.testing.assert_array_equal(model.tokenizer.words_of(ids).numpy().astype(str),
                                  ["w1 w2 , w3 !", f"w4 ( {text.UNKNOWN} ) don't w5", f"{text.UNKNOWN} w1 {text.UNKNOWN}"])
    assert model.tokenizer.vocabulary == (text.BEGIN, text.END, *words)


def test_served_texts_longer_than_max_words_are_refused():
    model = _build("zoo.lstm_lm")
    served = model.serving_signatures()["log_likelihood"][0]
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at most {model.config.max_words} words"):
        served(tf.constant(["w1 " * (model.config.max_words + 1)]))
    log_p = served(tf.constant(["w1 w2", "", "unheard words"]))
    assert np.all(np.isfinite(log_p["log_likelihood"])) and list(log_p["words"]) == [3, 1, 3]


def test_encoder_init_copies_a_trained_language_models_embedding_and_lstm(tmp_path):
    language = _build("zoo.lstm_lm", lstm_units=16, embedding_size=8)
    path = tmp_path / "model.keras"
    language.save(path)
    vae = _build(encoder_units=16, embedding_size=8, encoder_init=str(path))
    vae.compile_for_training(steps_per_epoch=1)
    for copied, trained in ((vae.encoder_embedding, language.embedding), (vae.encoder_lstm, language.decoder.lstm)):
        for left, right in zip(copied.get_weights(), trained.get_weights()):
            np.testing.assert_array_equal(left, right)

    mismatched = _build(encoder_units=32, embedding_size=8, encoder_init=str(path))
    with pytest.raises(zoo.ConfigError, match="lstm_units=16 differ from encoder_units=32"):
        mismatched.compile_for_training(steps_per_epoch=1)
    missing = _build(encoder_units=16, embedding_size=8, encoder_init=str(tmp_path / "none.keras"))
    with pytest.raises(zoo.ConfigError, match="does not load"):
        missing.compile_for_training(steps_per_epoch=1)


def test_configs_refuse_unknown_decoders_and_empty_vocabularies():
    with pytest.raises(zoo.ConfigError, match="decoder must be one of lstm, dilated_cnn, scnn"):
        zoo.get("zoo.text_vae").make_config(decoder="cnn")
    with pytest.raises(zoo.ConfigError, match="needs its dilations"):
        zoo.get("zoo.text_vae").make_config(decoder="dilated_cnn")
    with pytest.raises(zoo.ConfigError, match="vocabulary is empty"):
        zoo.get("zoo.lstm_lm").build(zoo.get("zoo.lstm_lm").make_tiny_config())
    assert zoo.get("zoo.text_vae").make_config(decoder="vlcnn").decoder_dilations == (1, 2, 4, 8, 16) * 3


def test_a_text_vae_reloads_from_a_keras_file_with_the_same_texts(tmp_path):
    model = _build(decoder="mcnn")
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    seeds = tf.constant([4, 5, 6], tf.int64)
    np.testing.assert_array_equal(reloaded.sample(seeds), model.sample(seeds))
    ids = _ids(model, TEXTS)
    np.testing.assert_array_equal(reloaded.reconstruct(ids), model.reconstruct(ids))
