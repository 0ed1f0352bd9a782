"""zoo.align_draw: the caption encoder, the alignment, the learned prior, the bound, and captions served as text."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

import zoo
from training import evaluate, fit
from zoo.common import bounds, text
from zoo.common.stateless import per_example_normal_rows
from zoo.draw import align_draw

SEEDS = tf.constant([0, 1, 2, 3], tf.int64)
CAPTIONS = tf.constant(["the digit 3 is at the top of the digit 5 .", "the digit 1 is at the bottom left of the image .",
                        "the digit 0 .", "the digit 9 is on the right of the digit 4 ."])


def tiny_model(**overrides) -> align_draw.AlignDRAW:
    return align_draw.build(zoo.get("zoo.align_draw").make_tiny_config(**overrides))


def binary_images(config, count, seed=0):
    return tf.constant(np.random.default_rng(seed).random((count, *config.image_shape)) < 0.4, tf.float32)


def language_features(model, captions):
    ids = model.tokenizer(tf.constant(captions))
    return model.caption_encoder(ids, text.lengths_of(ids))


def test_a_caption_s_features_do_not_depend_on_the_other_captions_of_the_batch_or_on_padding():
    """The backward LSTM reads each caption's own words in reverse (not the batch reversed, not padding first)."""
    model = tiny_model()
    caption = "the digit 3 is at the top of the digit 5 ."
    alone = language_features(model, [caption])[0]
    for others in (["the digit 0 ."], ["the digit 1 is at the bottom left of the image .", "the digit 7 ."]):
        np.testing.assert_allclose(language_features(model, [*others, caption])[-1], alone, atol=1e-6)


def test_the_backward_half_of_the_first_word_reads_the_last_word_and_the_forward_half_does_not():
    model = tiny_model()
    units = model.config.language_units
    first, second = language_features(model, ["the digit 3 .", "the digit 7 ."])
    assert np.allclose(first[0, :units], second[0, :units])          # →h_1 has read "the" only
    assert not np.allclose(first[0, units:], second[0, units:])      # ←h_1 has read the whole caption
    assert np.allclose(first[3, units:], second[3, units:])          # ←h_4 has read "." only


def test_alignment_weights_sum_to_one_over_the_words_and_are_zero_on_padding():
    model = tiny_model()
    _, weights = model.draw_from_caption(CAPTIONS, SEEDS)
    weights = weights.numpy()  # [N, T, max_words]
    lengths = [len(caption.split()) for caption in CAPTIONS.numpy().astype(str)]
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    for row, length in zip(weights, lengths):
        assert np.all(row[:, length:] == 0.0) and np.all(row[:, :length] > 0.0)


def test_padding_gets_no_gradient_through_the_alignment():
    model = tiny_model()
    ids = model.tokenizer(tf.constant(["the digit 3 ."]))
    lengths = text.lengths_of(ids)
    language = model.caption_encoder(ids, lengths)
    context = {"mask": tf.sequence_mask(lengths, model.config.max_words)}
    with tf.GradientTape() as tape:
        tape.watch(language)
        context.update(language=language, projected_language=model.alignment.language(language))
        sentence, _ = model._decoder_input(tf.zeros([1, model.config.latent_units]),
                                           tf.random.normal([1, model.config.decoder_units]), context)
        total = tf.reduce_sum(sentence)
    gradient = tape.gradient(total, language).numpy()[0]
    assert np.all(gradient[4:] == 0.0) and np.any(gradient[:4] != 0.0)


def test_p_z1_is_the_standard_normal_and_later_priors_depend_on_the_generator_state():
    model = tiny_model()
    state = tf.random.normal([2, model.config.decoder_units], seed=1)
    first = model._step_prior(0, state, None).distribution
    np.testing.assert_array_equal(first.loc, 0.0)
    np.testing.assert_array_equal(first.scale, 1.0)
    later = model._step_prior(1, state, None).distribution
    assert later.loc.shape == (2, model.config.latent_units) and not np.allclose(later.loc[0], later.loc[1])
    assert np.all(later.scale.numpy() > np.exp(-1.0)) and np.all(later.scale.numpy() < np.exp(1.0))  # tanh-bounded


def test_the_first_sampled_step_draws_z1_from_n01_whatever_the_caption():
    model = tiny_model()
    seeds = tf.zeros([2], tf.int64)
    first = model.draw_from_caption(tf.constant(["the digit 3 .", "the digit 8 is at the top of the digit 2 ."]),
                                    seeds)[0][:, 0].numpy()
    # Step 1 writes from h^gen_1 = LSTM(0, [z_1, s_1]): the caption reaches the canvas only through s_1.
    assert not np.allclose(first[0], first[1])
    noise = model._prior_noise(seeds)
    np.testing.assert_array_equal(noise[0], noise[1])


