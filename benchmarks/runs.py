"""Pieces the result-table benchmarks share: running the CLIs and saving a model's sample grid."""

from __future__ import annotations

import pathlib
import subprocess
import sys


def run(command: list[str]) -> str:
    """Runs a command (printed first) and returns its stdout; on failure, shows its stderr's end and exits."""
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"exit code {result.returncode} from: {' '.join(command)}")
    return result.stdout


def save_grid(workdir: pathlib.Path, grid_name: str, path: pathlib.Path) -> None:
    """One of the model's TensorBoard grids (`summary_images`, from fixed seeds) of the last checkpoint, as a PNG."""
    from export import runs
    from serving import images

    _, _, model, _ = runs.load_trained_model(workdir)
    grid = model.summary_images(None)[grid_name].numpy()
    images.save_png(path, images.grid(grid, columns=8))
