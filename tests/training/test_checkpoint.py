"""Checkpoints and --resume: in one go or resumed, killed (-9) or stopped (SIGTERM), a run ends alike;
a damaged checkpoint falls back to the one before it."""

import dataclasses
import json
import os
import pathlib
import signal
import time

import h5py
import keras
import numpy as np
import pytest

import zoo
from export import runs

# Long enough epochs (30 steps) that a signal sent after epoch 1 lands before the run ends.
LONG_EPOCHS = ["--epochs", "3", "--max_examples", "600", "--steps_per_epoch", "30"]
POLL_TIMEOUT_S = 180


def _checked_state(workdir, read_state):
    """state.json, asserting that it parses and that both weights files it names exist.

    A save may remove a named file right after state.json moved on, so a missing
    file is only an error if state.json still names it.
    """
    state = read_state(workdir)
    named = [state["weights"], *([state["previous"]["weights"]] if state["previous"] else [])] if state else []
    if not all((pathlib.Path(workdir) / "checkpoints" / name).is_file() for name in named):
        newer = read_state(workdir)
        assert newer != state, f"state.json names a missing file: {state}"
        state = newer
    return state


def _signal_after_first_epoch(processes, workdirs, read_state):
    """Polls each run's state.json (checking it every time); once it holds epoch 1, sends the run its signal.

    `processes` and `workdirs` are keyed by the signal to send.
    """
    pending = set(processes)
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for key in sorted(pending):
            state = _checked_state(workdirs[key], read_state)
            if state is not None and state["epoch"] >= 1:
                processes[key].send_signal(key)
                pending.remove(key)
            elif processes[key].poll() is not None:
                pytest.fail(f"training.fit exited before its first checkpoint:\n{processes[key].wait().explain()}")
        time.sleep(0.05)
    assert not pending, f"no checkpoint of epoch 1 within {POLL_TIMEOUT_S} s"


def _tiny_vae(**overrides):
    spec = zoo.get("zoo.vae")
    model = spec.build(spec.make_config(**{"hidden_units": (16,), "latent_units": (4,), "k": 2, **overrides}))
    model.compile_for_training(steps_per_epoch=10)
    return model


@pytest.fixture
def tiny_model():
    return _tiny_vae()


def _optimizers(model) -> list:
    return [value for value in vars(model).values() if isinstance(value, keras.optimizers.Optimizer)]


def test_save_keeps_the_newest_two_checkpoints_and_state_names_both(tmp_path, tiny_model, expected_state):
    directory = tmp_path / "checkpoints"
    assert runs.latest_checkpoint(directory) is None and runs.restore_checkpoint(tiny_model, directory) == 0

    runs.save_checkpoint(tiny_model, directory, 1)
    assert json.loads((directory / "state.json").read_text()) == expected_state("epoch-00001")
    runs.save_checkpoint(tiny_model, directory, 2)
    path = runs.save_checkpoint(tiny_model, directory, 3)

    assert sorted(p.name for p in directory.iterdir()) == [
        "epoch-00002.weights.h5", "epoch-00003.weights.h5", "state.json"]
    assert json.loads((directory / "state.json").read_text()) == expected_state("epoch-00003", "epoch-00002")
    assert runs.latest_checkpoint(directory) == {"epoch": 3, "weights": "epoch-00003.weights.h5",
                                                 "interrupted": False, "path": path}


def test_restore_loads_weights_and_optimizer_iterations(tmp_path, tiny_model):
    tiny_model.optimizer.build(tiny_model.trainable_variables)
    tiny_model.optimizer.iterations.assign(7)
    weights = tiny_model.get_weights()
    runs.save_checkpoint(tiny_model, tmp_path, 3, interrupted=True)
    spec = zoo.get("zoo.vae")
    fresh = spec.build(tiny_model.config)
    fresh.compile_for_training(steps_per_epoch=10)

    assert runs.restore_checkpoint(fresh, tmp_path) == 3
    assert int(fresh.optimizer.iterations.numpy()) == 7
    for restored, saved in zip(fresh.get_weights(), weights):
        np.testing.assert_array_equal(restored, saved)
    assert json.loads((tmp_path / "state.json").read_text())["weights"] == "epoch-00003-interrupted.weights.h5"


