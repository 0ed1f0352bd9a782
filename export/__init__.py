"""Export: a `.keras` file and a TF Serving SavedModel for any zoo model.

The model declares its signatures (`model.serving_signatures()`: name →
(function, input signature)); this module feeds them to
`keras.export.ExportArchive`. The SavedModel holds only TensorFlow ops, so
`tf.saved_model.load` and `tensorflow_model_server` run it without this project
or TFP installed.

    WORKDIR/model.keras
    WORKDIR/serving/<name>/<version>/   (integer versions; a new export takes the next one)

Each SavedModel is written to a hidden staging folder and renamed into place, so a
server polling `serving/<name>/` never sees a partial version.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

import keras


class ExportError(RuntimeError):
    """An export that cannot be written, with the fix."""


@dataclasses.dataclass(frozen=True)
class Exported:
    keras_path: str
    savedmodel_dir: str
    version: int


def versions(base_dir) -> list[int]:
    """Integer version folders under a TF Serving model base path, ascending."""
    base_dir = pathlib.Path(base_dir)
    if not base_dir.is_dir():
        return []
    return sorted(int(path.name) for path in base_dir.iterdir() if path.is_dir() and path.name.isdigit())


def write_savedmodel(model: keras.Model, directory) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (function, input_signature) in model.serving_signatures().items():
        archive.add_endpoint(name, function, input_signature=input_signature)
    archive.write_out(str(directory), verbose=False)


def export(model: keras.Model, workdir, name: str, version: int | None = None) -> Exported:
    """Writes WORKDIR/model.keras and WORKDIR/serving/<name>/<version>/."""
    workdir = pathlib.Path(workdir)
    base_dir = workdir / "serving" / name
    existing = versions(base_dir)
    version = version if version is not None else (existing[-1] + 1 if existing else 1)
    if version < 1:
        raise ExportError(f"--version must be a positive integer, got {version}")
    if version in existing:
        raise ExportError(
            f"{base_dir / str(version)} already exists; export as a new version "
            f"(omit --version to use {existing[-1] + 1})"
        )

    base_dir.mkdir(parents=True, exist_ok=True)  # and the workdir, for model.keras
    keras_path = workdir / "model.keras"
    staging_keras = workdir / ".staging-model.keras"
    model.save(staging_keras)
    os.replace(staging_keras, keras_path)

    staging = base_dir / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    write_savedmodel(model, staging)
    os.rename(staging, base_dir / str(version))
    return Exported(str(keras_path), str(base_dir / str(version)), version)
