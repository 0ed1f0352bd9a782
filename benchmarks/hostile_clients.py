"""Hostile clients against `python -m serving.server`: does a good request still get through?

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/hostile_clients.py
    python benchmarks/hostile_clients.py --attack_seconds 30 --idle_sockets 200

One server (the untrained default `zoo.vae`, exported to a temporary folder) on loopback.
Good requests — one seed to `serving_default`, over gRPC and over REST — are timed every
`--probe_interval` seconds before, during and after an attack of `--attack_seconds`:

* malformed gRPC: TensorProtos that declare 10^9 or 10^11 rows and carry one value, or
  40000 dimensions, a `tensor_content` shorter than its shape, NaN images, `log_likelihood` with k overflowing
  int64, 1 MiB model names, unknown versions, wrong dtypes — from `--attackers` threads;
* malformed REST: `{"instances": [null]}`, integers beyond int64, booleans as seeds, objects
  in numeric inputs, JSON nested 5000 deep, a non-ASCII version path and Content-Length,
  unknown methods and paths — raw HTTP from `--attackers` threads;
* `--idle_sockets` TCP connections to the REST port that never send a byte,
  `--slow_sockets` that send a request one byte per second (a slowloris), and
  `--body_holders` that declare a 64 MiB body and never send it; each one the
  server closes is replaced at once, so the pressure lasts the whole attack.

Reported: requests sent and status codes received per attack, the server's RSS (sampled) and
peak RSS (VmHWM), p50 / failures of the good requests per phase, and then the time and peak-RSS
growth of one `log_likelihood` request at its budget (1 image, k = 2^20 importance samples). It passes when the server
answered every malformed request with a client error (no INTERNAL, no HTTP 5xx but 503/504
for load), every good request succeeded, and the during-attack p50 stays within 10x of before.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import pathlib
import platform
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import zoo
from export import write_savedmodel
from runs import running_server
from serving.client import predict_request

MODEL = "vae"
MIB = 1 << 20


# The attacks.

def _proto(shape, dtype=types_pb2.DT_INT64, **values) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _predict(signature="", model=MODEL, version=None, **inputs) -> predict_pb2.PredictRequest:
    return predict_request(model, inputs, signature, version)


def grpc_attacks() -> dict[str, predict_pb2.PredictRequest]:
    images = np.zeros((2, 28, 28, 1), np.float32)
    return {
        "10^9 rows, one value (32 bytes)": _predict(seed=_proto([10**9], int64_val=[1])),
        "10^11 rows, one value": _predict(seed=_proto([10**11], int64_val=[1])),
        "content shorter than shape": _predict(seed=_proto([16], tensor_content=bytes(8))),
        "40000 dimensions of 2^62": _predict(seed=_proto([2**62] * 40_000, int64_val=[1])),
        "100000x100000 image, one value": _predict(
            "reconstruct", images=_proto([1, 10**5, 10**5, 1], types_pb2.DT_FLOAT, float_val=[0.5])),
        "NaN image": _predict("reconstruct", images=np.full((1, 28, 28, 1), np.nan, np.float32)),
        "k = 2^62 + 600000 (int64 overflow)": _predict(
            "log_likelihood", images=images, num_importance_samples=np.full(2, 2**62 + 600_000, np.int64),
            seed=np.array([1, 2], np.int64)),
        "k = 10^6 on 4 images": _predict(
            "log_likelihood", images=np.zeros((4, 28, 28, 1), np.float32),
            num_importance_samples=np.full(4, 10**6, np.int64), seed=np.arange(4, dtype=np.int64)),
        "1 MiB model name": _predict(model="m" * MIB, seed=np.array([1], np.int64)),
        "unknown version": _predict(version=987654321, seed=np.array([1], np.int64)),
        "float seeds": _predict(seed=np.array([1.5], np.float32)),
    }


def _http(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    headers = {"Host": "localhost", "Content-Length": str(len(body)), **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    return head.encode("utf-8") + b"\r\n" + body


def rest_attacks() -> dict[str, bytes]:
    predict = f"/v1/models/{MODEL}:predict"

    def post(body: str, path: str = predict) -> bytes:
        return _http("POST", path, body.encode())

    return {
        '{"instances": [null]}': post('{"instances": [null]}'),
        "integer beyond int64": post('{"instances": [123456789012345678901234567890]}'),
        "boolean seed": post('{"instances": [true]}'),
        'object in a numeric input': post('{"instances": [{"seed": {"a": 1}}]}'),
        '{"b64": ...} in a numeric input': post('{"instances": [{"b64": "AAAA"}]}'),
        "JSON nested 5000 deep": post('{"instances": ' + "[" * 5000 + "1" + "]" * 5000 + "}"),
        "non-ASCII version path": post('{"instances": [1]}', f"/v1/models/{MODEL}/versions/²:predict"),
        "non-ASCII Content-Length": _http("POST", predict, b"{}", {"Content-Length": "٣"}),
        "negative Content-Length": _http("POST", predict, b"{}", {"Content-Length": "-5"}),
        "not JSON": post("{{{{"),
        "unknown method": _http("BREW", predict),
        "unknown path": _http("GET", "/v2/nothing"),
        "8000-character model name": post('{"instances": [1]}', f"/v1/models/{'m' * 8000}:predict"),
    }


def _status_of_http(target: str, payload: bytes, timeout: float) -> str:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as connection:
            connection.sendall(payload)
            head = connection.recv(64)
    except OSError as error:
        return type(error).__name__
    parts = head.split(b" ", 2)
    return parts[1].decode(errors="replace") if len(parts) > 1 and head.startswith(b"HTTP/") else "no answer"


class Tally:
    """Requests sent and answers received, per attack, from many threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answers: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, attack: str, answer: str) -> None:
        with self.lock:
            self.answers[attack][answer] += 1


