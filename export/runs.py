"""A training run on disk: its working directory, run.json and checkpoint files.

    WORKDIR/
      run.json          {"model": "zoo.iwae", "config": {...}}: rebuilds the model
      checkpoints/      state.json and the latest weights file, below
      tensorboard/      train/, validation/ (Keras scalars), images/, evaluation/
      evaluation.jsonl  one JSON line per `training.evaluate` run
      model.keras       written by export
      serving/<name>/<version>/   TF Serving SavedModels, written by export

`training.fit` writes a run and `training.checkpoint.Checkpointer` saves its
checkpoints; export and evaluation read it back with `load_trained_model`.

Checkpoint layout under `WORKDIR/checkpoints/`:

    state.json                   {"epoch": completed epochs, "weights": file, "interrupted": bool}
    epoch-00012.weights.h5       model weights, optimizer slots and iteration count

Each save writes the new weights file under a temporary name, renames it into
place, and only then replaces state.json (again by rename), so a process killed at
any instant leaves a state.json that points at a complete file. Older weights
files are removed after state.json moved on.
"""

from __future__ import annotations

import json
import os
import pathlib

import keras

import zoo
from zoo import config as config_lib

RUN_FILE = "run.json"
STATE_FILE = "state.json"


class WorkdirError(RuntimeError):
    """A workdir that does not hold what the command needs."""


def checkpoint_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / "checkpoints"


def tensorboard_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / "tensorboard"


def write_run(workdir, spec: zoo.ModelSpec, config) -> None:
    path = pathlib.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    payload = {"model": spec.name, "config": config_lib.to_dict(config)}
    (path / RUN_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def read_run(workdir):
    """Returns (registry entry, config) of the run in `workdir`."""
    path = pathlib.Path(workdir) / RUN_FILE
    if not path.exists():
        raise WorkdirError(
            f"{workdir} is not a training workdir ({RUN_FILE} is missing); pass the --workdir "
            f"of a `python -m training.fit` run"
        )
    payload = json.loads(path.read_text())
    spec = zoo.get(payload["model"])
    return spec, config_lib.from_dict(spec.config_class, payload["config"])


def load_trained_model(workdir):
    """Rebuilds the run's model and loads its latest checkpoint: (spec, config, model, epochs)."""
    spec, config = read_run(workdir)
    if latest_checkpoint(checkpoint_dir(workdir)) is None:
        raise WorkdirError(
            f"{workdir} has no checkpoint yet; train at least one epoch "
            f"(python -m training.fit {spec.name} --workdir {workdir})"
        )
    model = spec.build(config)
    epochs = restore_checkpoint(model, checkpoint_dir(workdir))
    return spec, config, model, epochs


def _write_atomically(path: pathlib.Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def latest_checkpoint(directory: str | os.PathLike) -> dict | None:
    """The last saved state, or None when there is none."""
    state_path = pathlib.Path(directory) / STATE_FILE
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    state["path"] = str(pathlib.Path(directory) / state["weights"])
    return state


def save_checkpoint(model: keras.Model, directory: str | os.PathLike, epoch: int, interrupted: bool = False) -> str:
    """Saves `model`'s weights and optimizer state as the checkpoint after `epoch` completed epochs."""
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


def restore_checkpoint(model: keras.Model, directory: str | os.PathLike) -> int:
    """Loads the latest checkpoint into `model` (and its optimizer, if built).

    Returns the number of completed epochs, 0 when there is no checkpoint.
    """
    state = latest_checkpoint(directory)
    if state is None:
        return 0
    model.load_weights(state["path"])
    return state["epoch"]
