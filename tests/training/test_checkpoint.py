"""Checkpoints and --resume: in one go or resumed, killed (-9) or stopped (SIGTERM), a run ends alike."""

import dataclasses
import json
import os
import pathlib
import signal
import time

import keras
import numpy as np
import pytest

import zoo
from export import runs

# Long enough epochs (30 steps) that a signal sent after epoch 1 lands before the run ends.
LONG_EPOCHS = ["--epochs", "3", "--max_examples", "600", "--steps_per_epoch", "30"]
POLL_TIMEOUT_S = 180


def _checked_state(workdir, read_state):
    """state.json, asserting that it parses and names a weights file that exists.

    A save may remove the named file right after state.json moved on, so a missing
    file is only an error if state.json still names it.
    """
    state = read_state(workdir)
    if state is not None and not (pathlib.Path(workdir) / "checkpoints" / state["weights"]).is_file():
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


@pytest.fixture
def tiny_model():
    spec = zoo.get("zoo.vae")
    model = spec.build(spec.make_config(hidden_units=(16,), latent_units=(4,), k=2))
    model.compile_for_training(steps_per_epoch=10)
    return model


def test_save_moves_state_to_the_new_weights_and_removes_older_ones(tmp_path, tiny_model):
    directory = tmp_path / "checkpoints"
    assert runs.latest_checkpoint(directory) is None and runs.restore_checkpoint(tiny_model, directory) == 0

    runs.save_checkpoint(tiny_model, directory, 1)
    path = runs.save_checkpoint(tiny_model, directory, 2)

    assert sorted(p.name for p in directory.iterdir()) == ["epoch-00002.weights.h5", "state.json"]
    assert runs.latest_checkpoint(directory) == {"epoch": 2, "weights": "epoch-00002.weights.h5",
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


def test_resume_after_two_epochs_ends_like_three_epochs_in_one_go(tmp_path, tiny_fits, fit_argv, fit_in_process,
                                                                  read_state, restore_checkpoint):
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
    assert read_state(workdir) == read_state(one_go.workdir) == {
        "epoch": 3, "weights": "epoch-00003.weights.h5", "interrupted": False}
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


def test_sigkill_leaves_a_valid_checkpoint_and_resume_finishes_the_run(stopped_runs, read_state, restore_checkpoint):
    run = stopped_runs[signal.SIGKILL]
    assert run.stopped.returncode == -signal.SIGKILL, run.stopped.explain()
    killed = run.state_after_stop
    assert killed["epoch"] in (1, 2) and not killed["interrupted"]

    assert run.resumed.returncode == 0, run.resumed.explain()
    assert f"(resuming after epoch {killed['epoch']})" in run.resumed.stdout
    assert read_state(run.workdir) == {"epoch": 3, "weights": "epoch-00003.weights.h5", "interrupted": False}
    model, epochs = restore_checkpoint(run.workdir, steps_per_epoch=30)
    assert int(model.optimizer.iterations.numpy()) == 3 * 30  # as in one go: the lost partial epoch is redone
    assert all(np.isfinite(weight).all() for weight in model.get_weights())
    assert sorted(path.name for path in (run.workdir / "checkpoints").iterdir()) == [
        "epoch-00003.weights.h5", "state.json"]


def test_sigterm_saves_a_checkpoint_exits_130_and_resume_continues(stopped_runs, read_state):
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
    assert read_state(run.workdir) == {"epoch": 3, "weights": "epoch-00003.weights.h5", "interrupted": False}


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


@pytest.mark.parametrize("signum, batch, expected_state, expected_steps", [
    # In epoch 2's third batch: that step finishes, weights are saved as interrupted after 1 complete epoch.
    (signal.SIGTERM, 2, {"epoch": 1, "weights": "epoch-00001-interrupted.weights.h5", "interrupted": True},
     STEPS + 3),
    # During epoch 2's validation: epoch 2 is complete and saved as such.
    (signal.SIGINT, None, {"epoch": 2, "weights": "epoch-00002.weights.h5", "interrupted": False}, 2 * STEPS),
], ids=["sigterm_mid_epoch", "ctrl_c_in_validation"])
def test_a_signal_stops_after_the_step_in_flight_and_saves_it(signum, batch, expected_state, expected_steps,
                                                               tmp_path, fit_argv, fit_in_process, read_state,
                                                               tiny_model):
    handlers_before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    workdir = tmp_path / "run"

    result = fit_in_process(fit_argv("zoo.vae", workdir, "--epochs", "3", "--steps_per_epoch", str(STEPS),
                                     "--steps_per_execution", "1"),
                            extra_callbacks=[SignalSelf(signum, epoch=1, batch=batch)])

    assert result.returncode == 130, result.explain()
    completed = expected_state["epoch"]
    assert f"stopped by {signum.name} after {completed} complete epochs; saved " in result.stderr
    assert read_state(workdir) == expected_state
    assert runs.restore_checkpoint(tiny_model, workdir / "checkpoints") == completed
    assert int(tiny_model.optimizer.iterations) == expected_steps
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before
