"""training.evaluate: a trained run's test-set metrics (bounds, sample quality) as one JSON line, logged to
evaluation.jsonl and TensorBoard."""

import dataclasses
import json
import math
import shutil

import keras
import pytest
import tensorflow as tf

from training import data, evaluate, fit
from zoo.common import observation

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


# Sample quality (training.sample_quality): tiny classifier, VAE samples.

SAMPLE_QUALITY_KEYS = {"fid", "classifier_score", "modes_covered", "class_kl", "fid_floor", "classifier_accuracy",
                       "feature_extractor", "num_samples"}
TINY_CLASSIFIER = ["--classifier_max_examples", "2000", "--classifier_epochs", "1"]
SAMPLE_QUALITY_ARGS = ["--sample_quality", "--num_samples", "200", "--max_examples", "200", "--k", "1",
                       *TINY_CLASSIFIER, "--no_download"]


@pytest.fixture(scope="module")
def zoo_cache_dir(tmp_path_factory):
    """ZOO_CACHE_DIR for this module: the tiny classifier is trained at most once here, never in ~/.cache."""
    cache = tmp_path_factory.mktemp("zoo_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="module")
def sample_quality_run(train, run_main, zoo_cache_dir, tmp_path_factory):
    """`training.evaluate COPY --sample_quality …` on a copy of the zoo.vae run, twice: (workdir, [CliResult] * 2)."""
    workdir = shutil.copytree(train("vae2").workdir, tmp_path_factory.mktemp("sample_quality") / "vae2")
    return workdir, [run_main(evaluate.main, [workdir, *SAMPLE_QUALITY_ARGS]) for _ in range(2)]


def test_sample_quality_adds_its_metrics_to_the_likelihood_line(sample_quality_run):
    workdir, (first, _) = sample_quality_run
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 1, first.stdout
    result = json.loads(lines[0])
    assert DOCUMENTED_KEYS | SAMPLE_QUALITY_KEYS <= set(result)
    assert (result["model"], result["k"], result["examples"]) == ("zoo.vae", 1, 200)
    assert (result["feature_extractor"], result["num_samples"]) == ("classifier", 200)
    assert 0.0 <= result["fid_floor"] < result["fid"]  # a barely trained VAE is far from the data
    assert 1.0 <= result["classifier_score"] <= 10.0
    assert 0 <= result["modes_covered"] <= 10 and 0.0 <= result["class_kl"] <= math.log(10) + 1e-4
    assert 0.1 < result["classifier_accuracy"] <= 1.0
    assert (workdir / "evaluation.jsonl").read_text().splitlines()[0] == lines[0]


def test_sample_quality_is_reproducible_and_the_classifier_is_trained_once(sample_quality_run, zoo_cache_dir):
    """Seeds 0 … N−1 and a cached classifier: a second evaluation prints the same line without training."""
    _, (first, second) = sample_quality_run
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    assert "training the mnist classifier" in first.stderr and "training the" not in second.stderr
    assert len(list((zoo_cache_dir / "classifiers").glob("mnist_*.keras"))) == 1


def test_sample_quality_is_summarised_for_tensorboard(sample_quality_run):
    workdir, _ = sample_quality_run
    tags = {value.tag
            for file in (workdir / "tensorboard" / "evaluation").glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(file))
            for value in event.summary.value}
    expected = {f"test/{name}_classifier" for name in ("fid", "classifier_score", "modes_covered", "class_kl",
                                                       "fid_floor", "classifier_accuracy")}
    assert expected | {"test/nll_k1"} <= tags


def test_likelihood_models_report_no_sample_quality_by_default(evaluations):
    for result in evaluations.results.values():
        assert not SAMPLE_QUALITY_KEYS & set(result)


def test_models_declaring_sample_quality_report_it_with_their_test_metrics_and_no_k(
        train, run_main, zoo_cache_dir, tmp_path, monkeypatch):
    """As a GAN entry does: evaluation = ("sample_quality",), no --sample_quality flag needed."""
    from export import runs

    load = runs.load_trained_model

    def as_sample_quality_model(workdir):
        spec, *rest = load(workdir)
        return (dataclasses.replace(spec, evaluation=("sample_quality",)), *rest)

    monkeypatch.setattr(runs, "load_trained_model", as_sample_quality_model)
    workdir = shutil.copytree(train("vae2").workdir, tmp_path / "vae2")
    result = run_main(evaluate.main, [workdir, "--num_samples", "50", "--max_examples", "50", *TINY_CLASSIFIER,
                                      "--no_download"])
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert "k" not in printed and SAMPLE_QUALITY_KEYS <= set(printed)
    assert math.isfinite(printed["loss"]) and printed["examples"] == 50


