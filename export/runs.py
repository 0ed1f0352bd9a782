"""A training run on disk: its working directory, run.json and checkpoint files.

    WORKDIR/
      run.json          {"model": "zoo.iwae", "config": {...}}: rebuilds the model
      checkpoints/      state.json and the last two weights files, below
      tensorboard/      train/, validation/ (Keras scalars), images/, evaluation/
      evaluation.jsonl  one JSON line per `training.evaluate` run
      model.keras       written by export
      serving/<name>/<version>/   TF Serving SavedModels, written by export

`training.fit` writes a run and `training.checkpoint.Checkpointer` saves its
checkpoints; export and evaluation read it back with `load_trained_model`.

Checkpoint layout under `WORKDIR/checkpoints/`:

    state.json                   the newest checkpoint and the one before it, to fall back to:
                                 {"epoch": completed epochs, "weights": file, "interrupted": bool,
                                  "previous": {"epoch": ..., "weights": ..., "interrupted": ...} or null}
    epoch-00012.weights.h5       model weights, optimizer slots and iteration count
    epoch-00011.weights.h5       the previous checkpoint

Each save writes the new weights file under a temporary name, renames it into
place, and only then replaces state.json (again by rename), so a process killed at
any instant leaves a state.json whose files are complete. After it moved on, the
save removes the weights files older than its own checkpoint, except the previous
one: a file newer than the checkpoint just saved (from a run this save knows
nothing of) is never removed.

Restoring verifies a checkpoint by loading it: a weights file that is missing or
unreadable (truncated), or that opens but does not load into the model (damaged
inside, without the optimizer state the model has, or saved for another
architecture), is reported and the previous one is loaded instead, overwriting
whatever the failed attempt had set. A state.json that is missing or cannot be
read is reported and the weights files in the folder are tried, newest first.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
import tempfile
import warnings

import h5py
import keras

import zoo
from zoo import config as config_lib

RUN_FILE = "run.json"
STATE_FILE = "state.json"
WEIGHTS_FILE = re.compile(r"epoch-(\d+)(-interrupted)?\.weights\.h5")


class WorkdirError(RuntimeError):
    """A workdir that does not hold what the command needs."""


def check_writable(workdir) -> None:
    """Creates `workdir` if it is missing and makes sure files can be written in it; WorkdirError otherwise."""
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"--workdir {workdir} is a file, not a directory; pass a directory "
                           f"(it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise WorkdirError(f"--workdir {workdir} cannot be written ({error.strerror or error}); "
                           f"pass a directory you can write to") from None


def checkpoint_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / "checkpoints"


def tensorboard_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / "tensorboard"


def write_run(workdir, spec: zoo.ModelSpec, config) -> None:
    path = pathlib.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    payload = {"model": spec.name, "config": config_lib.to_dict(config)}
    _write_atomically(path / RUN_FILE, json.dumps(payload, indent=2) + "\n")


def read_run(workdir):
    """Returns (registry entry, config) of the run in `workdir`."""
    path = pathlib.Path(workdir) / RUN_FILE
    if not path.exists():
        raise WorkdirError(
            f"{workdir} is not a training workdir ({RUN_FILE} is missing); pass the --workdir "
            f"of a `python -m training.fit` run"
        )
    try:
        payload = json.loads(path.read_text())
        name, values = payload["model"], payload["config"]
    except (ValueError, KeyError, TypeError) as error:
        raise WorkdirError(f"{path} is unreadable ({_reason(error)}); it records the run's model and config, "
                           f"so the run cannot be rebuilt without it") from None
    spec = zoo.get(name)
    return spec, config_lib.from_dict(spec.config_class, values)


def load_trained_model(workdir):
    """Rebuilds the run's model and loads its latest readable checkpoint: (spec, config, model, epochs)."""
    spec, config = read_run(workdir)
    model = spec.build(config)
    restored = load_checkpoint(model, checkpoint_dir(workdir))
    if restored is None:
        raise WorkdirError(
            f"{workdir} has no checkpoint yet; train at least one epoch "
            f"(python -m training.fit {spec.name} --workdir {workdir})"
        )
    return spec, config, model, restored["epoch"]