DAMAGES = {  # how a weights file gets damaged → how the report says so, and why
    "truncated": ("is unreadable", "truncated file"),  # a full disk, a copy cut short
    "missing": ("is unreadable", "the file is missing"),
    # These open, so they are reported as not loading, never as unreadable:
    "without_a_layer": ("does not load into this model", "could not be loaded"),  # loads the rest first
    "without_optimizer_state": ("does not load into this model", "Skipping variable loading for optimizer"),
}


def _damage(path: pathlib.Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "missing":
        path.unlink()
    else:
        with h5py.File(path, "r+") as weights:
            del weights["layers" if how == "without_a_layer" else "optimizer"]


@pytest.fixture
def two_checkpoints(tmp_path, tiny_model):
    """A folder holding the checkpoints of epoch 1 and, with other weights and step count, of epoch 2:
    (folder, epoch 1's weights)."""
    directory = tmp_path / "checkpoints"
    tiny_model.optimizer.iterations.assign(10)
    runs.save_checkpoint(tiny_model, directory, 1)
    first = tiny_model.get_weights()
    for variable in tiny_model.trainable_variables:
        variable.assign(variable + 1.0)
    tiny_model.optimizer.iterations.assign(20)
    runs.save_checkpoint(tiny_model, directory, 2)
    return directory, first


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_entirely(how, two_checkpoints, capsys):
    directory, first = two_checkpoints
    _damage(directory / "epoch-00002.weights.h5", how)
    model = _tiny_vae()

    assert runs.restore_checkpoint(model, directory) == 1

    assert int(model.optimizer.iterations) == 10  # not the damaged file's 20, even where it half loaded
    for restored, saved in zip(model.get_weights(), first, strict=True):
        np.testing.assert_array_equal(restored, saved)
    (report,) = capsys.readouterr().err.splitlines()
    status, reason = DAMAGES[how]
    assert report.startswith(f"warning: {directory / 'epoch-00002.weights.h5'} {status} ("), report
    assert reason in report
    assert report.endswith(f"; using the checkpoint of epoch 1 ({directory / 'epoch-00001.weights.h5'}) instead")


@pytest.mark.parametrize("newest_damaged", [False, True], ids=["weights_intact", "newest_weights_truncated"])
def test_an_unreadable_state_json_falls_back_to_the_weights_files_newest_first(newest_damaged, two_checkpoints,
                                                                                capsys):
    directory, _ = two_checkpoints
    state = directory / "state.json"
    state.write_text(state.read_text()[:20])
    if newest_damaged:
        _damage(directory / "epoch-00002.weights.h5", "truncated")

    assert runs.restore_checkpoint(_tiny_vae(), directory) == (1 if newest_damaged else 2)

    report = capsys.readouterr().err
    assert f"warning: {state} is unreadable (" in report, report
    assert f"using the checkpoint of epoch {1 if newest_damaged else 2} (" in report
    assert (f"{directory / 'epoch-00002.weights.h5'} is unreadable (" in report) == newest_damaged


def test_no_readable_checkpoint_is_one_error_naming_the_files_and_the_fix(two_checkpoints):
    directory, _ = two_checkpoints
    _damage(directory / "epoch-00002.weights.h5", "missing")
    _damage(directory / "epoch-00001.weights.h5", "truncated")

    with pytest.raises(runs.WorkdirError) as raised:
        runs.restore_checkpoint(_tiny_vae(), directory)

    message = str(raised.value)
    assert message.startswith(f"no readable checkpoint in {directory}: ") and "\n" not in message
    assert f"{directory / 'epoch-00002.weights.h5'} is unreadable (the file is missing)" in message
    assert f"{directory / 'epoch-00001.weights.h5'} is unreadable (Unable to synchronously open file (truncated" \
        in message
    assert f"remove {directory} and rerun without --resume" in message


def test_checkpoints_that_open_but_do_not_load_are_never_advised_removed(two_checkpoints):
    directory, _ = two_checkpoints
    _damage(directory / "epoch-00002.weights.h5", "truncated")
    with pytest.raises(runs.WorkdirError) as raised:  # a model of another architecture than the files'
        runs.restore_checkpoint(_tiny_vae(latent_units=(8,)), directory)

    message = str(raised.value)
    assert message.startswith(f"no checkpoint in {directory} loads into this model: "
                              f"{directory / 'epoch-00002.weights.h5'} is unreadable (") and "\n" not in message
    assert f"{directory / 'epoch-00001.weights.h5'} does not load into this model (" in message
    assert f"{directory / 'epoch-00001.weights.h5'} opens as a weights file, so keep it: if the model was built " \
           "with another config than the checkpoints were trained with, rebuild it with theirs" in message
    assert "remove" not in message


@pytest.mark.parametrize("state", ["missing", "unreadable"])
def test_without_a_readable_state_json_the_weights_files_are_resumed_and_kept(state, two_checkpoints, tiny_model,
                                                                             capsys, expected_state):
    directory, _ = two_checkpoints
    if state == "missing":
        (directory / "state.json").unlink()
    else:
        (directory / "state.json").write_text("{")
    assert runs.has_checkpoint(directory)  # so a run without --resume refuses the workdir
    assert runs.latest_checkpoint(directory)["weights"] == "epoch-00002.weights.h5"

    restored = runs.load_checkpoint(_tiny_vae(), directory)
    assert restored["epoch"] == 2 and f"warning: {directory / 'state.json'} is {state}" in capsys.readouterr().err
    runs.save_checkpoint(tiny_model, directory, 3, keep=restored)

    assert json.loads((directory / "state.json").read_text()) == expected_state("epoch-00003", "epoch-00002")
    assert sorted(path.name for path in directory.glob("*.h5")) == ["epoch-00002.weights.h5", "epoch-00003.weights.h5"]


def test_a_save_never_removes_weights_files_newer_than_its_checkpoint(tmp_path, tiny_model, expected_state):
    runs.save_checkpoint(tiny_model, tmp_path, 7)
    runs.save_checkpoint(tiny_model, tmp_path, 8)
    (tmp_path / "state.json").unlink()  # whatever the reason, the next save starts a new record

    runs.save_checkpoint(tiny_model, tmp_path, 1)
    runs.save_checkpoint(tiny_model, tmp_path, 2)

    assert json.loads((tmp_path / "state.json").read_text()) == expected_state("epoch-00002", "epoch-00001")
    assert sorted(path.name for path in tmp_path.glob("*.h5")) == [
        "epoch-00001.weights.h5", "epoch-00002.weights.h5", "epoch-00007.weights.h5", "epoch-00008.weights.h5"]


def test_the_first_save_after_a_fallback_keeps_the_checkpoint_that_loaded(tmp_path, tiny_model, expected_state):
    runs.save_checkpoint(tiny_model, tmp_path, 2)
    runs.save_checkpoint(tiny_model, tmp_path, 2, interrupted=True)
    _damage(tmp_path / "epoch-00002-interrupted.weights.h5", "truncated")
    restored = runs.load_checkpoint(_tiny_vae(), tmp_path)
    assert restored["weights"] == "epoch-00002.weights.h5"

    runs.save_checkpoint(tiny_model, tmp_path, 3, keep=restored)  # what Checkpointer does after a fallback

    assert json.loads((tmp_path / "state.json").read_text()) == expected_state("epoch-00003", "epoch-00002")
    assert sorted(path.name for path in tmp_path.glob("*.h5")) == ["epoch-00002.weights.h5", "epoch-00003.weights.h5"]


class Killed(BaseException):
    """Stands for SIGKILL at one step of a save."""


def _kill_at(monkeypatch, model, step: str) -> None:
    """Makes the next save die at `step`: mid-write of the weights, or just before a rename or a removal."""
    if step == "writing_weights":
        def write_half(path):
            pathlib.Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))
            raise Killed
        monkeypatch.setattr(model, "save_weights", write_half)
    elif step in ("renaming_weights", "replacing_state"):
        renames, replace = [], os.replace

        def rename(source, target):
            renames.append(target)
            if len(renames) == ("renaming_weights", "replacing_state").index(step) + 1:
                raise Killed
            replace(source, target)
        monkeypatch.setattr(runs.os, "replace", rename)
    else:
        def remove(path, missing_ok=False):
            raise Killed
        monkeypatch.setattr(pathlib.Path, "unlink", remove)


