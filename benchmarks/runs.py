"""Pieces the result-table benchmarks share: running the CLIs and saving a model's sample grid."""

from __future__ import annotations

import pathlib
import subprocess


def run(command: list[str]) -> str:
    """Runs a command (printed first), fails loudly, returns its stdout."""
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def save_grid(workdir: pathlib.Path, grid_name: str, path: pathlib.Path) -> None:
    """One of the model's TensorBoard grids (`summary_images`, from fixed seeds) of the last checkpoint, as a PNG."""
    from training import images, workdir as workdir_lib

    _, _, model, _ = workdir_lib.load_trained_model(workdir)
    grid = model.summary_images(None)[grid_name].numpy()
    images.save_png(path, images.grid(grid, columns=8))
