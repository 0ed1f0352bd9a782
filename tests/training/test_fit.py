"""python -m training.fit: errors, a tiny end-to-end run per registry entry, the divergence guard."""

import dataclasses
import json
import os
import pathlib
import re
import types

import keras
import numpy as np
import pytest

import zoo
from export import runs
from training import callbacks, checkpoint

@dataclasses.dataclass(frozen=True)
class CliError:
    phrases: tuple[str, ...]  # all expected in the one error line; {empty} is an empty folder
    flags: tuple[str, ...] = ()
    model: str = "zoo.vae"
    env: tuple[tuple[str, str | None], ...] = ()  # None unsets a variable; {empty} as above
    workdir: str = "new"  # or "existing_run" (holds a checkpointed run), "file", "inside_a_file", "unwritable"


CLI_ERRORS = {
    "unknown_model": CliError(("unknown model 'zoo.nosuch'", f"known models: {', '.join(sorted(zoo.names()))}"),
                              model="zoo.nosuch"),
    "unknown_config_key": CliError(("unknown config key(s) nosuchkey", "valid keys: ", " stochastic_layers,", " k,"),
                                   flags=("--set", "nosuchkey=1")),
    "badly_typed_config_value": CliError(("k='abc': expected int",), flags=("--set", "k=abc")),
    "missing_data": CliError(("'mnist'", "TFDS_DATA_DIR={empty}", "drop --no_download"),
                             env=(("TFDS_DATA_DIR", "{empty}"),)),
    "workdir_holds_a_run": CliError(("already holds a run", "pass --resume"), workdir="existing_run"),
    # The workdir is checked before the data is loaded: these would fail on the data next.
    "workdir_is_a_file": CliError(("--workdir {workdir} is a file, not a directory", "pass a directory"),
                                  env=(("TFDS_DATA_DIR", "{empty}"),), workdir="file"),
    "workdir_inside_a_file": CliError(("--workdir {workdir} cannot be written (Not a directory)",
                                       "pass a directory you can write to"),
                                      env=(("TFDS_DATA_DIR", "{empty}"),), workdir="inside_a_file"),
    "unwritable_workdir": CliError(("--workdir {workdir} cannot be written (", "pass a directory you can write to"),
                                   env=(("TFDS_DATA_DIR", "{empty}"),), workdir="unwritable"),
    "zero_batch_size": CliError(("batch_size must be >= 1, got 0", "pass e.g. --batch_size 64"),
                                flags=("--batch_size", "0")),
    "zero_learning_rate": CliError(("learning_rate must be > 0, got 0.0", "pass e.g. --learning_rate 1e-3"),
                                   flags=("--learning_rate", "0")),
    "negative_learning_rate": CliError(("learning_rate must be > 0, got -0.001",), flags=("--learning_rate=-1e-3",)),
    "negative_divergence_factor": CliError(("divergence_factor must be > 0, got -1.0",
                                            "--set divergence_factor=none"), flags=("--set", "divergence_factor=-1")),
    "resume_without_a_run": CliError(("is not a training workdir", "run.json is missing"), flags=("--resume",)),
    "multi_worker_without_tf_config": CliError(("--strategy multi_worker needs", "TF_CONFIG"),
                                               flags=("--strategy", "multi_worker"), env=(("TF_CONFIG", None),)),
    "zero_steps_per_execution": CliError(("--steps_per_execution must be at least 1, got 0",),
                                         flags=("--steps_per_execution", "0")),
    "images_of_another_shape": CliError(("dataset 'two_digit_mnist' has images of shape (60, 60, 1)",
                                         "image_shape is (28, 28, 1)", "--set image_shape=60,60,1"),
                                        flags=("--dataset", "two_digit_mnist")),
    "image_shape_of_two_sizes": CliError(("image_shape must be three positive sizes", "got (28, 28)"),
                                         flags=("--set", "image_shape=28,28")),
    "batch_larger_than_examples": CliError(("batch_size=20 exceeds the 10 training examples", "--max_examples"),
                                           flags=("--max_examples", "10")),
}