@pytest.mark.parametrize("step, newest", [("writing_weights", 2), ("renaming_weights", 2), ("replacing_state", 2),
                                          ("removing_the_oldest", 3)])
def test_a_save_killed_at_any_step_leaves_the_checkpoints_loadable(step, newest, two_checkpoints, tiny_model,
                                                                   monkeypatch, capsys, read_state, expected_state):
    directory, _ = two_checkpoints
    with monkeypatch.context() as patched:
        _kill_at(patched, tiny_model, step)
        with pytest.raises(Killed):
            runs.save_checkpoint(tiny_model, directory, 3)

    state = json.loads((directory / "state.json").read_text())
    assert state == expected_state(f"epoch-{newest:05d}", f"epoch-{newest - 1:05d}")
    assert runs.restore_checkpoint(_tiny_vae(), directory) == newest and "warning" not in capsys.readouterr().err
    runs.save_checkpoint(tiny_model, directory, 4)  # the next save clears what the killed one left
    assert sorted(path.name for path in directory.glob("*.h5")) == [
        f"epoch-{newest:05d}.weights.h5", "epoch-00004.weights.h5"]


class Players(keras.Model):
    """A model holding optimizers the ways a model may: compiled, in a list attribute, on a sub-layer."""

    def __init__(self, learning_rate):
        super().__init__()
        self.dense = keras.layers.Dense(2)
        self.critic = keras.layers.Dense(1)
        self.critic.optimizer = keras.optimizers.SGD(learning_rate * 2)
        self.encoders = [keras.layers.Dense(3)]
        self.others = [keras.optimizers.RMSprop(learning_rate * 3)]
        self.compile(optimizer=keras.optimizers.Adam(learning_rate))
        self.build((None, 4))

    def build(self, input_shape):
        for layer in (self.dense, self.critic, *self.encoders):
            layer.build(input_shape)
        for optimizer in (self.optimizer, self.critic.optimizer, *self.others):
            optimizer.build(self.dense.trainable_variables)

    def call(self, inputs):
        return self.dense(inputs)