def run_attackers(count: int, stop: threading.Event, attacks: dict, send: Callable[[object], str],
                  tally: Tally) -> list[threading.Thread]:
    def attacker(offset: int):
        names = list(attacks)
        index = offset
        while not stop.is_set():
            name = names[index % len(names)]
            tally.add(name, send(attacks[name]))
            index += 1

    threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _closed_by_peer(connection: socket.socket) -> bool:
    """Whether the server has closed the connection; what it sent first (a 408, say) is read and dropped."""
    while select.select([connection], [], [], 0)[0]:
        if connection.recv(65536) == b"":
            return True
    return False


HELD_SOCKETS = {  # name → (bytes sent at once, then bytes trickled one per second)
    "idle connection": (b"", b""),
    "slowloris (1 byte/s)": (b"", _http("POST", f"/v1/models/{MODEL}:predict", b'{"instances": [1]}')),
    "declares a 64 MiB body, sends none": (
        _http("POST", f"/v1/models/{MODEL}:predict", headers={"Content-Length": str(64 * MIB)}), b""),
}


def hold_sockets(target: str, count: int, kind: str, stop: threading.Event, tally: Tally) -> threading.Thread:
    """Keeps `count` connections of a HELD_SOCKETS kind open until `stop`, opening a new one for each the
    server closes, so the pressure lasts the whole attack."""
    host, port = target.rsplit(":", 1)
    at_once, trickled = HELD_SOCKETS[kind]

    def connect() -> list | None:  # [socket, bytes trickled so far]
        try:
            connection = socket.create_connection((host, int(port)), timeout=5)
            connection.sendall(at_once)
            return [connection, 0]
        except OSError as error:
            tally.add(kind, f"connect: {type(error).__name__}")
            return None

    def run():
        connections = [held for held in (connect() for _ in range(count)) if held]
        while not stop.wait(1.0):
            for held in list(connections):
                connection, sent = held
                try:
                    if sent < len(trickled):
                        connection.sendall(trickled[sent:sent + 1])
                        held[1] += 1
                    if not _closed_by_peer(connection):
                        continue
                except OSError:
                    pass
                connection.close()
                connections.remove(held)
                tally.add(kind, "closed by server")
                if (replacement := connect()) is not None:
                    connections.append(replacement)
        for connection, _ in connections:
            tally.add(kind, "open at the end")
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# The good requests and the server's memory.

