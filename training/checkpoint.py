"""Crash-safe checkpoints of weights, optimizer state and the epoch counter.

Layout under `WORKDIR/checkpoints/`:

    state.json                   {"epoch": completed epochs, "weights": file, "interrupted": bool}
    epoch-00012.weights.h5       model weights, optimizer slots and iteration count

Each save writes the new weights file under a temporary name, renames it into
place, and only then replaces state.json (again by rename), so a process killed at
any instant leaves a state.json that points at a complete file. Older weights
files are removed after state.json moved on. An interrupted run saves its
mid-epoch weights with the count of *completed* epochs; resuming re-runs that
epoch from the saved weights, so no progress is lost.

SIGTERM and Ctrl-C do not tear `fit` down mid-step: `Checkpointer` turns the
signal into `model.stop_training`, so the current step (and its asynchronous
callbacks) finish, and the checkpoint is saved at the end of that epoch loop.
A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import threading

import keras

STATE_FILE = "state.json"


def _write_atomically(path: pathlib.Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def latest(directory: str | os.PathLike) -> dict | None:
    """The last saved state, or None when there is none."""
    state_path = pathlib.Path(directory) / STATE_FILE
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    state["path"] = str(pathlib.Path(directory) / state["weights"])
    return state


def save(model: keras.Model, directory: str | os.PathLike, epoch: int, interrupted: bool = False) -> str:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:05d}{'-interrupted' if interrupted else ''}.weights.h5"
    temporary = directory / f"saving-{name}"
    model.save_weights(temporary)
    os.replace(temporary, directory / name)
    _write_atomically(
        directory / STATE_FILE,
        json.dumps({"epoch": epoch, "weights": name, "interrupted": interrupted}),
    )
    for stale in directory.glob("*.weights.h5"):
        if stale.name != name:
            stale.unlink()
    return str(directory / name)


def restore(model: keras.Model, directory: str | os.PathLike) -> int:
    """Loads the latest checkpoint into `model` (and its optimizer, if built).

    Returns the number of completed epochs, 0 when there is no checkpoint.
    """
    state = latest(directory)
    if state is None:
        return 0
    model.load_weights(state["path"])
    return state["epoch"]


class Checkpointer(keras.callbacks.Callback):
    """Saves a checkpoint after every epoch, and stops `fit` cleanly on SIGTERM or Ctrl-C.

    A signal sets `model.stop_training` (and `stop_evaluating`), so Keras ends the
    epoch after the step in flight. The epoch counts as complete if its training
    loop had finished before the stop was requested (the request came during
    validation, or after `on_epoch_end`); otherwise `on_epoch_end` saves an
    *interrupted* checkpoint and resume re-runs the epoch from these weights.
    Afterwards `stopped_by` names the signal and `saved` the last file written.

    Wrap `fit` in `stop_on_signals()` to install the handlers for its duration.
    """

    STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, directory: str | os.PathLike, initial_epoch: int = 0, enabled: bool = True):
        super().__init__()
        self.directory = directory
        self.completed_epochs = initial_epoch
        self.enabled = enabled
        self.stopped_by: signal.Signals | None = None
        self.saved: str | None = None
        self._trained_before_validation: bool | None = None  # None: no validation this epoch (yet)

    @contextlib.contextmanager
    def stop_on_signals(self):
        """Routes SIGTERM and SIGINT to a clean stop inside the block, then restores the old handlers.

        Python delivers signals to the main thread only; elsewhere this does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._request_stop) for signum in self.STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _request_stop(self, signum, frame):
        if self.stopped_by is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        self.stopped_by = signal.Signals(signum)
        if self.model is not None:
            self.model.stop_training = True
            self.model.stop_evaluating = True

    def on_train_begin(self, logs=None):
        if self.stopped_by is not None:  # the signal came while `fit` was starting up
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._trained_before_validation = None

    def on_test_begin(self, logs=None):
        self._trained_before_validation = self.stopped_by is None
        if self.stopped_by is not None:
            self.model.stop_evaluating = True  # `evaluate` cleared it; stop after one batch

    def _epoch_complete(self) -> bool:
        """Whether this epoch's training loop ran to its end before any stop request."""
        if self._trained_before_validation is None:  # no validation ran: judge by the request alone
            return self.stopped_by is None
        return self._trained_before_validation

    def on_epoch_end(self, epoch, logs=None):
        if not self._epoch_complete():
            if self.enabled:
                self.saved = save(self.model, self.directory, self.completed_epochs, interrupted=True)
            return
        self.completed_epochs = epoch + 1
        if self.enabled:
            self.saved = save(self.model, self.directory, self.completed_epochs)
