"""python -m training.fit on texts, end to end: a language model, a text VAE whose encoder starts from it
("+init"), TensorBoard text summaries, and training.evaluate's −L_k, KL, perplexity and active units."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing import event_accumulator

import synthetic_texts
from training import evaluate, fit

TINY = ["--epochs", "2", "--batch_size", "16", "--steps_per_epoch", "5", "--set", "vocabulary_size=60",
        "--set", "max_words=12", "--set", "embedding_size=8", "--set", "lstm_units=16", "--verbose", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, run_main):
    root = tmp_path_factory.mktemp("text_runs")
    language = run_main(fit.main, ["zoo.lstm_lm", "--workdir", root / "lm", "--dataset", synthetic_texts.folder(),
                                   *TINY])
    assert language.returncode == 0, language.stderr
    vae = run_main(fit.main, ["zoo.text_vae", "--workdir", root / "vae", "--dataset", synthetic_texts.folder(),
                              *TINY, "--set", "decoder=scnn", "--set", "cnn_channels=16", "--set", "latent_size=4",
                              "--set", "encoder_units=16", "--set", "kl_annealing_steps=5",
                              "--set", f"encoder_init={root / 'lm' / 'model.keras'}"])
    return root, language, vae


def test_the_language_model_and_the_vae_train_and_the_vae_exports_text_samples(runs):
    root, language, vae = runs
    assert "vocabulary: 60 words, counted from the training texts" in language.stdout
    assert vae.returncode == 0, vae.stderr
    lines = (root / "vae" / "samples.txt").read_text().splitlines()
    assert len(lines) == 16
    assert "perplexity" in vae.stdout and "kl" in vae.stdout


def test_an_encoder_init_that_does_not_load_is_one_clear_error(runs, run_main, tmp_path):
    root, _, _ = runs
    result = run_main(fit.main, ["zoo.text_vae", "--workdir", tmp_path / "vae", "--dataset", synthetic_texts.folder(),
                                 *TINY, "--set", "encoder_init=nowhere/model.keras"])
    assert result.returncode == 2
    assert "encoder_init='nowhere/model.keras' does not load" in result.stderr and "Traceback" not in result.stderr


def test_tensorboard_holds_samples_reconstructions_and_an_interpolation_as_text(runs):
    root, _, _ = runs
    (events,) = (root / "vae" / "tensorboard" / "images").glob("events.out.tfevents.*")
    accumulator = event_accumulator.EventAccumulator(str(events), size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    assert {"samples", "reconstructions", "interpolation"} <= tags
    assert [event.step for event in accumulator.Tensors("interpolation")] == [1, 2]


def test_evaluate_reports_the_importance_weighted_nll_kl_perplexity_and_active_units(runs, run_main):
    root, _, _ = runs
    result = run_main(evaluate.main, [root / "vae", "--k", "20", "--max_examples", "30"])
    assert result.returncode == 0, result.stderr
    logs = json.loads(result.stdout.splitlines()[-1])
    assert logs["k"] == 20 and logs["examples"] == 30
    assert {"nll", "kl", "elbo", "perplexity", "active_units"} <= set(logs)
    assert logs["nll"] <= -logs["elbo"] + 1.0  # −L_20 below −L_1 on the whole, up to the noise of 30 texts