def test_inception_features_give_fid_and_inception_score_without_mode_coverage(train, run_main, tmp_path):
    weights = tmp_path / "inception.weights.h5"
    keras.applications.InceptionV3(weights=None, include_top=True).save_weights(weights)  # random, not ImageNet
    workdir = shutil.copytree(train("vae2").workdir, tmp_path / "vae2")
    result = run_main(evaluate.main, [workdir, "--sample_quality", "--feature_extractor", "inception",
                                      "--inception_weights", weights, "--num_samples", "4", "--max_examples", "4",
                                      "--k", "1", "--no_download"])
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["feature_extractor"], printed["num_samples"]) == ("inception", 4)
    assert printed["modes_covered"] is None and printed["class_kl"] is None and printed["classifier_accuracy"] is None
    assert printed["fid"] >= 0.0 and 1.0 <= printed["classifier_score"] <= 4.0  # at most N for N samples


def test_unreadable_inception_weights_exit_2_naming_the_flag_and_where_to_get_the_file(train, run_main, tmp_path):
    weights = tmp_path / "inception.weights.h5"
    weights.write_bytes(b"not an HDF5 file")
    result = run_main(evaluate.main, [train("vae2").workdir, "--sample_quality", "--feature_extractor", "inception",
                                      "--inception_weights", weights, "--no_download"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: --inception_weights: cannot load Inception-v3 weights from {weights}")
    assert 'keras.applications.InceptionV3(weights="imagenet")' in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--num_samples", "1"], "error: --num_samples must be at least 2"),
    (["--classifier_epochs", "0"], "error: --classifier_epochs and --classifier_max_examples must be positive"),
    (["--classifier_max_examples", "-1"], "error: --classifier_epochs and --classifier_max_examples must be positive"),
    (["--feature_extractor", "inception"], "error: --feature_extractor inception needs --inception_weights PATH"),
    (["--feature_extractor", "inception", "--inception_weights", "/no/such.h5"],
     "error: --inception_weights /no/such.h5: no such file"),
    (["--inception_weights", "/no/such.h5"], "error: --inception_weights is used only with --feature_extractor"),
    (["--feature_extractor", "inception", "--inception_weights", "/no/such.h5", "--classifier_epochs", "1"],
     "error: --classifier_epochs and --classifier_max_examples train the classifier"),
])
def test_bad_sample_quality_flags_exit_2_with_the_fix(run_main, tmp_path, flags, message):
    result = run_main(evaluate.main, [tmp_path, "--sample_quality", *flags])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message)
    if "inception" in message and "needs" in message:
        assert 'keras.applications.InceptionV3(weights="imagenet")' in result.stderr


