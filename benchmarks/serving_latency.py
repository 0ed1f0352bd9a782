"""Serving latency: one SavedModel called in-process and over gRPC to `serving.server`, side by side.

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/serving_latency.py
    python benchmarks/serving_latency.py --seconds 20 --model_base_path runs/vae/serving/vae
    python benchmarks/serving_latency.py --server_flag=--grpc_max_threads=64

Paths, each given requests of `--samples` seeds to `serving_default`:

* in-process: `tf.saved_model.load(...).signatures["serving_default"]` called from one thread,
  seeds in as a tf.constant and images out as numpy, as the server's own call does;
* gRPC: `Predict` through `serving.client.Client` to a `python -m serving.server` subprocess,
  from `--clients` threads at once (each thread opens its own Client, hence its own channel),
  first with batching off, then on (a second server, `--batching_parameters_file`).

Each cell is a closed loop: every client sends its next request as soon as the last one is
answered, for `--warmup_seconds` untimed and then `--seconds` timed. Latencies are those of the
requests started in the timed window; throughput counts the answers that arrived in it. Every
gRPC call carries a deadline (`--deadline`), so a stuck server costs at most that much.

Without `--model_base_path`, the untrained default `zoo.vae` is exported to a temporary folder:
its weights do not change the work a request does. Targets checked at the end:

1. gRPC p50 / in-process p50, 16 samples, 1 client, batching off ≤ 1.2;
2. batching on, 1 sample, 32 clients ≥ 500 requests/s (on 2 cores, default VAE).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

import zoo
from export import write_savedmodel
from runs import running_server
from serving.client import Client, ClientError, ServerError

MODEL = "vae"
BATCHING_PARAMETERS = """\
max_batch_size { value: 64 }
batch_timeout_micros { value: 1000 }
num_batch_threads { value: 2 }
max_enqueued_batches { value: 100 }
"""


@dataclasses.dataclass(frozen=True)
class Cell:
    path: str  # "in-process" or "gRPC"
    batching: str  # "on", "off" or "-" (in-process)
    samples: int
    clients: int
    latencies: np.ndarray  # seconds, of requests started in the timed window
    answered: int  # answers that arrived in the timed window
    seconds: float
    errors: dict[str, int]

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies.size else float("nan")

    @property
    def requests_per_second(self) -> float:
        return self.answered / self.seconds


def closed_loop(make_call: Callable[[], Callable[[], None]], clients: int, warmup_seconds: float,
                seconds: float) -> tuple[np.ndarray, int, dict[str, int]]:
    """(latencies, answers in the timed window, errors by kind) of `clients` threads calling in a loop.

    `make_call()` runs in each thread and returns that thread's call, so per-client state (a channel)
    is built before the clock starts. Answers count from every request, latencies only from those
    started in the timed window.
    """
    window = {}

    def open_window():
        window["start"] = time.perf_counter() + warmup_seconds
        window["end"] = window["start"] + seconds

    ready = threading.Barrier(clients, action=open_window, timeout=60)  # a client that fails to start breaks it
    records: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
    errors: dict[str, int] = {}
    errors_lock = threading.Lock()

    def client(index: int):
        call = make_call()
        ready.wait()
        while (started := time.perf_counter()) < window["end"]:
            try:
                call()
            except (ServerError, ClientError) as error:
                kind = error.code.name if getattr(error, "code", None) else type(error).__name__
                with errors_lock:
                    errors[kind] = errors.get(kind, 0) + 1
                continue
            records[index].append((started, time.perf_counter()))

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if "start" not in window:
        raise SystemExit("a client failed before the first request; see its traceback above")
    calls = [call for thread_records in records for call in thread_records]
    latencies = np.array([finished - started for started, finished in calls if started >= window["start"]])
    answered = sum(window["start"] <= finished <= window["end"] for _, finished in calls)
    return latencies, answered, errors


def in_process_cells(version_path: pathlib.Path, args: argparse.Namespace) -> list[Cell]:
    signature = tf.saved_model.load(str(version_path)).signatures["serving_default"]
    cells = []
    for samples in args.samples:
        seeds = np.arange(samples, dtype=np.int64)

        def make_call():
            return lambda: signature(seed=tf.constant(seeds))["images"].numpy()

        latencies, answered, errors = closed_loop(make_call, 1, args.warmup_seconds, args.seconds)
        cells.append(Cell("in-process", "-", samples, 1, latencies, answered, args.seconds, errors))
        print_row(cells[-1])
    return cells


def grpc_cells(target: str, batching: str, args: argparse.Namespace) -> list[Cell]:
    cells = []
    for samples in args.samples:
        seeds = np.arange(samples, dtype=np.int64)
        for clients in args.clients:
            def make_call():
                client = Client(target, timeout=args.deadline)
                return lambda: client.predict(MODEL, {"seed": seeds})

            latencies, answered, errors = closed_loop(make_call, clients, args.warmup_seconds, args.seconds)
            cells.append(Cell("gRPC", batching, samples, clients, latencies, answered, args.seconds, errors))
            print_row(cells[-1])
    return cells


def print_row(cell: Cell) -> None:
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(cell.errors.items())) or "0"
    print(f"| {cell.path} | {cell.batching} | {cell.samples} | {cell.clients} | {cell.percentile_ms(50):.2f} | "
          f"{cell.percentile_ms(99):.2f} | {cell.requests_per_second:.0f} | "
          f"{cell.requests_per_second * cell.samples:.0f} | {cell.latencies.size} | {errors} |", flush=True)


def check(name: str, value: float | None, target: str, passes: Callable[[float], bool], unit: str = "") -> None:
    if value is None:
        print(f"{name}: not measured (target {target})")
    else:
        print(f"{name}: {value:.2f}{unit} (target {target}) {'PASS' if passes(value) else 'FAIL'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 16], help="seeds per request")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32], help="concurrent gRPC clients")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per cell")
    parser.add_argument("--warmup_seconds", type=float, default=2.0, help="untimed seconds before each cell")
    parser.add_argument("--deadline", type=float, default=10.0, help="deadline of each gRPC call, in seconds")
    parser.add_argument("--model_base_path", type=pathlib.Path,
                        help="folder of numbered SavedModel versions (default: export an untrained zoo.vae)")
    parser.add_argument("--batching_parameters_file", type=pathlib.Path,
                        help="for the batching-on server (default: the parameters in this script)")
    parser.add_argument("--server_flag", action="append", default=[], metavar="FLAG",
                        help="extra serving.server flag for both servers, e.g. --server_flag=--grpc_max_threads=64")
    parser.add_argument("--startup_seconds", type=float, default=120.0, help="how long a server may take to start")
    args = parser.parse_args(argv)

    print(f"devices: {[device.name for device in tf.config.list_logical_devices()]}; "
          f"CPUs: {len(os.sched_getaffinity(0))} usable of {os.cpu_count()} ({platform.processor() or platform.machine()})")
    with tempfile.TemporaryDirectory() as workdir:
        workdir = pathlib.Path(workdir)
        base_path = args.model_base_path
        if base_path is None:
            base_path = workdir / MODEL
            spec = zoo.get(f"zoo.{MODEL}")
            write_savedmodel(spec.build(spec.make_config()), base_path / "1")
        version_path = max((path for path in base_path.iterdir() if path.name.isdigit()), key=lambda p: int(p.name))
        batching_file = args.batching_parameters_file or workdir / "batching.config"
        if args.batching_parameters_file is None:
            batching_file.write_text(BATCHING_PARAMETERS)
        print(f"model: {version_path}; batching parameters: "
              f"{' '.join(line.strip() for line in batching_file.read_text().splitlines())}")
        print(f"{args.warmup_seconds:g} s warm-up + {args.seconds:g} s timed per cell; "
              "gRPC clients: one thread and one Client (channel) each")
        print()
        print("| path | batching | samples/request | clients | p50 ms | p99 ms | requests/s | samples/s | "
              "timed requests | errors |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        cells = in_process_cells(version_path, args)
        for batching, flags in (("off", []), ("on", ["--enable_batching", "--batching_parameters_file",
                                                     str(batching_file)])):
            with running_server(MODEL, base_path, workdir / f"server-batching-{batching}.log", args.startup_seconds,
                                flags + args.server_flag) as server:
                cells += grpc_cells(server.grpc_target, batching, args)

    def find(path: str, batching: str, samples: int, clients: int) -> Cell | None:
        return next((cell for cell in cells if (cell.path, cell.batching, cell.samples, cell.clients)
                     == (path, batching, samples, clients) and cell.latencies.size), None)

    print()
    remote, local = find("gRPC", "off", 16, 1), find("in-process", "-", 16, 1)
    check("gRPC p50 / in-process p50, 16 samples, 1 client, batching off",
          remote.percentile_ms(50) / local.percentile_ms(50) if remote and local else None,
          "≤ 1.2", lambda ratio: ratio <= 1.2)
    batched = find("gRPC", "on", 1, 32)
    check("batching on, 1 sample, 32 clients", batched.requests_per_second if batched else None,
          "≥ 500 requests/s", lambda rate: rate >= 500, " requests/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