def test_restore_keeps_the_constant_learning_rates_of_every_optimizer_the_model_holds(tmp_path):
    runs.save_checkpoint(Players(1e-3), tmp_path, 1)
    resumed = Players(5e-2)

    assert runs.restore_checkpoint(resumed, tmp_path) == 1

    rates = [float(optimizer.learning_rate.numpy()) for optimizer in
             (resumed.optimizer, resumed.critic.optimizer, *resumed.others)]
    assert rates == pytest.approx([5e-2, 1e-1, 1.5e-1])


@pytest.mark.parametrize("name, overrides, optimizers", [("zoo.vae", {"learning_rate_schedule": "constant"}, 1),
                                                         ("zoo.wgan_gp", {}, 2)])
def test_restore_keeps_the_configs_constant_learning_rates(name, overrides, optimizers, tmp_path):
    """Keras saves a constant rate in the weights file; `--resume --learning_rate X` must train at X."""
    spec = zoo.get(name)
    trained = spec.build(spec.make_tiny_config(**overrides, learning_rate=1e-3))
    trained.compile_for_training(steps_per_epoch=2)
    runs.save_checkpoint(trained, tmp_path, 1)
    resumed = spec.build(spec.make_tiny_config(**overrides, learning_rate=5e-2))
    resumed.compile_for_training(steps_per_epoch=2)

    assert runs.restore_checkpoint(resumed, tmp_path) == 1

    rates = [float(optimizer.learning_rate.numpy()) for optimizer in _optimizers(resumed)]
    assert rates == pytest.approx([5e-2] * optimizers)


