"""Checkpoints during `fit`: one after every epoch, and a clean stop on SIGTERM or Ctrl-C.

The files and their crash-safe layout are `export.runs`'s (`save_checkpoint`,
`load_checkpoint`): the last two checkpoints stay on disk. An interrupted run
saves its mid-epoch weights with the count of *completed* epochs; resuming re-runs
that epoch from the saved weights, so no progress is lost. The run's config
(run.json) is written with the first checkpoint, so it never holds settings no
checkpoint was trained with (say, a learning rate that diverged at once): a resumed
run replaces it only after that checkpoint is on disk, so a crash between the two
leaves the old config, which resumes the new checkpoint fine (an override that
changes the architecture cannot be resumed). A run that did not resume from a
checkpoint writes it before its first one instead: checkpoints without a run.json
that matches them could not be resumed at all.

SIGTERM and Ctrl-C do not tear `fit` down mid-step: `Checkpointer` turns the
signal into `model.stop_training`, so the current step (and its asynchronous
callbacks) finish, and the checkpoint is saved at the end of that epoch loop.
A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import keras

from export import runs


class Checkpointer(keras.callbacks.Callback):
    """Saves a checkpoint after every epoch (with the first, run.json), and stops `fit` cleanly on SIGTERM or Ctrl-C.

    A signal sets `model.stop_training` (and `stop_evaluating`), so Keras ends the
    epoch after the step in flight. The epoch counts as complete if its training
    loop had finished before the stop was requested (the request came during
    validation, or after `on_epoch_end`); otherwise `on_epoch_end` saves an
    *interrupted* checkpoint and resume re-runs the epoch from these weights.
    Afterwards `stopped_by` names the signal and `saved` the last file written.

    Wrap `fit` in `stop_on_signals()` to install the handlers for its duration.
    """

    STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, workdir: str | os.PathLike, spec, config, restored: dict | None = None, enabled: bool = True):
        """`spec` and `config` are the run's (for run.json); `restored` the checkpoint it resumed from."""
        super().__init__()
        self.workdir = workdir
        self.run = spec, config
        self.completed_epochs = restored["epoch"] if restored else 0
        self.enabled = enabled
        self.resumed = restored is not None
        self._keep = restored  # the fallback for the first save; later ones keep the save before
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
        interrupted = not self._epoch_complete()
        if not interrupted:
            self.completed_epochs = epoch + 1
        if self.enabled:
            self._save(interrupted)

    def _save(self, interrupted: bool) -> None:
        first = self.saved is None
        if first and not self.resumed:  # run.json first: a checkpoint without it could not be resumed
            runs.write_run(self.workdir, *self.run)
        self.saved = runs.save_checkpoint(self.model, runs.checkpoint_dir(self.workdir), self.completed_epochs,
                                          interrupted=interrupted, keep=self._keep)
        self._keep = None
        if first:  # a resumed run's new settings, now that a checkpoint trained with them exists
            runs.write_run(self.workdir, *self.run)