def _unwritable_folder(tmp_path) -> pathlib.Path:
    """A folder this process cannot create files in: read-only by its mode or, for root, in sysfs."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("running as root without /sys: no folder here is unwritable")
    return pathlib.Path("/sys/kernel")


def _prepare(case: CliError, tmp_path, fit_argv):
    """(argv, environment changes, expected phrases) of `case` in a fresh workdir under tmp_path."""
    empty, workdir = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    if case.workdir == "existing_run":
        (workdir / "checkpoints").mkdir(parents=True)
        (workdir / "checkpoints" / "state.json").write_text(
            json.dumps({"epoch": 1, "weights": "epoch-00001.weights.h5", "interrupted": False}))
    elif case.workdir == "file":
        workdir.write_text("not a folder\n")
    elif case.workdir == "inside_a_file":
        (tmp_path / "file").write_text("not a folder\n")
        workdir = tmp_path / "file" / "run"
    elif case.workdir == "unwritable":
        workdir = _unwritable_folder(tmp_path) / "genzoo-run"
    env = {name: value and value.format(empty=empty) for name, value in case.env}
    phrases = [phrase.format(empty=empty, workdir=workdir) for phrase in case.phrases]
    return fit_argv(case.model, workdir, *case.flags), env, phrases


@pytest.mark.parametrize("case", CLI_ERRORS)
def test_cli_error_is_a_clear_message_and_exit_code_2(case, tmp_path, monkeypatch, fit_argv, fit_in_process):
    argv, env, phrases = _prepare(CLI_ERRORS[case], tmp_path, fit_argv)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)

    result = fit_in_process(argv)

    assert result.returncode == 2, result.explain()
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.explain()
    assert all(phrase in result.stderr for phrase in phrases), result.explain()
    assert not (tmp_path / "run" / "run.json").exists()


def test_cli_error_exits_2_without_traceback_from_the_command_line(tmp_path, fit_argv, run_fit, subprocess_env):
    argv, env, phrases = _prepare(CLI_ERRORS["missing_data"], tmp_path, fit_argv)

    result = run_fit(argv, env=subprocess_env(**env))

    assert result.returncode == 2, result.explain()
    assert "Traceback" not in result.stderr, result.explain()
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and all(phrase in result.stderr for phrase in phrases), result.explain()


@pytest.mark.parametrize("name", ["zoo.vae", "zoo.iwae"])
def test_tiny_fit_prints_summary_and_writes_run_and_checkpoint(name, tiny_fits, read_state, expected_state):
    fit = tiny_fits[name]
    assert fit.result.returncode == 0, fit.result.explain()
    assert "strategy: _DefaultDistributionStrategy, replicas: 1, global batch: 20" in fit.result.stdout
    assert f"model: {name} (VAE," in fit.result.stdout

    run = json.loads((fit.workdir / "run.json").read_text())
    assert run["model"] == name
    assert run["config"]["stochastic_layers"] == fit.stochastic_layers and run["config"]["k"] == 2
    assert run["config"]["objective"] == {"zoo.vae": "elbo", "zoo.iwae": "iwae"}[name]

    assert read_state(fit.workdir) == expected_state("epoch-00003", "epoch-00002")
    weights = sorted(path.name for path in (fit.workdir / "checkpoints").iterdir() if path.suffix == ".h5")
    assert weights == ["epoch-00002.weights.h5", "epoch-00003.weights.h5"]


@pytest.mark.parametrize("name", ["zoo.vae", "zoo.iwae"])
def test_tiny_fit_writes_scalar_image_and_config_summaries(name, tiny_fits, read_summaries):
    fit = tiny_fits[name]
    assert fit.result.returncode == 0, fit.result.explain()
    tensorboard = runs.tensorboard_dir(fit.workdir)

    train = read_summaries(tensorboard / "train")
    for tag in ("epoch_loss", "epoch_bound", "epoch_elbo", "epoch_kl", "epoch_reconstruction", "epoch_learning_rate"):
        assert train[tag] == ("scalars", [0, 1, 2]), (tag, train.get(tag))
    validation = read_summaries(tensorboard / "validation")
    layers = [f"epoch_active_units_{layer}" for layer in range(1, fit.stochastic_layers + 1)]
    for tag in ("epoch_loss", "epoch_nll", *layers):
        assert validation[tag] == ("scalars", [0, 1, 2]), (tag, validation.get(tag))
    steps = read_summaries(tensorboard / "steps")
    for tag in ("loss", "bound", "kl", "learning_rate"):
        assert steps[tag] == ("scalars", [2, 4, 6]), (tag, steps.get(tag))
    images = read_summaries(tensorboard / "images")
    assert images["prior_samples"] == ("images", [1, 2, 3])
    assert images["reconstructions"] == ("images", [1, 2, 3])
    assert images["config"] == ("text", [0])


@pytest.mark.parametrize("name", ["zoo.vae", "zoo.iwae"])
def test_tiny_fit_exports_and_ends_with_metrics_files_and_the_next_commands(name, tiny_fits):
    fit = tiny_fits[name]
    assert fit.result.returncode == 0, fit.result.explain()
    short = name.removeprefix("zoo.")
    serving = fit.workdir / "serving" / short / "1"
    assert (fit.workdir / "model.keras").is_file() and (serving / "saved_model.pb").is_file()
    assert (fit.workdir / "samples.png").is_file()
    summary = fit.result.stdout[fit.result.stdout.index(f"\ntrained {name} for 3 epochs in "):].splitlines()[1:]
    assert len(summary) <= 12, summary
    assert re.fullmatch(r"  train: +(\w+ -?[\d.e+-]+, )*loss -?[\d.e+-]+(, \w+ -?[\d.e+-]+)*", summary[1]), summary
    assert summary[2].startswith("  validation: ") and " nll " in summary[2], summary
    assert summary[3:] == [
        f"  model:      {fit.workdir / 'model.keras'}",
        f"  SavedModel: {serving}",
        f"  samples:    {fit.workdir / 'samples.png'}",
        "next:",
        f"  tensorboard --logdir {fit.workdir / 'tensorboard'}",
        f"  python -m training.evaluate {fit.workdir} --max_examples 500 --no_download",
        f"  python -m serving.server --model_name {short} --model_base_path {serving.parent}",
        f"  python -m serving.client --model {short} --num_samples 16 --out samples.png"
        f"   # in another shell, while the server runs",
    ]


@pytest.mark.parametrize("name, flags", [("zoo.pixelcnn", " --max_examples 2000"), ("zoo.dcgan", "")])
def test_summary_without_export_says_so_and_suggests_the_evaluation_the_entry_declares(name, flags):
    from training import fit

    history = {"loss": [3.0, 2.0], "val_loss": [2.5, 1.25], "val_bits_per_dim": [0.5, 0.25]}
    lines = fit.summary(zoo.get(name), "runs/x", history, 75.0, exported=None)

    assert lines == [f"trained {name} for 2 epochs in 1 min 15 s; workdir runs/x",
                     "  train:      loss 2",
                     "  validation: bits_per_dim 0.25, loss 1.25",
                     "not exported (--no_export); export the last checkpoint with:",
                     "  python -m export runs/x",
                     "next:",
                     "  tensorboard --logdir runs/x/tensorboard",
                     f"  python -m training.evaluate runs/x{flags}"]


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, fit_argv,
                                                                          fit_in_process, read_state, expected_state):
    save_epoch = checkpoint.Checkpointer.on_epoch_end

    def save_then_diverge(self, epoch, logs=None):
        save_epoch(self, epoch, logs)
        if epoch == 0:  # the epoch-1 checkpoint is on disk; now the weights blow up
            kernel = self.model.trainable_variables[0]
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))

    monkeypatch.setattr(checkpoint.Checkpointer, "on_epoch_end", save_then_diverge)
    workdir = tmp_path / "run"

    result = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "3"))

    assert result.returncode == 2, result.explain()
    assert "error: loss became nan at epoch 2, steps 1-2" in result.stderr, result.explain()  # 2 per execution
    assert "last good checkpoint" in result.stderr and "epoch-00001.weights.h5, epoch 1) is intact" in result.stderr
    assert "divergence_factor" not in result.stderr  # NaN is never a legitimate jump
    assert read_state(workdir) == expected_state("epoch-00001")
    assert not list((workdir / "checkpoints").glob("epoch-00002*"))
    _, _, model, epochs = runs.load_trained_model(workdir)
    assert epochs == 1
    assert all(np.isfinite(weight).all() for weight in model.get_weights())


EXPLODING = ["--learning_rate", "1e9"]  # the tiny VAE's loss goes from 544 to about 5e19 in one step, never NaN


@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
def test_an_exploding_finite_loss_stops_training_and_keeps_the_good_checkpoint_and_config(
        resumed, tmp_path, fit_argv, fit_in_process, read_state, expected_state):
    workdir = tmp_path / "run"
    if resumed:
        first = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "1"))
        assert first.returncode == 0, first.explain()

    # 2 steps per execution: the first report is already a mean over exploded steps.
    result = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "3", *EXPLODING,
                                     *(["--resume"] if resumed else [])))

    assert result.returncode == 2 and "Traceback" not in result.stderr, result.explain()
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: loss became ") and f" at epoch {2 if resumed else 1}, steps 1-2: more than " \
        "divergence_factor=10 times its scale" in line, line
    resume = "--resume " if resumed else ""
    assert line.endswith(f"If this loss can legitimately jump that far, {'resume' if resumed else 'rerun'} with a "
                         f"larger factor ({resume}--set divergence_factor=100) or with {resume}--set "
                         f"divergence_factor=none, which stops only on NaN or Inf."), line
    if resumed:
        assert f"the last good checkpoint ({workdir / 'checkpoints' / 'epoch-00001.weights.h5'}, epoch 1) is " \
               "intact, and run.json keeps its learning_rate=0.001: --resume continues with that" in line, line
        assert read_state(workdir) == expected_state("epoch-00001")
        assert json.loads((workdir / "run.json").read_text())["config"]["learning_rate"] == 1e-3
        _, _, model, epochs = runs.load_trained_model(workdir)
        assert epochs == 1 and all(np.isfinite(weight).all() for weight in model.get_weights())
    else:
        assert "no checkpoint had been saved yet. Rerun with a lower learning rate" in line, line
        assert not (workdir / "run.json").exists() and read_state(workdir) is None


class RecordLearningRates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_resume_with_another_learning_rate_trains_at_it_and_then_records_it(tmp_path, fit_argv, fit_in_process):
    workdir = tmp_path / "run"
    constant = ["--set", "learning_rate_schedule=constant", "--steps_per_execution", "1"]
    first = fit_in_process(fit_argv("zoo.vae", workdir, *constant, "--epochs", "1"))
    assert first.returncode == 0, first.explain()
    recorder = RecordLearningRates()

    resumed = fit_in_process(fit_argv("zoo.vae", workdir, *constant, "--epochs", "2", "--resume",
                                      "--learning_rate", "2e-4"), extra_callbacks=[recorder])

    assert resumed.returncode == 0, resumed.explain()
    assert recorder.rates == pytest.approx([2e-4, 2e-4])  # not the 1e-3 the checkpoint holds
    assert json.loads((workdir / "run.json").read_text())["config"]["learning_rate"] == 2e-4


def _report(check, losses, steps_per_execution=1, epoch=0):
    """Feeds `check` one epoch of per-step `losses` as Keras logs them: the running mean, once per call."""
    check.set_model(types.SimpleNamespace(steps_per_execution=steps_per_execution))
    check.on_epoch_begin(epoch)
    running = np.cumsum(np.asarray(losses, np.float32)) / np.arange(1, len(losses) + 1, dtype=np.float32)
    for last in range(steps_per_execution - 1, len(losses), steps_per_execution):
        check.on_train_batch_end(last, {"loss": np.float32(running[last])})


def test_divergence_check_ignores_noise_and_early_decrease_but_stops_an_explosion():
    check = callbacks.StopOnDivergence(factor=10, starting_loss=544.0)
    noisy_decrease = [540.0, 620.0, 300.0, 180.0, 2000.0, 100.0, 95.0]
    _report(check, noisy_decrease)
    with pytest.raises(callbacks.DivergenceError, match=r"loss became 2\.2e\+04 at epoch 2, step 8: more than "
                                                         r"divergence_factor=10 times its scale \(2000\)") as raised:
        _report(check, [*noisy_decrease, 22_001.0], epoch=1)
    assert raised.value.exploded
    _report(callbacks.StopOnDivergence(factor=10, starting_loss=-50.0),  # e.g. a Gaussian likelihood
            [-60.0, -400.0, -900.0, -10.0, 5000.0])
    off = callbacks.StopOnDivergence(factor=None, starting_loss=544.0)
    _report(off, [1e30])
    with pytest.raises(callbacks.DivergenceError, match="loss became inf") as raised:
        _report(off, [1.0, float("inf")])
    assert not raised.value.exploded


@pytest.mark.parametrize("steps_per_execution", [1, 2, 7])
def test_divergence_check_stops_an_explosion_late_in_a_long_epoch(steps_per_execution):
    """Keras logs the epoch's running mean: from step 925 of 938 a 60-fold jump moves it by 6%, yet must stop the run."""
    losses = 100.0 + np.random.default_rng(0).normal(0.0, 5.0, 938)
    losses[924:] = 6000.0  # past the ceiling of 100 + 10 · 100 from step 925, the first of a call for each case
    _report(callbacks.StopOnDivergence(factor=10, starting_loss=100.0), losses[:924], steps_per_execution=1)

    last = 924 + steps_per_execution
    where = "step 925" if steps_per_execution == 1 else f"steps 925-{last}"
    with pytest.raises(callbacks.DivergenceError, match=rf"loss became 6000 at epoch 1, {where}: more than "):
        _report(callbacks.StopOnDivergence(factor=10, starting_loss=100.0), losses,
                steps_per_execution=steps_per_execution)