def test_resume_and_load_trained_model_fall_back_from_a_truncated_newest_checkpoint(
        tmp_path, fit_argv, fit_in_process, read_state, restore_checkpoint, expected_state, capsys):
    workdir = tmp_path / "run"
    first = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "2"))
    assert first.returncode == 0, first.explain()
    newest = workdir / "checkpoints" / "epoch-00002.weights.h5"
    _damage(newest, "truncated")

    _, _, _, epochs = runs.load_trained_model(workdir)  # as export and evaluation load it
    assert epochs == 1 and f"warning: {newest} is unreadable (" in capsys.readouterr().err
    resumed = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "3", "--resume"))

    assert resumed.returncode == 0, resumed.explain()
    assert f"warning: {newest} is unreadable (" in resumed.stderr, resumed.explain()
    assert "using the checkpoint of epoch 1 (" in resumed.stderr and "(resuming after epoch 1)" in resumed.stdout
    assert "Epoch 2/3" in resumed.stdout
    assert read_state(workdir) == expected_state("epoch-00003", "epoch-00002")
    model, epochs = restore_checkpoint(workdir, steps_per_epoch=2)
    assert epochs == 3 and int(model.optimizer.iterations) == 3 * 2


def _saved_run(workdir: pathlib.Path) -> pathlib.Path:
    """A tiny zoo.vae run as training leaves it after epoch 1 (run.json and one checkpoint, 2 steps per epoch),
    written directly; returns the checkpoint's weights file."""
    spec = zoo.get("zoo.vae")
    config = spec.make_config(hidden_units=(16,), latent_units=(4,), k=2, batch_size=20)
    model = spec.build(config)
    model.compile_for_training(steps_per_epoch=2)
    runs.write_run(workdir, spec, config)
    return pathlib.Path(runs.save_checkpoint(model, runs.checkpoint_dir(workdir), 1))


def test_resume_without_a_readable_checkpoint_is_one_error_line(tmp_path, fit_argv, fit_in_process):
    workdir = tmp_path / "run"
    _damage(_saved_run(workdir), "truncated")

    result = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "2", "--resume"))

    assert result.returncode == 2 and "Traceback" not in result.stderr, result.explain()
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: no readable checkpoint in {runs.checkpoint_dir(workdir)}: "
                           f"{runs.checkpoint_dir(workdir) / 'epoch-00001.weights.h5'} is unreadable ("), line
    assert "rerun without --resume" in line


def test_resume_that_changes_the_architecture_names_the_override_and_keeps_the_checkpoints(
        tmp_path, fit_argv, fit_in_process, read_state, expected_state):
    workdir = tmp_path / "run"
    _saved_run(workdir)

    result = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "2", "--resume", "--set", "latent_units=8",
                                     "--learning_rate", "2e-4"))

    assert result.returncode == 2 and "Traceback" not in result.stderr, result.explain()
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line == (f"error: --set latent_units=8 changes the model: the checkpoints in {runs.checkpoint_dir(workdir)} "
                    "were trained with latent_units=4 (run.json) and do not load into the model it builds. They are "
                    "intact: resume without changing the architecture (drop --set latent_units=8), or train the "
                    "changed model in another --workdir"), line
    assert read_state(workdir) == expected_state("epoch-00001")


class Crash(BaseException):
    """Stands for a crash of the process."""


