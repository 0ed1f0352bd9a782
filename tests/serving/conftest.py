"""Fixtures for serving/: a tiny trained model, and servers in subprocesses on loopback ports.

`trained_base` trains a tiny zoo.vae once per pytest run with the real CLI and exports it, giving a
TF Serving base path with version 1. `start_server(*flags, implementation=...)` starts
`python -m serving.server` (or the real `tensorflow_model_server`, when on PATH) on free
ports and waits until its models are AVAILABLE; every server is stopped at the end.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60
IMPLEMENTATIONS = ("serving.server", "tensorflow_model_server")
TINY_FIT = ["--set", "hidden_units=16", "--set", "latent_units=4", "--epochs", "1", "--max_examples", "200",
            "--batch_size", "20", "--steps_per_epoch", "5", "--validation_steps", "1", "--no_download",
            "--verbose", "0"]


def environment() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def run_module():
    """`run_module("serving.client", *args) -> CompletedProcess`: `python -m` in the repository."""
    def run(module: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=environment(),
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def trained_base(made_once) -> pathlib.Path:
    """WORKDIR/serving/vae of a tiny zoo.vae trained for one short epoch (once per pytest run, shared by the
    xdist workers); holds version 1."""
    def fit(workdir):
        result = subprocess.run([sys.executable, "-m", "training.fit", "zoo.vae", "--workdir", str(workdir),
                                 *TINY_FIT], cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    return made_once("served-run", fit) / "serving" / "vae"


@pytest.fixture
def base_copy(trained_base, tmp_path) -> pathlib.Path:
    """A private copy of the base path (tests add or break versions in it)."""
    return pathlib.Path(shutil.copytree(trained_base, tmp_path / "vae"))


class Server:
    """A server process on loopback: its ports, stubs, REST helper and log."""

    def __init__(self, command: list[str], grpc_port: int, rest_port: int, log_dir: pathlib.Path):
        self.grpc_port, self.rest_port = grpc_port, rest_port
        self.log_path = log_dir / f"server-{grpc_port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=environment(), stdout=log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_available(self, model: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log[-3000:]}")
            try:
                states = [status.state for status in self.models.GetModelStatus(request, timeout=2).model_version_status]
                if get_model_status_pb2.ModelVersionStatus.AVAILABLE in states:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{model} not AVAILABLE within {START_TIMEOUT_S} s:\n{self.log[-3000:]}")

    def rest(self, path: str, body=None, raw: bytes | None = None) -> tuple[int, object]:
        """(HTTP status, parsed JSON or text) of GET path, or POST when a body is given."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def stop(self, signum=signal.SIGTERM) -> int:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"server did not stop within {STOP_TIMEOUT_S} s of {signum.name}:\n{self.log[-3000:]}")
        return self.process.returncode


def _command(implementation: str, grpc_port: int, rest_port: int, flags) -> list[str]:
    if implementation == "serving.server":
        return [sys.executable, "-m", "serving.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}", *flags]
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH (no PyPI or Debian package exists; install it or run "
                    "the tensorflow/serving Docker image to run the contract tests against the real server)")
    return [binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}", *flags]


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """`start_server(*flags, model="vae", implementation="serving.server") -> Server`, ready to answer."""
    started = []
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(*flags: str, model: str | None = "vae", implementation: str = "serving.server") -> Server:
        grpc_port, rest_port = free_port(), free_port()
        server = Server(_command(implementation, grpc_port, rest_port, flags), grpc_port, rest_port, log_dir)
        started.append(server)
        if model:
            server.wait_until_available(model)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session", params=IMPLEMENTATIONS)
def server(request, start_server, trained_base):
    """The tiny model served as `vae` by each implementation (the real one only when installed)."""
    return start_server("--model_name=vae", f"--model_base_path={trained_base}",
                        implementation=request.param)