def test_log_likelihood_with_one_sample_is_the_elbo_of_the_same_noise():
    model = tiny_model()
    images = binary_images(model.config, 4)
    result = model.log_likelihood(images, CAPTIONS, tf.ones([4], tf.int64), SEEDS).numpy()
    rows = per_example_normal_rows(SEEDS, 0, 1, model.config.glimpses * model.config.latent_units, stream=0)
    noise = tf.reshape(tf.transpose(rows, [1, 0, 2]), [1, 4, model.config.glimpses, model.config.latent_units])
    log_weights = model._importance_terms(images, noise, model._context({"caption": model.tokenizer(CAPTIONS)}))["log_weights"]
    np.testing.assert_allclose(result, bounds.elbo(log_weights), rtol=1e-5)


def test_closed_form_kl_to_the_learned_prior_is_the_expected_log_ratio_over_the_sequence():
    model = tiny_model(latent_units=3)
    images = binary_images(model.config, 1)
    noise = tf.random.stateless_normal([20_000, 1, model.config.glimpses, 3], seed=[5, 6])
    terms = model._importance_terms(images, noise, model._context({"caption": model.tokenizer(CAPTIONS[:1])}))
    terms = {name: value.numpy()[:, 0] for name, value in terms.items()}
    difference = (terms["reconstruction"] - terms["log_weights"]) - terms["kl"]
    assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(len(difference))


def test_the_caption_changes_the_samples_and_the_bound():
    model = tiny_model()
    images = binary_images(model.config, 2)
    seeds = tf.constant([7, 7], tf.int64)
    captions = tf.constant(["the digit 3 .", "the digit 8 is at the top right of the image ."])
    samples = model.sample_from_caption(captions, seeds).numpy()
    assert not np.allclose(samples[0], samples[1])
    swapped = model.log_likelihood(images, captions[::-1], tf.fill([2], 2), seeds)
    assert not np.allclose(model.log_likelihood(images, captions, tf.fill([2], 2), seeds), swapped)


def test_one_training_step_changes_the_language_model_and_alignment_with_finite_metrics():
    model = tiny_model()
    model.compile_for_training(steps_per_epoch=1)
    conditional = [*model.caption_encoder.trainable_weights, *model.alignment.trainable_weights,
                   *model.step_prior.trainable_weights]
    before = [weight.numpy().copy() for weight in conditional]
    logs = model.train_step({"image": binary_images(model.config, 4), "caption": model.tokenizer(CAPTIONS)})
    assert all(np.isfinite(float(value)) for value in logs.values())
    assert all(not np.allclose(old, new.numpy()) for old, new in zip(before, conditional))


@pytest.mark.parametrize("caption, message", [
    ("the digit 3 is purple .", r"(?s)outside the vocabulary of this model.*purple"),
    ("", "at least one word"),
])
def test_the_caption_signatures_refuse_captions_the_model_cannot_read(caption, message):
    model = tiny_model()
    signature, specs = model.serving_signatures()["sample_from_caption"]
    traced = tf.function(signature, input_signature=specs)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        traced(tf.constant(["the digit 3 .", caption]), tf.constant([0, 1], tf.int64))


def test_sample_draws_the_summary_captions_in_turn():
    model = tiny_model()
    count = len(model.config.summary_captions)
    seeds = tf.constant([2, 2 + count], tf.int64)
    by_caption = model.sample_from_caption(tf.constant([model.config.summary_captions[2]] * 2), seeds)
    np.testing.assert_allclose(model.sample(seeds), by_caption, atol=1e-6)


def test_the_data_pipeline_gives_the_word_ids_of_the_model_s_own_tokenizer():
    from training import data

    model = tiny_model()
    spec = align_draw.dataset(model.config)
    ids = next(iter(data.load(spec, "eval", 5, max_examples=5, download=False)[0]))["caption"]
    texts = next(iter(data.load(dataclasses.replace(spec, vocabulary=()), "eval", 5, max_examples=5,
                                download=False)[0]))["caption"]
    assert ids.dtype == tf.int64 and texts.dtype == tf.string
    np.testing.assert_array_equal(ids, model.tokenizer(texts))
    assert not np.any(ids.numpy() == text.UNKNOWN_ID)


def test_every_word_of_the_mnist_captions_is_in_the_default_vocabulary():
    from training import captions

    assert set(captions.WORDS) == set(align_draw.MNIST_CAPTION_WORDS)
    assert align_draw.AlignDRAWConfig().max_words == captions.MAX_WORDS
    assert text.Tokenizer(align_draw.MNIST_CAPTION_WORDS, captions.MAX_WORDS).size == 24