@pytest.mark.parametrize("crash", ["before_the_checkpoint", "after_the_checkpoint"])
@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
def test_a_crash_while_saving_never_leaves_run_json_with_settings_no_checkpoint_has(crash, resumed, tmp_path,
                                                                                    monkeypatch):
    from training import checkpoint

    spec, model = zoo.get("zoo.vae"), _tiny_vae()
    directory = runs.checkpoint_dir(tmp_path)
    if resumed:
        runs.write_run(tmp_path, spec, model.config)
        runs.save_checkpoint(model, directory, 1)
    restored = runs.load_checkpoint(model, directory)
    new = zoo.config.replace(model.config, learning_rate=model.config.learning_rate / 5)  # maybe a diverging one
    checkpointer = checkpoint.Checkpointer(tmp_path, spec, new, restored)
    checkpointer.set_model(model)
    save = runs.save_checkpoint

    def crashing_save(*args, **kwargs):
        if crash == "after_the_checkpoint":
            save(*args, **kwargs)
        raise Crash

    with monkeypatch.context() as patched:
        patched.setattr(runs, "save_checkpoint", crashing_save)
        with pytest.raises(Crash):
            checkpointer.on_epoch_end(int(resumed))

    # A new run's run.json comes first (checkpoints without one could not be resumed); a resumed run's
    # new settings only once a checkpoint trained with them exists.
    assert runs.read_run(tmp_path)[1] == (model.config if resumed else new)
    checkpointer.on_epoch_end(int(resumed))
    assert runs.read_run(tmp_path)[1] == new


def test_resume_after_two_epochs_ends_like_three_epochs_in_one_go(tmp_path, tiny_fits, fit_argv, fit_in_process,
                                                                  read_state, restore_checkpoint, expected_state):
    one_go = tiny_fits["zoo.vae"]  # 3 epochs of 2 steps
    assert one_go.result.returncode == 0, one_go.result.explain()
    workdir = tmp_path / "run"
    first = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "2"))
    assert first.returncode == 0, first.explain()
    assert read_state(workdir)["epoch"] == 2

    resumed = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "3", "--resume"))

    assert resumed.returncode == 0, resumed.explain()
    assert "(resuming after epoch 2)" in resumed.stdout
    assert "Epoch 3/3" in resumed.stdout and "Epoch 2/3" not in resumed.stdout
    assert read_state(workdir) == read_state(one_go.workdir) == expected_state("epoch-00003", "epoch-00002")
    for run in (one_go.workdir, workdir):
        model, epochs = restore_checkpoint(run, steps_per_epoch=2)
        assert epochs == 3 and int(model.optimizer.iterations.numpy()) == 3 * 2, run


@dataclasses.dataclass(frozen=True)
class Stopped:
    workdir: pathlib.Path
    stopped: object  # conftest.Finished of the signalled run
    state_after_stop: dict
    resumed: object  # ... and of its --resume


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory, fit_argv, start_fit, read_state):
    """Two runs of 3 long epochs, side by side, stopped after epoch 1 by SIGKILL and SIGTERM, then resumed.

    state.json is checked at every poll while they run. Returns signal → Stopped.
    """
    signals = (signal.SIGKILL, signal.SIGTERM)
    workdirs = {signum: tmp_path_factory.mktemp(signum.name) / "run" for signum in signals}
    processes = {signum: start_fit(fit_argv("zoo.vae", workdirs[signum], *LONG_EPOCHS)) for signum in signals}
    _signal_after_first_epoch(processes, workdirs, read_state)
    stopped = {signum: processes[signum].wait() for signum in signals}
    states = {signum: _checked_state(workdirs[signum], read_state) for signum in signals}
    resumes = {signum: start_fit(fit_argv("zoo.vae", workdirs[signum], *LONG_EPOCHS, "--resume")) for signum in signals}
    return {signum: Stopped(workdirs[signum], stopped[signum], states[signum], resumes[signum].wait())
            for signum in signals}