def test_sample_quality_flags_on_a_likelihood_model_need_sample_quality(train, run_main):
    result = run_main(evaluate.main, [train("vae2").workdir, "--num_samples", "100", "--no_download"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --num_samples: sample-quality flags, but zoo.vae measures only likelihood")
    assert "add --sample_quality" in result.stderr


def test_sample_quality_needs_four_real_images(train, run_main, tmp_path):
    workdir = shutil.copytree(train("vae2").workdir, tmp_path / "vae2")
    result = run_main(evaluate.main, [workdir, "--sample_quality", "--max_examples", "3", "--no_download"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: sample quality compares two halves of the real images")
    assert not (workdir / "evaluation.jsonl").exists()


def test_the_repeating_train_split_is_evaluated_in_one_pass(run_main, workdir_copy):
    result = run_main(evaluate.main, [workdir_copy, "--k", "1", "--split", "train", "--max_examples", "30",
                                      "--batch_size", "10", "--no_download"])
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["split"], printed["examples"]) == ("train[:30]", 30)


def test_exact_likelihood_model_reports_nll_and_bits_per_dim_without_k(run_main, tmp_path):
    """zoo.pixelcnn declares "exact_likelihood": its test metrics as they are, no importance samples."""
    workdir = tmp_path / "pixelcnn"
    tiny = [flag for assignment in ("filters=4", "layers=1", "output_filters=8") for flag in ("--set", assignment)]
    trained = run_main(fit.main, ["zoo.pixelcnn", "--workdir", workdir, "--max_examples", "200", "--batch_size", "20",
                                  "--steps_per_epoch", "2", "--validation_steps", "1", "--epochs", "1",
                                  "--no_download", *tiny])
    assert trained.returncode == 0, trained.stderr[-3000:]

    result = run_main(evaluate.main, [workdir, "--max_examples", "40", "--batch_size", "20", "--no_download"])
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert "k" not in printed
    assert (printed["model"], printed["split"], printed["examples"], printed["epochs"]) == (
        "zoo.pixelcnn", "test[:40]", 40, 1)
    assert math.isfinite(printed["nll"]) and printed["loss"] == printed["nll"]
    assert printed["bits_per_dim"] == pytest.approx(printed["nll"] / (28 * 28 * math.log(2.0)), abs=1e-4)
    tagged = {
        value.tag
        for file in (workdir / "tensorboard" / "evaluation").glob("events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(str(file))
        for value in event.summary.value
    }
    assert {"test/nll", "test/bits_per_dim"} <= tagged


def test_conditional_model_reports_the_conditional_nll_of_each_paper_setting(run_main, tmp_path):
    """zoo.cvae: −L_k of log p(y | x) for 1, 2 and 3 given quadrants (Sohn et al. Table 1), its baseline's
    −log p(y | x) beside each, and their means; more samples never loosen the bound."""
    workdir = tmp_path / "cvae"
    tiny = [flag for assignment in ("hidden_units=16", "hidden_layers=1", "latent_units=4")
            for flag in ("--set", assignment)]
    trained = run_main(fit.main, ["zoo.cvae", "--workdir", workdir, "--max_examples", "200", "--batch_size", "20",
                                  "--steps_per_epoch", "3", "--validation_steps", "1", "--epochs", "1",
                                  "--no_download", *tiny])
    assert trained.returncode == 0, trained.stderr[-3000:]

    printed = {}
    annealing = ["--ais_steps", "50", "--ais_chains", "4", "--bdmc_examples", "2", "--batch_size", "20"]
    for k in (1, 20):
        result = run_main(evaluate.main, [workdir, "--k", k, "--max_examples", "20", "--no_download",
                                          *(annealing if k == 20 else [])])
        assert result.returncode == 0, result.stderr
        printed[k] = json.loads(result.stdout)
    # Per-setting metrics are listed together, like per-layer ones: nll_given = [c = 1, c = 2, c = 3].
    nll = printed[20]["nll_given"]
    assert len(nll) == len(printed[20]["baseline_nll_given"]) == 3
    assert printed[20]["nll"] == pytest.approx(sum(nll) / 3, abs=1e-3)
    assert nll[0] > nll[1] > nll[2] > 0  # the more is given, the less is left to predict
    for tighter, looser in zip(nll, printed[1]["nll_given"]):
        assert tighter <= looser + 0.5
    # AIS of log p(y | x) per setting, from the prior p(z | x): at least L_k (so its nll at most −L_k) up to noise.
    annealed = printed[20]
    assert len(annealed["ais_nll_given"]) == len(annealed["bdmc_gap_given"]) == 3
    for ais_nll, bound, error in zip(annealed["ais_nll_given"], nll, annealed["ais_standard_error_given"]):
        assert 0 < ais_nll <= bound + 4 * error + 0.1
    assert all(gap > -0.1 for gap in annealed["bdmc_gap_given"])

    refused = run_main(evaluate.main, [workdir, "--ais_steps", "2", "--bdmc_examples", "30", "--batch_size", "20",
                                       "--max_examples", "40", "--no_download"])
    assert refused.returncode == 2 and "--bdmc_examples 30: zoo.cvae checks AIS on the split's first batch" in \
        refused.stderr and refused.stdout == ""


def test_ais_estimates_log_p_x_at_least_the_importance_weighted_bound_and_checks_itself_by_bdmc(
        train, run_main, tmp_path):
    """On the two-layer VAE run (both layers' latents annealed together): log p(x) ≥ L_k in expectation, so the
    AIS estimate of the nll lies at or below −L_k up to its noise; the BDMC bounds come in order, and the numbers
    go to evaluation.jsonl and TensorBoard under their step count."""
    workdir = shutil.copytree(train("vae2").workdir, tmp_path / "vae2")
    result = run_main(evaluate.main, [workdir, "--k", "200", "--ais_steps", "100", "--ais_chains", "16",
                                      "--bdmc_examples", "4", "--max_examples", "10", "--no_download"])
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    noise = 4 * printed["ais_standard_error"] + 0.05
    assert math.isfinite(printed["ais_nll"]) and 0.0 <= printed["ais_standard_error"] < 1.0
    assert printed["ais_nll"] <= printed["nll"] + noise
    assert 0.0 < printed["ais_acceptance"] <= 1.0
    assert printed["bdmc_forward"] <= printed["bdmc_reverse"] + 0.1
    assert printed["bdmc_gap"] == pytest.approx(printed["bdmc_reverse"] - printed["bdmc_forward"], abs=2e-4)
    assert json.loads((workdir / "evaluation.jsonl").read_text().splitlines()[-1]) == printed
    tagged = {value.tag for file in (workdir / "tensorboard" / "evaluation").glob("events.out.tfevents.*")
              for event in tf.compat.v1.train.summary_iterator(str(file)) for value in event.summary.value}
    assert {"test/ais_nll_m100", "test/bdmc_gap_m100", "test/nll_k200"} <= tagged


def test_ais_traces_its_annealing_once_for_all_batches_of_the_split(train, run_main, tmp_path, monkeypatch):
    """Three batches of 2 images, then the bidirectional check on 3 simulated ones: two traced graphs, one per
    batch size (a trace takes seconds; it was two per batch)."""
    from zoo.common import ais

    annealers = []

    class Recorded(ais.Annealer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            annealers.append(self)

    monkeypatch.setattr(ais, "Annealer", Recorded)
    workdir = shutil.copytree(train("vae2").workdir, tmp_path / "vae2")
    result = run_main(evaluate.main, [workdir, "--k", "1", "--ais_steps", "3", "--ais_chains", "2",
                                      "--bdmc_examples", "3", "--max_examples", "6", "--batch_size", "2",
                                      "--no_download"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["examples"] == 6
    assert [annealer.transitions.experimental_get_tracing_count() for annealer in annealers] == [2]


def test_ais_on_a_model_without_a_decoder_density_exits_2_naming_the_models_that_have_one(
        train, run_main, monkeypatch):
    from zoo import registry

    spec = registry.get("zoo.vae")
    monkeypatch.setitem(registry._REGISTRY, "zoo.vae", dataclasses.replace(spec, evaluation=("likelihood",)))
    result = run_main(evaluate.main, [train("vae2").workdir, "--ais_steps", "10", "--no_download"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --ais_steps: zoo.vae has no decoder density to anneal to")
    assert "zoo.iwae" in result.stderr.split("models that do: ")[1]


def test_gan_ais_anneals_to_a_gaussian_around_the_generator_of_the_given_stddev(run_main, zoo_cache_dir, tmp_path):
    """Wu et al. 2017's decoder density for a GAN: its σ is reported, set by --ais_observation_stddev, and a
    model whose decoder density is its own refuses the flag."""
    workdir = tmp_path / "gan"
    tiny = [flag for assignment in ("generator_units=8", "discriminator_units=4", "maxout_pieces=2", "noise_dim=3")
            for flag in ("--set", assignment)]
    trained = run_main(fit.main, ["zoo.gan", "--workdir", workdir, "--max_examples", "64", "--batch_size", "16",
                                  "--steps_per_epoch", "2", "--validation_steps", "1", "--epochs", "1",
                                  "--no_download", *tiny])
    assert trained.returncode == 0, trained.stderr[-3000:]
    ais_flags = ["--ais_steps", "5", "--ais_chains", "2", "--bdmc_examples", "2", "--max_examples", "8",
                 "--num_samples", "8", *TINY_CLASSIFIER, "--no_download"]
    printed = {}
    for stddev in (None, 0.25):
        result = run_main(evaluate.main, [workdir, *ais_flags,
                                          *(["--ais_observation_stddev", stddev] if stddev else [])])
        assert result.returncode == 0, result.stderr
        printed[stddev] = json.loads(result.stdout)
    assert printed[None]["ais_observation_stddev"] == observation.OBSERVATION_STDDEV
    assert printed[0.25]["ais_observation_stddev"] == 0.25
    assert all(math.isfinite(line["ais_nll"]) for line in printed.values())
    assert printed[None]["ais_nll"] != printed[0.25]["ais_nll"]

    refused = run_main(evaluate.main, [workdir, "--ais_observation_stddev", "0.1", "--no_download"])
    assert refused.returncode == 2 and "--ais_observation_stddev needs --ais_steps" in refused.stderr


def test_the_observation_stddev_flag_is_refused_by_a_model_with_its_own_decoder_density(train, run_main):
    result = run_main(evaluate.main, [train("vae2").workdir, "--ais_steps", "3", "--ais_observation_stddev", "0.1",
                                      "--no_download"])
    assert result.returncode == 2 and result.stdout == ""
    assert "--ais_observation_stddev: zoo.vae's decoder density is its own" in result.stderr
