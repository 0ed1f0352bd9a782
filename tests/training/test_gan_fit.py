"""python -m training.fit on GANs: labels from the data, two optimizers checkpointed, GAN summaries, export."""

import contextlib
import io
import json

import pytest

from export import runs
from training import evaluate

TINY_GANS = {  # registry name → --set overrides that make it build and fit in seconds
    # The conditional model: labels flow from the data. Every variant's train_step, summaries and
    # samplers are tested in tests/zoo/gan/test_gan.py; the CLI path is the same for all of them.
    "zoo.cgan": ["generator_units=16", "discriminator_units=8", "maxout_pieces=2"],
}
RUN = ["--max_examples", "200", "--batch_size", "20", "--steps_per_epoch", "2", "--validation_steps", "1",
       "--no_download", "--verbose", "2"]


def _argv(name, workdir, *flags):
    sets = [flag for assignment in TINY_GANS[name] for flag in ("--set", assignment)]
    return [name, "--workdir", str(workdir), *sets, *RUN, *flags]


@pytest.fixture(scope="module")
def gan_runs(tmp_path_factory, fit_in_process):
    """Each of TINY_GANS: 1 epoch, then resumed to 2 with export: name → (workdir, first, resumed)."""
    runs = {}
    for name in TINY_GANS:
        workdir = tmp_path_factory.mktemp(name.replace(".", "_")) / "run"
        first = fit_in_process(_argv(name, workdir, "--epochs", "1", "--no_export"))
        resumed = fit_in_process(_argv(name, workdir, "--epochs", "2", "--resume"))
        runs[name] = workdir, first, resumed
    return runs


@pytest.mark.parametrize("name", TINY_GANS)
def test_gan_trains_resumes_and_exports_from_the_command_line(name, gan_runs, read_state, restore_checkpoint,
                                                               expected_state):
    workdir, first, resumed = gan_runs[name]
    assert first.returncode == 0, first.explain()
    assert resumed.returncode == 0, resumed.explain()
    assert f"model: {name} (GAN," in first.stdout and "(resuming after epoch 1)" in resumed.stdout
    assert read_state(workdir) == expected_state("epoch-00002", "epoch-00001")

    model, epochs = restore_checkpoint(workdir, steps_per_epoch=2)
    assert epochs == 2
    assert int(model.optimizer.iterations) == 4  # generator: one update per step
    assert int(model.discriminator_optimizer.iterations) == 4 * model.config.critic_steps

    short = name.removeprefix("zoo.")
    assert (workdir / "model.keras").is_file() and (workdir / "serving" / short / "1" / "saved_model.pb").is_file()


def test_conditional_gan_is_fed_labels_from_the_dataset(gan_runs):
    workdir, _, _ = gan_runs["zoo.cgan"]
    run = json.loads((workdir / "run.json").read_text())
    assert run["config"]["conditional"] is True
    assert "dataset: mnist (binarize: False)" in gan_runs["zoo.cgan"][1].stdout


def test_gan_summaries_hold_both_losses_d_outputs_and_fixed_seed_grids_every_epoch(gan_runs, read_summaries):
    workdir, _, _ = gan_runs["zoo.cgan"]
    grids, scalars = ["samples", "per_class"], ["d_real", "d_fake", "discriminator_loss", "generator_loss"]
    tensorboard = runs.tensorboard_dir(workdir)
    train, validation = read_summaries(tensorboard / "train"), read_summaries(tensorboard / "validation")
    for scalar in scalars:
        assert train[f"epoch_{scalar}"] == ("scalars", [0, 1]), scalar
        assert validation[f"epoch_{scalar}"] == ("scalars", [0, 1]), scalar
    images = read_summaries(tensorboard / "images")
    for grid in grids:
        assert images[grid] == ("images", [1, 2]), grid


def test_a_conditional_gan_on_a_dataset_without_labels_is_a_clear_error(tmp_path, fit_in_process):
    result = fit_in_process(_argv("zoo.cgan", tmp_path / "run", "--dataset", "binarized_mnist"))
    assert result.returncode == 2, result.explain()
    assert "'binarized_mnist' has no labels" in result.stderr and "fashion_mnist, mnist" in result.stderr


def test_evaluate_reports_sample_quality_and_no_k_for_a_gan(gan_runs, tmp_path, monkeypatch):
    workdir, _, _ = gan_runs["zoo.cgan"]
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))  # a tiny classifier, never in ~/.cache
    result = _run_evaluate(evaluate.main, [str(workdir), "--num_samples", "200", "--max_examples", "200",
                                           "--classifier_max_examples", "2000", "--classifier_epochs", "1",
                                           "--no_download"])
    assert result[0] == 0, result[2]
    line = json.loads(result[1])
    assert line["model"] == "zoo.cgan" and "k" not in line and line["epochs"] == 2
    assert line["fid"] > line["fid_floor"] >= 0.0  # two tiny epochs are far from the data
    assert 1.0 <= line["classifier_score"] <= 10.0 and 0 <= line["modes_covered"] <= 10
    assert {"discriminator_loss", "generator_loss", "d_real", "d_fake"} <= set(line)


def _run_evaluate(main, argv):
    """(exit code, stdout, stderr) of a CLI's main run in this process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


def test_gan_trains_checkpoints_and_exports_under_mirrored_strategy_from_the_command_line(tmp_path, run_fit,
                                                                                          read_state, expected_state):
    workdir = tmp_path / "run"
    result = run_fit(_argv("zoo.cgan", workdir, "--epochs", "1", "--strategy", "mirrored", "--virtual_cpus", "2"))
    assert result.returncode == 0, result.explain()
    assert "strategy: MirroredStrategy, replicas: 2, global batch: 20" in result.stdout
    assert read_state(workdir) == expected_state("epoch-00001")
    assert (workdir / "serving" / "cgan" / "1" / "saved_model.pb").is_file()
