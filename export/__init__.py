"""Export: a `.keras` file and a TF Serving SavedModel for any zoo model.

The model declares its signatures (`model.serving_signatures()`: name →
(function, input signature)); this module feeds them to
`keras.export.ExportArchive`. The SavedModel holds only TensorFlow ops, so
`tf.saved_model.load` and `tensorflow_model_server` run it without this project
or TFP installed.

    WORKDIR/model.keras
    WORKDIR/samples.png                 (`model.sample` on the seeds 0 … 15, as the serving client draws them;
                                         samples.txt, one per line, for a model of text)
    WORKDIR/serving/<name>/<version>/   (integer versions; a new export takes the next one)

Each SavedModel is written to a hidden staging folder and renamed into place, so a
server polling `serving/<name>/` never sees a partial version; the files are written
beside their names and renamed the same way.

TensorFlow and Keras are imported when an export runs, so that `python -m export` can quiet
TensorFlow's start-up logs before it loads.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
import shutil

import numpy as np

from serving import images as image_lib

SAMPLES_FILE = "samples.png"
TEXT_SAMPLES_FILE = "samples.txt"
SAMPLE_GRID_SIZE = 16
"""Samples in samples.png, 4 × 4: the seeds 0 … 15, the grid `python -m serving.client --num_samples 16` draws.
Not more, for the pixel-by-pixel samplers: the default PixelCNN++ takes about 2.5 minutes for these 16 on
2 busy CPU cores, even compiled."""


class ExportError(RuntimeError):
    """An export that cannot be written, with the fix."""


@dataclasses.dataclass(frozen=True)
class Exported:
    keras_path: str
    savedmodel_dir: str
    version: int
    samples_path: str  # samples.png (or samples.txt), beside model.keras


def versions(base_dir) -> list[int]:
    """Integer version folders under a TF Serving model base path, ascending."""
    base_dir = pathlib.Path(base_dir)
    if not base_dir.is_dir():
        return []
    return sorted(int(path.name) for path in base_dir.iterdir() if path.is_dir() and path.name.isdigit())


def write_savedmodel(model, directory) -> None:
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    # Keras finds lookup tables (a tokenizer's vocabulary) by tracing the model's default call, which
    # fails for models whose call takes more than images (a caption); the checkpoint view needs no trace.
    for trackable in tf.train.TrackableView(model).descendants():
        if isinstance(trackable, tf.saved_model.experimental.TrackableResource):
            archive.track(trackable)
    for name, (function, input_signature) in model.serving_signatures().items():
        archive.add_endpoint(name, function, input_signature=input_signature)
    archive.write_out(str(directory), verbose=False)


def write_samples(model, workdir) -> pathlib.Path:
    """Writes WORKDIR/samples.png, the grid of `model.sample` on the seeds 0 … SAMPLE_GRID_SIZE − 1, or for a
    model of text (strings) WORKDIR/samples.txt, one text per line.

    A model whose `sample` offers `jit_compile` (a pixel-by-pixel loop) draws them compiled by XLA,
    10–30× faster on CPU, the same images up to float rounding (`docs/autoregressive.md`).
    """
    import tensorflow as tf

    seeds = tf.range(SAMPLE_GRID_SIZE, dtype=tf.int64)
    compiled = {"jit_compile": True} if "jit_compile" in inspect.signature(model.sample).parameters else {}
    samples = model.sample(seeds, **compiled)
    if samples.dtype == tf.string:
        path = pathlib.Path(workdir) / TEXT_SAMPLES_FILE
        lines = "".join(sample.decode() + "\n" for sample in samples.numpy())
        _write_then_rename(lambda staging: staging.write_text(lines), path)
        return path
    grid = image_lib.grid(np.asarray(samples))
    path = pathlib.Path(workdir) / SAMPLES_FILE
    _write_then_rename(lambda staging: image_lib.save_png(staging, grid), path)
    return path


def export(model, workdir, name: str, version: int | None = None) -> Exported:
    """Writes WORKDIR/model.keras, WORKDIR/samples.png and WORKDIR/serving/<name>/<version>/ of a zoo model."""
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
    _write_then_rename(model.save, keras_path)
    samples_path = write_samples(model, workdir)

    staging = base_dir / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    write_savedmodel(model, staging)
    os.rename(staging, base_dir / str(version))
    return Exported(str(keras_path), str(base_dir / str(version)), version, str(samples_path))


def _write_then_rename(write, path: pathlib.Path) -> None:
    """`write(staging path)`, then the rename: a reader sees the old file or the whole new one."""
    staging = path.with_name(f".staging-{path.name}")
    write(staging)
    os.replace(staging, path)