def test_adversarial_models_check_only_for_nan_and_inf_and_the_others_for_divergence():
    from zoo.ali import ALIConfig
    from zoo.gan.model import GANConfig
    from zoo.vae_gan import VAEGANConfig

    for name in zoo.names():
        spec = zoo.get(name)
        adversarial = spec.config_class in (GANConfig, ALIConfig, VAEGANConfig)
        assert spec.make_config().divergence_factor == (None if adversarial else 10.0), name


@pytest.mark.parametrize("steps_per_epoch, requested, expected", [(3000, 10, 10), (30, 10, 10), (6, 4, 3),
                                                                 (7, 10, 7), (7, 5, 1), (2, 1, 1)])
def test_steps_per_execution_is_the_largest_divisor_of_the_epoch_not_above_the_request(steps_per_epoch, requested,
                                                                                         expected):
    from training import fit
    assert fit.largest_divisor_at_most(steps_per_epoch, requested) == expected


@pytest.mark.parametrize("name, replicas, expected", [("zoo.vae", 1, 10), ("zoo.pixelrnn", 1, 1), ("zoo.vae", 2, 1)])
def test_steps_per_call_respect_the_models_cap_and_replicas(name, replicas, expected):
    """zoo.pixelrnn declares one step per call (its LSTM scan's gradient breaks inside Keras's multi-step loop)."""
    from training import fit
    assert fit.steps_per_call(3000, 10, zoo.get(name), replicas) == expected