class Probe:
    """Times one good gRPC and one good REST request every `interval` seconds, labelled by phase."""

    def __init__(self, grpc_target: str, rest_target: str, interval: float, timeout: float):
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(grpc_target))
        self.rest_target, self.interval, self.timeout = rest_target, interval, timeout
        self.phase = "before"
        self.results: dict[tuple[str, str], list[float | None]] = collections.defaultdict(list)  # None: failed
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _time(self, call: Callable[[], bool]) -> float | None:
        started = time.perf_counter()
        try:
            ok = call()
        except Exception:  # noqa: BLE001 (any failure of a good request counts as one)
            ok = False
        return time.perf_counter() - started if ok else None

    def _grpc(self) -> bool:
        return bool(self.stub.Predict(_predict(seed=np.array([7], np.int64)), timeout=self.timeout).outputs)

    def _rest(self) -> bool:
        payload = _http("POST", f"/v1/models/{MODEL}:predict", b'{"instances": [7]}', {"Connection": "close"})
        host, port = self.rest_target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=self.timeout) as connection:
            connection.sendall(payload)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        return answer.startswith(b"HTTP/1.") and answer.split(b" ", 2)[1] == b"200" and b"predictions" in answer

    def _run(self):
        while not self.stop.wait(self.interval):
            phase = self.phase
            self.results[("gRPC", phase)].append(self._time(self._grpc))
            self.results[("REST", phase)].append(self._time(self._rest))


LOG_LIKELIHOOD_BUDGET = 1 << 20  # images × importance samples the VAE's log_likelihood signature accepts


def at_budget_log_likelihood(stub, pid: int, timeout: float) -> tuple[str, float, int]:
    """(status, seconds, growth of the server's peak RSS) of one `log_likelihood` request at its budget."""
    before, started = rss_bytes(pid, "VmHWM"), time.perf_counter()
    request = _predict("log_likelihood", images=np.zeros((1, 28, 28, 1), np.float32),
                       num_importance_samples=np.array([LOG_LIKELIHOOD_BUDGET], np.int64), seed=np.array([1], np.int64))
    try:
        stub.Predict(request, timeout=timeout)
        status = "OK"
    except grpc.RpcError as error:
        status = error.code().name
    return status, time.perf_counter() - started, rss_bytes(pid, "VmHWM") - before


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def sample_rss(pid: int, stop: threading.Event, samples: list[int]) -> threading.Thread:
    def run():
        while not stop.wait(0.2):
            with contextlib.suppress(OSError):
                samples.append(rss_bytes(pid))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# The report.

GRPC_CLIENT_ERRORS = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
                      "DEADLINE_EXCEEDED"}