def test_the_summary_captions_list_held_in_captions_then_held_out_ones():
    from training import captions

    held_out = {f"the digit {subject} is {relation} " + ("the image" if other is None else f"the digit {other}") + " ."
                for relation, subject, other in captions.HELD_OUT}
    summary = align_draw.SUMMARY_CAPTIONS
    assert not held_out & set(summary[:4]) and set(summary[4:]) <= held_out


def test_cli_fit_then_evaluate_reports_the_bound_and_caption_accuracy_held_in_and_held_out(
        run_main, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    tiny = [part for flag in ("glimpses=2", "encoder_units=8", "decoder_units=8", "latent_units=4",
                              "language_units=4", "alignment_units=6") for part in ("--set", flag)]
    workdir = tmp_path / "run"
    trained = run_main(fit.main, ["zoo.align_draw", "--workdir", workdir, *tiny, "--max_examples", "40",
                                  "--batch_size", "20", "--no_download", "--verbose", "2"])
    assert trained.returncode == 0, trained.stderr[-4000:]
    assert "dataset: mnist_captions" in trained.stdout and list(workdir.rglob("saved_model.pb"))
    evaluation = run_main(evaluate.main, [workdir, "--k", "3", "--max_examples", "30", "--classifier_epochs", "1",
                                          "--classifier_max_examples", "500", "--no_download"])
    assert evaluation.returncode == 0, evaluation.stderr[-4000:]
    result = json.loads(evaluation.stdout.strip().splitlines()[-1])
    assert result["k"] == 3 and result["examples"] == 30 and result["nll"] > 0
    for name in ("caption_accuracy_held_in", "caption_accuracy_held_out", "caption_accuracy_real"):
        assert 0.0 <= result[name] <= 1.0, name


def test_a_config_without_vocabulary_refuses_to_build_and_names_the_fix():
    config = zoo.get("zoo.align_draw_coco").make_tiny_config()
    assert config.vocabulary == () and zoo.get("zoo.align_draw_coco").dataset(config).count_vocabulary
    with pytest.raises(zoo.ConfigError, match="training.fit` counts it, or build from config.with_vocabulary"):
        align_draw.build(config)


def test_with_vocabulary_keeps_the_counted_words_in_order_then_adds_the_summary_captions_missing_ones():
    config = zoo.get("zoo.align_draw").make_tiny_config(summary_captions=("A red bus .", "the bus is red ."))
    assert config.with_vocabulary(("the", "bus", ".")).vocabulary == ("the", "bus", ".", "a", "red", "is")


def test_cli_fit_of_coco_counts_the_vocabulary_of_the_training_captions_once_and_resumes_with_it(run_main, tmp_path):
    """zoo.align_draw_coco on the suite's COCO stand-in: the words are counted before the model is built,
    kept in run.json, and a resumed run reads them from there instead of counting again."""
    tiny = [part for flag in ("glimpses=2", "encoder_units=8", "decoder_units=8", "latent_units=4",
                              "language_units=4", "alignment_units=6", "read_size=3", "write_size=3")
            for part in ("--set", flag)]
    workdir = tmp_path / "run"

    def fit_coco(*flags):
        result = run_main(fit.main, ["zoo.align_draw_coco", "--workdir", workdir, *tiny, "--max_examples", "8",
                                     "--batch_size", "20", "--no_download", "--verbose", "2", *flags])
        assert result.returncode == 0, result.stderr[-4000:]
        return result.stdout

    first = fit_coco("--epochs", "1", "--no_export")
    vocabulary = json.loads((workdir / "run.json").read_text())["config"]["vocabulary"]
    counted = [word for word in vocabulary if word in {"a", "shape", ".", "of", "kind"}]
    assert f"vocabulary: {len(vocabulary)} words, counted from the training captions of coco_captions" in first
    assert "dataset: coco_captions (binarize: False), 40 train" in first  # 8 images, five captions each
    assert f'"vocabulary": "<{len(vocabulary)} items: ' in first  # printed abridged, kept whole in run.json
    assert counted and {"stop", "sign", "elephants"} <= set(vocabulary)  # counted words, then the summary's
    resumed = fit_coco("--resume", "--epochs", "2", "--no_export")  # the contract suite exports the entry
    assert "vocabulary:" not in resumed and "(resuming after epoch 1)" in resumed
    assert json.loads((workdir / "run.json").read_text())["config"]["vocabulary"] == vocabulary
