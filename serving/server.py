"""python -m serving.server: TF Serving's gRPC and REST APIs over exported zoo models, for local use.

    python -m serving.server --model_name vae --model_base_path runs/vae/serving/vae
    python -m serving.server --model_config_file serving/deploy/models.config --enable_batching

Flags are `tensorflow_model_server`'s own (plus --host, the request caps
--max_request_examples and --max_request_bytes, and the REST connection limits
--rest_api_request_timeout_in_ms and --rest_api_max_connections), so the same
command lines and config files run unchanged under the real server. The server answers until SIGTERM or Ctrl-C, then stops accepting requests, lets
in-flight ones finish and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from serving import startup
from serving.status import ServingError

log = logging.getLogger("serving")

GRACE_SECONDS = 5.0
SIGNAL_CHECK_SECONDS = 0.2  # how often the main thread wakes to run a signal handler (see main)


def _flag_bool(text: str) -> bool:
    """TF Serving's boolean flags: --enable_batching, --enable_batching=true / false."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--port", type=int, default=8500, help="gRPC port (0: any free port, printed at start)")
    add("--rest_api_port", type=int, default=8501, help="REST port; 0 disables the REST API")
    add("--host", default="127.0.0.1", help="address to bind (0.0.0.0 to serve other machines)")
    add("--model_name", default="default", help="name of the one model served from --model_base_path")
    add("--model_base_path", help="folder of numbered SavedModel versions, e.g. runs/vae/serving/vae")
    add("--model_config_file", help="text-format ModelServerConfig (model_config_list) for several models")
    add("--model_config_file_poll_wait_seconds", type=float, default=0.0,
        help="seconds between re-reads of --model_config_file; 0 reads it only at start")
    add("--allow_version_labels_for_unavailable_models", type=_flag_bool, nargs="?", const=True, default=False,
        help="let version_labels name versions that are not loaded (yet)")
    add("--file_system_poll_wait_seconds", type=float, default=1.0,
        help="seconds between scans for new versions; 0 scans only at start")
    add("--enable_batching", type=_flag_bool, nargs="?", const=True, default=False,
        help="merge concurrent requests to the same signature")
    add("--batching_parameters_file", help="text-format BatchingParameters (implies nothing without "
                                           "--enable_batching)")
    add("--monitoring_config_file", help="text-format MonitoringConfig; enables Prometheus metrics on the REST port")
    add("--rest_api_timeout_in_ms", type=int, default=30000, help="deadline of each REST request")
    add("--rest_api_num_threads", type=int, default=os.cpu_count() * 4, help="REST request threads")
    add("--rest_api_request_timeout_in_ms", type=int, default=10000,
        help="time a client has to send a whole REST request (line, headers, body); a partial one then gets "
             "408 and an idle keep-alive connection is closed")
    add("--rest_api_max_connections", type=int, default=1024,
        help="REST connections open at once; one more gets 503 (keep `ulimit -n` above this)")
    add("--grpc_max_threads", type=int, default=os.cpu_count() * 4, help="gRPC request threads")
    add("--max_request_examples", type=int, default=None,
        help="cap on the batch size of one request (default 4096); larger requests get INVALID_ARGUMENT")
    add("--max_request_bytes", type=int, default=None,
        help="cap on the size one request's inputs decode to (default 64 MiB), checked on the declared "
             "shapes before decoding; larger requests get INVALID_ARGUMENT")
    add("--grpc_max_message_bytes", type=int, default=64 << 20, help="largest gRPC message in or out")
    return parser.parse_args(argv)