def test_several_steps_per_execution_train_exactly_the_epochs_steps(tmp_path, fit_argv, fit_in_process, read_state):
    workdir = tmp_path / "run"

    result = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "2", "--steps_per_epoch", "6",
                                     "--steps_per_execution", "4", "--validation_steps", "1"))

    assert result.returncode == 0, result.explain()
    assert "6 steps per epoch (3 per execution)" in result.stdout
    assert read_state(workdir)["epoch"] == 2
    _, _, model, _ = runs.load_trained_model(workdir)
    model.compile_for_training(steps_per_epoch=6)
    runs.restore_checkpoint(model, workdir / "checkpoints")
    assert int(model.optimizer.iterations) == 12


# A clean start: TensorFlow's own start-up lines only when asked for, and no tf.data warnings at all.

TENSORFLOW_LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]", re.MULTILINE)
QUIETNESS = {  # case → (extra flags, TF_CPP_MIN_LOG_LEVEL, whether TensorFlow's logs show)
    "quiet": ([], None, False),
    "verbose_3": (["--verbose", "3"], None, True),
    "user_level_0": ([], "0", True),
}


@pytest.fixture(scope="module")
def quietness_fits(tmp_path_factory, fit_argv, start_fit, subprocess_env):
    """Each QUIETNESS case as a tiny run (2 of the 10 eval batches per epoch: a partial read), side by side."""
    started = {}
    for case, (flags, level, _) in QUIETNESS.items():
        argv = fit_argv("zoo.vae", tmp_path_factory.mktemp(case) / "run", "--epochs", "2", *flags)
        started[case] = start_fit(argv, env=subprocess_env(TF_CPP_MIN_LOG_LEVEL=level))
    return {case: process.wait() for case, process in started.items()}