def test_sigkill_leaves_a_valid_checkpoint_and_resume_finishes_the_run(stopped_runs, read_state, restore_checkpoint,
                                                                       expected_state):
    run = stopped_runs[signal.SIGKILL]
    assert run.stopped.returncode == -signal.SIGKILL, run.stopped.explain()
    killed = run.state_after_stop
    assert killed["epoch"] in (1, 2) and not killed["interrupted"]

    assert run.resumed.returncode == 0, run.resumed.explain()
    assert f"(resuming after epoch {killed['epoch']})" in run.resumed.stdout
    assert read_state(run.workdir) == expected_state("epoch-00003", "epoch-00002")
    model, epochs = restore_checkpoint(run.workdir, steps_per_epoch=30)
    assert int(model.optimizer.iterations.numpy()) == 3 * 30  # as in one go: the lost partial epoch is redone
    assert all(np.isfinite(weight).all() for weight in model.get_weights())
    assert sorted(path.name for path in (run.workdir / "checkpoints").iterdir()) == [
        "epoch-00002.weights.h5", "epoch-00003.weights.h5", "state.json"]


def test_sigterm_saves_a_checkpoint_exits_130_and_resume_continues(stopped_runs, read_state, expected_state):
    run = stopped_runs[signal.SIGTERM]
    assert run.stopped.returncode == 130, run.stopped.explain()
    # Usually the signal lands while epoch 2 trains (an interrupted checkpoint after 1 complete epoch);
    # it may also land just after epoch 1's save, or during epoch 2's validation (complete epochs).
    state = run.state_after_stop
    completed = state["epoch"]
    suffix = "-interrupted" if state["interrupted"] else ""
    assert completed in (1, 2) and state["weights"] == f"epoch-{completed:05d}{suffix}.weights.h5", state
    assert f"stopped by SIGTERM after {completed} complete epochs" in run.stopped.stderr, run.stopped.explain()
    assert "continue with --resume" in run.stopped.stderr and "Traceback" not in run.stopped.stderr

    assert run.resumed.returncode == 0, run.resumed.explain()
    assert f"(resuming after epoch {completed})" in run.resumed.stdout
    assert read_state(run.workdir) == expected_state("epoch-00003", "epoch-00002")


class SignalSelf(keras.callbacks.Callback):
    """Sends this process `signum` as training batch `batch` of `epoch` begins, or, with
    `batch=None`, as that epoch's validation begins."""

    def __init__(self, signum, epoch, batch):
        super().__init__()
        self.signum, self.epoch, self.batch = signum, epoch, batch
        self._current_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._current_epoch == self.epoch and batch == self.batch:
            os.kill(os.getpid(), self.signum)

    def on_test_begin(self, logs=None):
        if self._current_epoch == self.epoch and self.batch is None:
            os.kill(os.getpid(), self.signum)


STEPS = 5  # per epoch, in the signal tests below


@pytest.mark.parametrize("signum, batch, saved, expected_steps", [
    # In epoch 2's third batch: that step finishes, weights are saved as interrupted after 1 complete epoch.
    (signal.SIGTERM, 2, ("epoch-00001-interrupted", "epoch-00001"), STEPS + 3),
    # During epoch 2's validation: epoch 2 is complete and saved as such.
    (signal.SIGINT, None, ("epoch-00002", "epoch-00001"), 2 * STEPS),
], ids=["sigterm_mid_epoch", "ctrl_c_in_validation"])
def test_a_signal_stops_after_the_step_in_flight_and_saves_it(signum, batch, saved, expected_steps, tmp_path,
                                                               fit_argv, fit_in_process, read_state, tiny_model,
                                                               expected_state):
    handlers_before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    workdir = tmp_path / "run"

    result = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "3", "--steps_per_epoch", str(STEPS),
                                     "--steps_per_execution", "1"),
                            extra_callbacks=[SignalSelf(signum, epoch=1, batch=batch)])

    assert result.returncode == 130, result.explain()
    completed = expected_state(*saved)["epoch"]
    assert f"stopped by {signum.name} after {completed} complete epochs; saved " in result.stderr
    assert read_state(workdir) == expected_state(*saved)
    assert runs.restore_checkpoint(tiny_model, workdir / "checkpoints") == completed
    assert int(tiny_model.optimizer.iterations) == expected_steps
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before
