"""training.evaluate: a trained run's test-set bounds as one JSON line, logged to evaluation.jsonl and TensorBoard."""

import json
import math
import shutil

import pytest
import tensorflow as tf

from training import data, evaluate

DOCUMENTED_KEYS = {"model", "split", "k", "examples", "epochs", "nll", "elbo", "active_units"}


def test_evaluation_prints_one_json_line_with_the_documented_keys(evaluations, trained_run):
    for k, printed in zip((1, 20), evaluations.printed):
        lines = printed.splitlines()
        assert len(lines) == 1, printed
        result = json.loads(lines[0])
        assert DOCUMENTED_KEYS <= set(result)
        assert result["model"] == trained_run.spec.name
        assert result["split"] == f"test[:{evaluations.examples}]"
        assert (result["k"], result["examples"], result["epochs"]) == (k, evaluations.examples, 1)
        assert math.isfinite(result["nll"]) and math.isfinite(result["elbo"])
        assert len(result["active_units"]) == trained_run.stochastic_layers
        for active, units in zip(result["active_units"], trained_run.model.latent_units):
            assert 0 <= active <= units


def test_one_sample_bound_is_the_elbo(evaluations):
    """L_1 is the ELBO on the same samples (Burda et al. 2016, Sec. 3), so nll = −elbo at k = 1."""
    result = evaluations.results[1]
    assert result["nll"] == pytest.approx(-result["elbo"], abs=1e-3)


def test_importance_weighted_bound_is_never_below_the_elbo_of_the_same_samples(evaluations):
    """log (1/k) Σ w_j ≥ (1/k) Σ log w_j (Jensen), so nll ≤ −elbo for every k, up to the printed rounding."""
    for result in evaluations.results.values():
        assert result["nll"] <= -result["elbo"] + 1e-3


def test_more_importance_samples_tighten_the_bound(evaluations):
    """E[L_k] does not decrease with k (Burda et al. 2016, Theorem 1), so the nll estimate does not grow."""
    assert evaluations.results[20]["nll"] <= evaluations.results[1]["nll"] + 0.05


def test_each_evaluation_appends_its_line_to_evaluation_jsonl(evaluations):
    logged = (evaluations.workdir / "evaluation.jsonl").read_text().splitlines()
    assert logged == [printed.strip() for printed in evaluations.printed]


def test_evaluation_is_summarised_for_tensorboard(evaluations):
    files = sorted((evaluations.workdir / "tensorboard" / "evaluation").glob("events.out.tfevents.*"))
    assert files
    tagged = {
        (value.tag, event.step)
        for file in files
        for event in tf.compat.v1.train.summary_iterator(str(file))
        for value in event.summary.value
    }
    assert {("test/nll_k1", 1), ("test/elbo_k1", 1), ("test/nll_k20", 1), ("test/elbo_k20", 1)} <= tagged


def test_module_cli_prints_one_json_line_and_logs_it(run_python, train, tmp_path):
    workdir = shutil.copytree(train("iwae").workdir, tmp_path / "iwae")
    result = run_python(["-m", "training.evaluate", workdir, "--k", "1", "--max_examples", "40", "--no_download"])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    printed = json.loads(lines[0])
    assert DOCUMENTED_KEYS <= set(printed)
    assert (printed["model"], printed["split"], printed["k"], printed["examples"]) == ("zoo.iwae", "test[:40]", 1, 40)
    assert len(printed["active_units"]) == 1  # zoo.iwae here has one stochastic layer
    assert printed["nll"] == pytest.approx(-printed["elbo"], abs=1e-3)
    assert (workdir / "evaluation.jsonl").read_text().splitlines() == lines
    assert list((workdir / "tensorboard" / "evaluation").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("flag", ["--k", "--max_examples"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_nonpositive_counts_exit_2_with_a_message(run_python, tmp_path, flag, value):
    result = run_python(["-m", "training.evaluate", tmp_path, flag, value], timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --k and --max_examples must be positive integers")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_workdir_without_run_json_exits_2_with_the_fix(run_main, tmp_path):
    result = run_main(evaluate.main, [tmp_path, "--k", "1", "--no_download"])
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path} is not a training workdir (run.json is missing)")
    assert "python -m training.fit" in result.stderr
    assert result.stdout == "" and not (tmp_path / "evaluation.jsonl").exists()


def test_large_k_is_evaluated_in_memory_bounded_batches(run_main, workdir_copy, monkeypatch):
    batch_sizes = []
    load = data.load

    def recording_load(spec, role, batch_size, **kwargs):
        batch_sizes.append(batch_size)
        return load(spec, role, batch_size, **kwargs)

    monkeypatch.setattr(data, "load", recording_load)
    result = run_main(evaluate.main, [workdir_copy, "--k", 5000, "--max_examples", 2, "--no_download"])
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["k"], printed["examples"]) == (5000, 2)
    assert math.isfinite(printed["nll"]) and math.isfinite(printed["elbo"])
    assert batch_sizes and all(size * 5000 <= evaluate.SAMPLES_PER_BATCH for size in batch_sizes)


def test_per_layer_metrics_are_grouped_in_layer_order():
    logs = {"active_units_10": 1, "active_units_2": 5, "nll": 90.0, "active_units_1": 3}
    assert evaluate.group_per_layer(logs) == {"active_units": [3, 5, 1], "nll": 90.0}