def _flag_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags themselves, or None: checked before TensorFlow loads, so that a
    mistyped command line fails at once."""
    if args.model_config_file and args.model_base_path:
        return "give either --model_config_file or --model_name/--model_base_path, not both"
    if not (args.model_config_file or args.model_base_path):
        return ("nothing to serve: pass --model_base_path (with --model_name) or --model_config_file; "
                "e.g. --model_name vae --model_base_path runs/vae/serving/vae")
    if args.batching_parameters_file and not args.enable_batching:
        return "--batching_parameters_file needs --enable_batching"
    for flag in ("rest_api_timeout_in_ms", "rest_api_num_threads", "rest_api_request_timeout_in_ms",
                 "rest_api_max_connections", "grpc_max_threads", "grpc_max_message_bytes"):
        if getattr(args, flag) < 1:
            return f"--{flag} must be at least 1"
    for flag in ("max_request_examples", "max_request_bytes"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            return f"--{flag} must be at least 1"
    return None


def _checked(args: argparse.Namespace):
    """(model configs, batching parameters or None, monitoring config or None) from flags that passed
    `_flag_error`; ValueError explains a bad config file."""
    from serving import config_files, manager

    if args.model_config_file:
        configs = list(config_files.parse_model_config_file(args.model_config_file).model_config_list.config)
    else:
        configs = [manager.single_model_config(args.model_name, args.model_base_path)]
    for config in configs:
        if not os.path.isdir(config.base_path):
            log.warning("model %s: base path %s does not exist (yet); it is polled for versions",
                        config.name, config.base_path)
    batching = None
    if args.enable_batching:
        batching = (config_files.parse_batching_parameters(args.batching_parameters_file)
                    if args.batching_parameters_file else config_files.BatchingParameters())
    monitoring = config_files.parse_monitoring_config(args.monitoring_config_file) \
        if args.monitoring_config_file else None
    if monitoring and monitoring.prometheus_enabled and not args.rest_api_port:
        raise ValueError("Prometheus metrics are served on the REST port; set --rest_api_port")
    return configs, batching, monitoring


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = _flag_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    startup.quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        configs, batching, monitoring = _checked(args)
    except ValueError as error:  # ConfigFileError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2

    from serving import config_files, grpc_api, rest_api
    from serving.manager import ModelManager
    from serving.service import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_REQUEST_EXAMPLES, Service

    try:
        manager = ModelManager(configs,
                               allow_labels_for_unavailable_versions=args.allow_version_labels_for_unavailable_models)
    except ServingError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    service = Service(manager, args.max_request_examples or DEFAULT_MAX_REQUEST_EXAMPLES, batching,
                      max_request_bytes=args.max_request_bytes or DEFAULT_MAX_REQUEST_BYTES)
    try:
        grpc_server, grpc_port = grpc_api.make_server(
            service, manager, config_files.check_model_server_config, f"{args.host}:{args.port}",
            args.grpc_max_threads, args.grpc_max_message_bytes)
        rest_server = None
        if args.rest_api_port:
            metrics_path = monitoring.prometheus_path if monitoring and monitoring.prometheus_enabled else None
            api = rest_api.RestApi(service, manager, args.rest_api_timeout_in_ms / 1000, metrics_path)
            rest_server = rest_api.make_server(
                api, args.host, args.rest_api_port, args.rest_api_num_threads,
                request_timeout_s=args.rest_api_request_timeout_in_ms / 1000,
                max_connections=args.rest_api_max_connections, shutdown_grace_s=GRACE_SECONDS)
    except OSError as error:
        print(f"error: cannot listen: {error}; is another server on the port? choose another with "
              f"--port / --rest_api_port", file=sys.stderr)
        return 2

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    grpc_server.start()
    if rest_server is not None:
        threading.Thread(target=rest_server.serve_forever, name="rest", daemon=True).start()
    manager.start_polling(args.file_system_poll_wait_seconds)
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        threading.Thread(target=_reread_config_file, name="config-poller", daemon=True,
                         args=(manager, args.model_config_file, args.model_config_file_poll_wait_seconds, stop)).start()
    models = ", ".join(f"{name} (versions {_versions(manager, name)})" for name in manager.model_names())
    rest = f"REST on {args.host}:{rest_server.server_address[1]}" if rest_server else "REST disabled"
    print(f"serving gRPC on {args.host}:{grpc_port}, {rest}; models: {models}", flush=True)

    # Wait in ticks: the kernel may deliver SIGTERM to any thread of the process (gRPC's, TensorFlow's), and
    # then nothing interrupts a main thread blocked on a lock with no timeout, so the handler, which Python
    # runs on the main thread only, would never run. After a tick the main thread runs it.
    while not stop.wait(SIGNAL_CHECK_SECONDS):
        pass
    print("stopping: finishing in-flight requests", flush=True)
    if rest_server is not None:
        rest_server.shutdown()
    grpc_server.stop(GRACE_SECONDS).wait()
    if rest_server is not None:
        rest_server.server_close()
    manager.stop()
    if service.batcher is not None:
        service.batcher.close()
    print("stopped", flush=True)
    return 0


def _reread_config_file(manager, path: str, interval_seconds: float, stop: threading.Event) -> None:
    """Applies `path` again whenever it changes; a broken edit is logged and the old config kept."""
    from serving import config_files

    try:
        previous = config_files.parse_model_config_file(path)
    except ValueError:
        previous = None  # changed since start-up: the first re-read reports it
    while not stop.wait(interval_seconds):
        try:
            config = config_files.parse_model_config_file(path)
            if config != previous:
                manager.reload(list(config.model_config_list.config))
                previous = config
        except (ValueError, ServingError) as error:  # ConfigFileError is a ValueError
            log.error("not applying %s: %s", path, getattr(error, "message", error))


def _versions(manager, name: str) -> str:
    try:
        available = [v.number for v in manager.status(name) if v.state == "AVAILABLE"]
    except ServingError:
        available = []
    return ", ".join(map(str, sorted(available))) or "none yet"


if __name__ == "__main__":
    sys.exit(main())