def print_attacks(title: str, tally: Tally, acceptable: Callable[[str], bool], counted: str = "sent") -> bool:
    print(f"\n{title}\n\n| attack | {counted} | answers |\n|---|---|---|")
    good = True
    for name, answers in tally.answers.items():
        text = ", ".join(f"{answer} × {count}" for answer, count in answers.most_common())
        print(f"| {name} | {sum(answers.values())} | {text} |")
        good &= all(acceptable(answer) for answer in answers)
    return good


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attack_seconds", type=float, default=20.0)
    parser.add_argument("--calm_seconds", type=float, default=5.0, help="probing before and after the attack")
    parser.add_argument("--attackers", type=int, default=4, help="threads per malformed-request attack")
    parser.add_argument("--idle_sockets", type=int, default=64)
    parser.add_argument("--slow_sockets", type=int, default=50)
    parser.add_argument("--body_holders", type=int, default=16,
                        help="connections that declare a 64 MiB body and send none of it")
    parser.add_argument("--probe_interval", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of every request, in seconds")
    parser.add_argument("--startup_seconds", type=float, default=120.0)
    parser.add_argument("--server_flag", action="append", default=[], metavar="FLAG")
    args = parser.parse_args(argv)

    print(f"CPUs: {len(os.sched_getaffinity(0))} usable of {os.cpu_count()} "
          f"({platform.processor() or platform.machine()}); loopback only")
    print(f"{args.calm_seconds:g} s calm, {args.attack_seconds:g} s attack ({args.attackers} threads per "
          f"malformed-request kind, {args.idle_sockets} idle + {args.slow_sockets} slowloris + "
          f"{args.body_holders} body-withholding sockets, each replaced when closed), "
          f"{args.calm_seconds:g} s calm; good requests every {args.probe_interval:g} s")
    with tempfile.TemporaryDirectory() as workdir:
        workdir = pathlib.Path(workdir)
        spec = zoo.get(f"zoo.{MODEL}")
        write_savedmodel(spec.build(spec.make_config()), workdir / MODEL / "1")
        with running_server(MODEL, workdir / MODEL, workdir / "server.log", args.startup_seconds,
                            args.server_flag, rest=True) as server:
            pid = server.process.pid
            rss, rss_stop = [], threading.Event()
            sample_rss(pid, rss_stop, rss)
            probe = Probe(server.grpc_target, server.rest_target, args.probe_interval, args.timeout)
            probe.thread.start()
            time.sleep(args.calm_seconds)

            probe.phase, stop = "during", threading.Event()
            grpc_tally, rest_tally, socket_tally = Tally(), Tally(), Tally()
            channel = grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", 8 * MIB)])
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def send_grpc(request) -> str:
                try:
                    stub.Predict(request, timeout=args.timeout)
                    return "OK"
                except grpc.RpcError as error:
                    return error.code().name

            threads = [
                *run_attackers(args.attackers, stop, grpc_attacks(), send_grpc, grpc_tally),
                *run_attackers(args.attackers, stop, rest_attacks(),
                               lambda payload: _status_of_http(server.rest_target, payload, args.timeout), rest_tally),
                hold_sockets(server.rest_target, args.idle_sockets, "idle connection", stop, socket_tally),
                hold_sockets(server.rest_target, args.slow_sockets, "slowloris (1 byte/s)", stop, socket_tally),
                hold_sockets(server.rest_target, args.body_holders, "declares a 64 MiB body, sends none", stop,
                             socket_tally),
            ]
            time.sleep(args.attack_seconds)
            stop.set()
            for thread in threads:
                thread.join(args.timeout + 5)
            probe.phase = "after"
            time.sleep(args.calm_seconds)
            probe.stop.set()
            probe.thread.join(args.timeout + 5)
            rss_stop.set()
            alive = server.process.poll() is None
            peak = rss_bytes(pid, "VmHWM") if alive else 0
            budget = at_budget_log_likelihood(stub, pid, args.timeout) if alive else None

    grpc_ok = print_attacks("Malformed gRPC requests", grpc_tally, lambda code: code in GRPC_CLIENT_ERRORS)
    rest_ok = print_attacks("Malformed REST requests", rest_tally,
                            lambda status: status.isdigit() and 400 <= int(status) < 500 or status in ("503", "504"))
    print_attacks("Sockets held open", socket_tally, lambda answer: True, counted="connections")

    print("\n| good request | phase | answered | failed | p50 ms | max ms |\n|---|---|---|---|---|---|")
    failures, p50 = 0, {}
    for (api, phase), latencies in sorted(probe.results.items(), key=lambda item: (item[0][0],
                                          ["before", "during", "after"].index(item[0][1]))):
        answered = np.array([latency for latency in latencies if latency is not None])
        failed = len(latencies) - answered.size
        failures += failed
        p50[(api, phase)] = float(np.median(answered) * 1e3) if answered.size else float("inf")
        print(f"| {api} | {phase} | {answered.size} | {failed} | {p50[(api, phase)]:.1f} | "
              f"{answered.max() * 1e3 if answered.size else float('nan'):.1f} |")
    print(f"\nserver RSS: {rss[0] / MIB:.0f} MiB at start, {max(rss) / MIB:.0f} MiB sampled maximum, "
          f"peak (VmHWM) {peak / MIB:.0f} MiB; still running at the end: {alive}")
    if budget:
        print(f"then, alone, one log_likelihood request at the budget (1 image, k = {LOG_LIKELIHOOD_BUDGET}): "
              f"{budget[0]}, {budget[1]:.1f} s, peak RSS +{budget[2] / MIB:.0f} MiB")
    slowdown = max(p50[(api, "during")] / p50[(api, "before")] for api in ("gRPC", "REST"))
    verdicts = {
        "the server survived": alive,
        "every malformed gRPC request got a client error": grpc_ok,
        "every malformed REST request got a 4xx (or 503/504)": rest_ok,
        "every good request was answered": failures == 0,
        f"good-request p50 during / before = {slowdown:.1f} (target ≤ 10)": slowdown <= 10,
    }
    for text, passed in verdicts.items():
        print(f"{text}: {'PASS' if passed else 'FAIL'}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
