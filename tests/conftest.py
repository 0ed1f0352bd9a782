"""The suite's data: generated stand-ins by default, the prepared datasets for the tests that need them.

Every test runs against a TFDS data directory that the session writes itself
(`synthetic_tfds`: `mnist`, `binarized_mnist`, `fashion_mnist` with TFDS's own
features and splits, a few thousand generated images; and `synthetic_texts`, a folder of
texts), so the suite needs neither prepared data nor a network. `TFDS_DATA_DIR` points there for the whole session,
in this process and in every child process a test starts.

Tests marked `real_data` check what only the real datasets have (split sizes, the
fixed Larochelle–Murray binarization, the papers' protocols). They run against
the `TFDS_DATA_DIR` the suite was started with when it holds the prepared
datasets, and are skipped otherwise, with a reason saying how to enable them.
With `ZOO_REQUIRE_REAL_DATA=1` (set by `.ci/run`) such a skip is a failure instead.

Two helpers for every package's tests: `run_main` runs a CLI's `main` in this process, and
`made_once` makes a folder (a trained run) once per pytest run, shared by the xdist workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import os
import pathlib
import shutil
from typing import Callable

import pytest

PREPARED = {"mnist": "3.0.1", "binarized_mnist": "1.0.0", "fashion_mnist": "3.0.1"}
REAL_DATA_DIR = os.environ.get("TFDS_DATA_DIR")  # read before the session replaces it


def _missing_prepared_datasets() -> list[str]:
    return [f"{name} {version}" for name, version in PREPARED.items()
            if not REAL_DATA_DIR or not (pathlib.Path(REAL_DATA_DIR) / name / version / "dataset_info.json").is_file()]


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: needs the prepared TFDS datasets mnist, binarized_mnist and "
                                       "fashion_mnist in TFDS_DATA_DIR; skipped without them")


def _use_data_dir(patch: pytest.MonkeyPatch, data_dir: str) -> None:
    """TFDS reads TFDS_DATA_DIR once, when imported; the zoo and child processes read the variable."""
    import tensorflow_datasets as tfds

    patch.setenv("TFDS_DATA_DIR", data_dir)
    patch.setattr(tfds.core.constants, "DATA_DIR", data_dir)


@pytest.fixture(scope="session", autouse=True)
def synthetic_data_dir(tmp_path_factory) -> str:
    """The session's generated TFDS data directory, in force for every test, with a folder of texts."""
    import synthetic_texts
    import synthetic_tfds

    data_dir = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    synthetic_tfds.write(data_dir)
    synthetic_texts.write(pathlib.Path(data_dir) / "texts")  # synthetic_texts.folder()
    with pytest.MonkeyPatch.context() as patch:
        _use_data_dir(patch, data_dir)
        yield data_dir


@dataclasses.dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def run_main() -> Callable[..., CliResult]:
    """`run_main(main, argv) -> CliResult`: a CLI's `main` in this process, output captured; much cheaper than
    a subprocess, which imports TensorFlow again."""
    def run(main, argv) -> CliResult:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            returncode = main([str(arg) for arg in argv])
        return CliResult(returncode, stdout.getvalue(), stderr.getvalue())

    return run


@pytest.fixture(scope="session")
def made_once(tmp_path_factory) -> Callable[[str, Callable[[pathlib.Path], None]], pathlib.Path]:
    """`made_once(name, make) -> folder`: `make(folder)` fills the folder once per pytest run, not once per
    pytest-xdist worker. The workers share a folder beside their own temporary ones; the first to ask makes it
    under a file lock while the others wait, then reuse it (pytest-xdist's documented pattern). Tests only read
    the folder: one that writes works on a copy."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # shared by the workers of this run

    def made(name: str, make: Callable[[pathlib.Path], None]) -> pathlib.Path:
        folder, done = root / name, root / f"{name}.done"
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
                make(folder)
                done.touch()
        return folder

    return made


@pytest.fixture(autouse=True)
def _real_data_for_marked_tests(request, monkeypatch):
    if request.node.get_closest_marker("real_data") is None:
        return
    missing = _missing_prepared_datasets()
    if missing:
        reason = (f"needs the prepared TFDS datasets ({', '.join(missing)} missing from TFDS_DATA_DIR="
                  f"{REAL_DATA_DIR or '(unset)'}): run with TFDS_DATA_DIR set to a TFDS data directory that "
                  f"holds them (`tfds build mnist binarized_mnist fashion_mnist` with internet makes one)")
        if os.environ.get("ZOO_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"ZOO_REQUIRE_REAL_DATA=1, but this test {reason}")
        pytest.skip(reason)
    _use_data_dir(monkeypatch, REAL_DATA_DIR)
