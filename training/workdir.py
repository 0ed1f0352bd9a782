"""A run's working directory: its config, checkpoints, summaries and exports.

    WORKDIR/
      run.json          {"model": "zoo.iwae", "config": {...}}: rebuilds the model
      checkpoints/      see training.checkpoint
      tensorboard/      train/, validation/ (Keras scalars), images/, evaluation/
      evaluation.jsonl  one JSON line per `training.evaluate` run
      model.keras       written by export
      serving/<name>/<version>/   TF Serving SavedModels, written by export
"""

from __future__ import annotations

import json
import pathlib

import zoo
from zoo import config as config_lib
from training import checkpoint

RUN_FILE = "run.json"


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
    if checkpoint.latest(checkpoint_dir(workdir)) is None:
        raise WorkdirError(
            f"{workdir} has no checkpoint yet; train at least one epoch "
            f"(python -m training.fit {spec.name} --workdir {workdir})"
        )
    model = spec.build(config)
    epochs = checkpoint.restore(model, checkpoint_dir(workdir))
    return spec, config, model, epochs