def _write_atomically(path: pathlib.Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _reason(error: BaseException, limit: int = 300) -> str:
    """An error's message on one line (Keras puts the telling part on its third), cut at `limit` characters."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _checkpoint(directory: pathlib.Path, epoch: int, weights: str, interrupted: bool) -> dict:
    return {"epoch": epoch, "weights": weights, "interrupted": interrupted, "path": str(directory / weights)}


def _parse_state(directory: pathlib.Path, text: str) -> list[dict]:
    """The checkpoints a state.json names, newest first; ValueError if it is not one we wrote."""
    state = json.loads(text)
    recorded = [state, *([state["previous"]] if state.get("previous") else [])]
    for entry in recorded:
        if not (isinstance(entry["epoch"], int) and isinstance(entry["interrupted"], bool)
                and isinstance(entry["weights"], str) and WEIGHTS_FILE.fullmatch(entry["weights"])):
            raise ValueError(f"not a checkpoint record: {json.dumps(entry)[:200]}")
    return [_checkpoint(directory, entry["epoch"], entry["weights"], entry["interrupted"]) for entry in recorded]


def _weights_files(directory: pathlib.Path) -> list[dict]:
    """The checkpoints whose weights files are in `directory`, newest first (by their names)."""
    found = [(WEIGHTS_FILE.fullmatch(path.name), path.name) for path in directory.glob("*.weights.h5")]
    checkpoints = [_checkpoint(directory, int(match[1]), name, bool(match[2])) for match, name in found if match]
    # An interrupted checkpoint after N epochs holds part of epoch N + 1: newer than epoch N's.
    return sorted(checkpoints, key=lambda checkpoint: (checkpoint["epoch"], checkpoint["interrupted"]), reverse=True)


def _recorded_checkpoints(directory) -> tuple[list[dict], str | None]:
    """(checkpoints newest first, each with its "path", unverified; why state.json is unreadable, or None).

    They are the ones state.json names or, when it cannot be read, the weights files in the folder.
    """
    directory = pathlib.Path(directory)
    state_path = directory / STATE_FILE
    if not state_path.exists():
        found = _weights_files(directory)
        return found, f"{state_path} is missing" if found else None
    try:
        return _parse_state(directory, state_path.read_text()), None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return _weights_files(directory), f"{state_path} is unreadable ({_reason(error)})"


def has_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether a save has happened in `directory`: state.json exists (readable or not), or a weights file does."""
    return (pathlib.Path(directory) / STATE_FILE).exists() or bool(_weights_files(pathlib.Path(directory)))


def latest_checkpoint(directory: str | os.PathLike) -> dict | None:
    """The newest checkpoint recorded, unverified, or None when there is none."""
    checkpoints, _ = _recorded_checkpoints(directory)
    return checkpoints[0] if checkpoints else None


def save_checkpoint(model: keras.Model, directory: str | os.PathLike, epoch: int, interrupted: bool = False,
                    keep: dict | None = None) -> str:
    """Saves `model`'s weights and optimizer state as the checkpoint after `epoch` completed epochs.

    The checkpoint before it stays on disk as the fallback: `keep` if given (one known
    to load, such as the checkpoint a run resumed from), else the newest one recorded.
    Weights files older than this checkpoint are then removed, and so are the
    temporaries of saves that were killed; newer ones, which this save cannot have
    made stale, are kept.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:05d}{'-interrupted' if interrupted else ''}.weights.h5"
    candidates = [*([keep] if keep else []), *_recorded_checkpoints(directory)[0]]
    previous = next((checkpoint for checkpoint in candidates
                     if checkpoint["weights"] != name and (directory / checkpoint["weights"]).is_file()), None)
    temporary = directory / f"saving-{name}"
    model.save_weights(temporary)
    os.replace(temporary, directory / name)
    record = {key: previous[key] for key in ("epoch", "weights", "interrupted")} if previous else None
    _write_atomically(directory / STATE_FILE,
                      json.dumps({"epoch": epoch, "weights": name, "interrupted": interrupted, "previous": record}))
    for stale in directory.glob("*.weights.h5"):
        match = WEIGHTS_FILE.fullmatch(stale.name)
        older = match is not None and (int(match[1]), bool(match[2])) < (epoch, interrupted)
        if stale.name not in (name, record and record["weights"]) and (older or stale.name.startswith("saving-")):
            stale.unlink()
    return str(directory / name)


def load_checkpoint(model: keras.Model, directory: str | os.PathLike) -> dict | None:
    """Loads the newest checkpoint that loads into `model` (and its optimizer, if built); returns it.

    A checkpoint that does not load is reported on stderr with the one used instead.
    Returns None when `directory` holds no checkpoint; raises WorkdirError, naming the
    files and what to do, when none loads: removing the folder is suggested only when
    no file in it even opens.

    Constant learning rates stay the config's: Keras saves them as optimizer variables,
    and `--resume --learning_rate X` must train at X.
    """
    checkpoints, problem = _recorded_checkpoints(directory)
    if not checkpoints and problem is None:
        return None
    failures = [problem] if problem else []
    configured = _constant_learning_rates(model)
    opened = []  # the files that are whole HDF5 files, though they do not load
    for checkpoint in checkpoints:
        try:
            _load_weights(model, checkpoint["path"])
        except Exception as error:  # whatever the reason, this file cannot be resumed from
            if _opens(checkpoint["path"]):
                opened.append(checkpoint["path"])
                failures.append(f"{checkpoint['path']} does not load into this model ({_reason(error)})")
            else:
                failures.append(f"{checkpoint['path']} is unreadable ({_reason(error)})")
            continue
        for optimizer, learning_rate in configured:
            optimizer.learning_rate = learning_rate
        for failure in failures:
            print(f"warning: {failure}; using the checkpoint of epoch {checkpoint['epoch']} "
                  f"({checkpoint['path']}) instead", file=sys.stderr)
        return checkpoint
    if not checkpoints:
        failures.append("no weights files are left")
    if opened:
        files = (f"{opened[0]} opens as a weights file, so keep it" if len(opened) == 1
                 else f"{', '.join(opened)} open as weights files, so keep them")
        raise WorkdirError(
            f"no checkpoint in {directory} loads into this model: {'; '.join(failures)}. {files}: if the model was "
            f"built with another config than the checkpoints were trained with, rebuild it with theirs "
            f"({RUN_FILE}'s, without overrides that change the architecture); otherwise restore the files from a "
            f"backup, or train afresh in another --workdir")
    raise WorkdirError(f"no readable checkpoint in {directory}: {'; '.join(failures)}. Restore these files "
                       f"from a backup, or train afresh: another --workdir, or remove {directory} and rerun "
                       f"without --resume")


def overrides_that_do_not_fit(build, saved, overrides: dict, directory: str | os.PathLike) -> list[str]:
    """The keys of `overrides` that stop the run's checkpoints from loading: those that change the architecture.

    `build(config)` makes the model as the run does (compiled, when it resumes
    the optimizer too). The newest checkpoint that loads into the model of the
    saved config is tried with each override alone; an override that cannot be
    applied alone (it is valid only with the others) counts as one that does not
    fit. Empty when no checkpoint loads into the saved config's model either: then
    the files, not the overrides, are at fault.
    """
    fitting = next((checkpoint["path"] for checkpoint in _recorded_checkpoints(directory)[0]
                    if _loads(build, saved, checkpoint["path"])), None)
    if fitting is None:
        return []
    return [key for key, value in overrides.items() if not _loads(build, saved, fitting, **{key: value})]


def _loads(build, config, path: str, **overrides) -> bool:
    """Whether the weights file at `path` loads into `build(config with overrides)`, quietly."""
    try:
        _load_weights(build(config_lib.replace(config, **overrides)), path)
    except Exception:  # a config invalid alone, a file that does not load: either way, it does not fit
        return False
    return True


def _opens(path: str) -> bool:
    """Whether `path` is a whole HDF5 file, as every weights file Keras finished writing is."""
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def restore_checkpoint(model: keras.Model, directory: str | os.PathLike) -> int:
    """Loads the newest readable checkpoint into `model` (see `load_checkpoint`).

    Returns the number of completed epochs, 0 when there is no checkpoint.
    """
    checkpoint = load_checkpoint(model, directory)
    return checkpoint["epoch"] if checkpoint else 0


def _load_weights(model: keras.Model, path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError("the file is missing")
    with warnings.catch_warnings():
        # Keras only warns when a file lacks the optimizer state the model has: resuming
        # from it would silently restart the optimizer's moments and step count.
        warnings.filterwarnings("error", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _constant_learning_rates(model: keras.Model) -> list[tuple[keras.optimizers.Optimizer, float]]:
    """(optimizer, its learning rate) for the model's optimizers whose rate is a variable, not a schedule."""
    return [(optimizer, float(keras.ops.convert_to_numpy(optimizer.learning_rate))) for optimizer in _optimizers(model)
            if isinstance(optimizer.learning_rate, keras.Variable)]


def _optimizers(model: keras.Model) -> list[keras.optimizers.Optimizer]:
    """Every optimizer `model` holds: `model.optimizer` and any other in the attributes of the model or of
    its layers, also inside lists, tuples and dicts (as Keras's weights file finds them to save)."""
    found, seen = [], set()

    def visit(value) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, keras.optimizers.Optimizer):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, keras.layers.Layer):
            for item in vars(value).values():
                visit(item)

    visit(getattr(model, "optimizer", None))
    visit(model)
    return found
