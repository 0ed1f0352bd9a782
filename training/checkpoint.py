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
"""

from __future__ import annotations

import json
import os
import pathlib

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
    """Saves a checkpoint after every epoch; `save_interrupted()` saves mid-epoch."""

    def __init__(self, directory: str | os.PathLike, initial_epoch: int = 0, enabled: bool = True):
        super().__init__()
        self.directory = directory
        self.completed_epochs = initial_epoch
        self.enabled = enabled

    def on_epoch_end(self, epoch, logs=None):
        self.completed_epochs = epoch + 1
        if self.enabled:
            save(self.model, self.directory, self.completed_epochs)

    def save_interrupted(self) -> str | None:
        if not self.enabled:
            return None
        return save(self.model, self.directory, self.completed_epochs, interrupted=True)
