"""Pieces the benchmarks share: running the CLIs, saving a model's sample grid, a server on free ports."""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

REPO = pathlib.Path(__file__).resolve().parents[1]
READY = re.compile(r"serving gRPC on (\S+:\d+), (?:REST on (\S+:\d+)|REST disabled)")
STOP_SECONDS = 15.0  # the server's own grace period is 5 s


def run(command: list[str]) -> str:
    """Runs a command (printed first) and returns its stdout; on failure, shows its stderr's end and exits."""
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"exit code {result.returncode} from: {' '.join(command)}")
    return result.stdout


def save_grid(workdir: pathlib.Path, grid_name: str, path: pathlib.Path) -> None:
    """One of the model's TensorBoard grids (`summaries`, from fixed seeds) of the last checkpoint, as a PNG."""
    from export import runs
    from serving import images

    _, _, model, _ = runs.load_trained_model(workdir)
    grid = model.summaries(None)[grid_name].numpy()
    images.save_png(path, images.grid(grid, columns=8))


@dataclasses.dataclass(frozen=True)
class RunningServer:
    process: subprocess.Popen
    grpc_target: str  # host:port
    rest_target: str | None  # host:port; None with REST disabled


@contextlib.contextmanager
def running_server(model: str, base_path: pathlib.Path, log_path: pathlib.Path, startup_seconds: float,
                   flags: list[str], rest: bool = False) -> Iterator[RunningServer]:
    """Starts `python -m serving.server` serving `model` on a free gRPC port (and REST port, with `rest`);
    always stops it."""
    command = [sys.executable, "-m", "serving.server", "--port", "0", "--rest_api_port", str(free_port() if rest else 0),
               "--model_name", model, "--model_base_path", str(base_path),
               "--file_system_poll_wait_seconds", "0", *flags]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        grpc_target, rest_target = _wait_until_serving(server, log_path, startup_seconds)
        yield RunningServer(server, grpc_target, rest_target)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(server: subprocess.Popen, log_path: pathlib.Path,
                        startup_seconds: float) -> tuple[str, str | None]:
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline:
        match = READY.search(log_path.read_text())
        if match:
            return match.group(1), match.group(2)
        if server.poll() is not None:
            raise SystemExit(f"serving.server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    raise SystemExit(f"serving.server not ready after {startup_seconds:g} s; its log is {log_path}")
