"""Fixtures for tests of `training/`: tiny fit commands, in subprocesses and in-process.

Subprocesses run `python -m training.fit` from the repository root with the
session's TFDS_DATA_DIR (tests/conftest.py; never downloading) and with a
timeout; their output goes to files so that a full pipe can never block them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_MODEL = ["--set", "hidden_units=16", "--set", "latent_units=4", "--set", "k=2"]
TWO_STOCHASTIC_LAYERS = ["--set", "stochastic_layers=2", "--set", "hidden_units=16,8", "--set", "latent_units=4,2",
                         "--set", "k=2"]
TINY_RUN = ["--max_examples", "200", "--batch_size", "20", "--steps_per_epoch", "2", "--validation_steps", "2",
            "--no_download", "--verbose", "2"]
FIT_TIMEOUT_S = 240  # generous: a tiny fit takes ~15 s on 2 idle cores, much more on a loaded machine


@dataclasses.dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return f"exit code {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr[-6000:]}"


def _fit_argv(model: str, workdir, *flags: str, stochastic_layers: int = 1, export: bool = False,
              model_flags: list[str] | None = None) -> list[str]:
    model_flags = model_flags or (TWO_STOCHASTIC_LAYERS if stochastic_layers == 2 else TINY_MODEL)
    return [model, "--workdir", str(workdir), *model_flags, *TINY_RUN, *flags,
            *([] if export else ["--no_export"])]


def _subprocess_env(**overrides: str | None) -> dict[str, str]:
    """The test environment for a child process; a None override removes the variable."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("TF_CONFIG", None)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class Process:
    """A child process running in the background, its output going to files."""

    def __init__(self, command: list[str], log_dir: pathlib.Path, env: dict[str, str] | None = None):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.command = command
        self._stdout_path = log_dir / "stdout.txt"
        self._stderr_path = log_dir / "stderr.txt"
        with open(self._stdout_path, "wb") as stdout, open(self._stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env or _subprocess_env(),
                                            stdout=stdout, stderr=stderr)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = FIT_TIMEOUT_S) -> Finished:
        """Waits for the exit; past `timeout` the process is killed and the test fails."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"{' '.join(self.command[1:4])} ... did not finish within {timeout} s:\n"
                        f"{self._finished().explain()}")
        return self._finished()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _finished(self) -> Finished:
        return Finished(self.process.returncode, self._stdout_path.read_text(errors="replace"),
                        self._stderr_path.read_text(errors="replace"))


@pytest.fixture(scope="session")
def fit_argv():
    """`fit_argv(model, workdir, *flags, stochastic_layers=1, export=False, model_flags=None)`: a tiny run's arguments.

    Tiny network and k = 2 (a VAE's; `model_flags` replaces them for another family), 200
    examples, 2 steps per epoch; later flags override earlier ones, so `*flags` can change any of these.
    """
    return _fit_argv


@pytest.fixture(scope="session")
def subprocess_env():
    """`subprocess_env(**overrides)`: this environment plus the repository on PYTHONPATH, without
    TF_CONFIG; an override of None removes a variable."""
    return _subprocess_env


@pytest.fixture(scope="session")
def start_process(tmp_path_factory):
    """`start_process(command, env=None) -> Process`; every process still running at the end is killed."""
    started: list[Process] = []

    def start(command: list[str], env: dict[str, str] | None = None) -> Process:
        started.append(Process(command, tmp_path_factory.mktemp("process-logs"), env))
        return started[-1]

    yield start
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def start_fit(start_process):
    """`start_fit(argv, env=None) -> Process`: `python -m training.fit ARGV` in the background."""

    def start(argv: list[str], env: dict[str, str] | None = None) -> Process:
        return start_process([sys.executable, "-m", "training.fit", *argv], env)

    return start


@pytest.fixture(scope="session")
def run_fit(start_fit):
    """`run_fit(argv, env=None, timeout=FIT_TIMEOUT_S) -> Finished`: one blocking CLI run."""

    def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = FIT_TIMEOUT_S) -> Finished:
        return start_fit(argv, env).wait(timeout)

    return run


@pytest.fixture(scope="session")
def fit_in_process():
    """`fit_in_process(argv, extra_callbacks=()) -> Finished`: `training.fit.main` in this process, output captured.

    Fast (TensorFlow is imported once) and monkeypatch-friendly.
    """
    from training import fit

    def run(argv: list[str], extra_callbacks=()) -> Finished:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = fit.main(argv, extra_callbacks=extra_callbacks)
        return Finished(code, stdout.getvalue(), stderr.getvalue())

    return run


TINY_FITS = [("zoo.vae", 1), ("zoo.iwae", 2)]  # both registry entries, both depths, in two runs


@dataclasses.dataclass(frozen=True)
class TinyFit:
    workdir: pathlib.Path
    stochastic_layers: int
    result: Finished


@pytest.fixture(scope="session")
def tiny_fits(made_once, start_fit):
    """Each of TINY_FITS trained 3 epochs in one go, with export, side by side: name → TinyFit. Trained once per
    pytest run, the xdist workers sharing the runs (`made_once`; tests only read them)."""
    def fit_side_by_side(folder: pathlib.Path) -> None:
        started = {}
        for name, layers in TINY_FITS:
            (folder / name).mkdir(parents=True)
            argv = _fit_argv(name, folder / name / "run", "--epochs", "3", stochastic_layers=layers, export=True)
            started[name] = start_fit(argv)
        for name, process in started.items():
            (folder / name / "result.json").write_text(json.dumps(dataclasses.asdict(process.wait())))

    folder = made_once("tiny-fits", fit_side_by_side)
    return {name: TinyFit(folder / name / "run", layers,
                          Finished(**json.loads((folder / name / "result.json").read_text())))
            for name, layers in TINY_FITS}


@pytest.fixture(scope="session")
def read_state():
    """`read_state(workdir) -> dict | None`: WORKDIR/checkpoints/state.json, parsed."""

    def read(workdir) -> dict | None:
        path = pathlib.Path(workdir) / "checkpoints" / "state.json"
        return json.loads(path.read_text()) if path.exists() else None

    return read


def _checkpoint_record(name: str) -> dict:
    return {"epoch": int(name.split("-")[1]), "weights": f"{name}.weights.h5",
            "interrupted": name.endswith("-interrupted")}


@pytest.fixture(scope="session")
def expected_state():
    """`expected_state(newest, previous=None) -> dict`: the state.json that names these checkpoints,
    e.g. `expected_state("epoch-00001-interrupted", "epoch-00001")`."""

    def expected(newest: str, previous: str | None = None) -> dict:
        return {**_checkpoint_record(newest), "previous": _checkpoint_record(previous) if previous else None}

    return expected


@pytest.fixture(scope="session")
def restore_checkpoint():
    """`restore_checkpoint(workdir, steps_per_epoch) -> (model, epochs)`: rebuilt, compiled, restored.

    Compiling first makes the optimizer (and its iteration count) part of the restore.
    """
    from export import runs

    def restore(workdir, steps_per_epoch: int):
        spec, config = runs.read_run(workdir)
        model = spec.build(config)
        model.compile_for_training(steps_per_epoch)
        epochs = runs.restore_checkpoint(model, runs.checkpoint_dir(workdir))
        return model, epochs

    return restore


@pytest.fixture(scope="session")
def read_summaries():
    """`read_summaries(directory) -> {tag: (plugin name, steps)}` over its TensorBoard event files."""
    import tensorflow as tf

    def read(directory) -> dict[str, tuple[str, list[int]]]:
        found: dict[str, tuple[str, list[int]]] = {}
        for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    found.setdefault(value.tag, (value.metadata.plugin_data.plugin_name, []))[1].append(event.step)
        return found

    return read