@pytest.mark.parametrize("case", QUIETNESS)
def test_tensorflow_logs_show_only_when_asked_and_tf_data_never_warns(case, quietness_fits):
    result = quietness_fits[case]
    assert result.returncode == 0, result.explain()
    assert "partially cached" not in result.stderr, result.explain()
    if QUIETNESS[case][2]:
        assert TENSORFLOW_LOG_LINE.search(result.stderr), result.explain()
    else:
        assert result.stderr == "", result.explain()


def test_a_model_trains_on_two_digit_canvases_once_told_their_shape(tmp_path, fit_argv, fit_in_process):
    workdir = tmp_path / "run"
    result = fit_in_process(fit_argv("zoo.vae", workdir, "--dataset", "two_digit_mnist",
                                     "--set", "image_shape=60,60,1", "--epochs", "1"))

    assert result.returncode == 0, result.explain()
    assert json.loads((workdir / "run.json").read_text())["config"]["image_shape"] == [60, 60, 1]


def test_a_gaussian_vae_trains_on_colour_images_once_told_their_shape(tmp_path, fit_argv, fit_in_process):
    workdir = tmp_path / "run"
    result = fit_in_process(fit_argv("zoo.vae", workdir, "--dataset", "cifar10", "--set", "image_shape=32,32,3",
                                     "--set", "likelihood=gaussian", "--epochs", "1"))

    assert result.returncode == 0, result.explain()
    assert "dataset: cifar10 (binarize: False)" in result.stdout, result.explain()
