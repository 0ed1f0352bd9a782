"""python -m serving.server over time: version swaps under load, broken versions, config files,
batching, the request cap, metrics, reloads, shutdown, and command-line errors."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import signal
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2, predict_pb2

POLL = "--file_system_poll_wait_seconds=0.2"
STATE = get_model_status_pb2.ModelVersionStatus


def predict(server, seeds, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("model", "vae")
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.inputs["seed"].CopyFrom(tf.make_tensor_proto(np.asarray(seeds, np.int64)))
    return server.predictions.Predict(request, timeout=60)


def statuses(server, model="vae") -> dict[int, tuple[int, str]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    return {s.version: (s.state, s.status.error_message)
            for s in server.models.GetModelStatus(request, timeout=30).model_version_status}


def wait_for(condition, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def add_version(base, source: int, version: int) -> None:
    """Copies a version folder in the way export does: staged, then renamed into place."""
    staging = base / f".staging-{version}"
    shutil.copytree(base / str(source), staging)
    os.rename(staging, base / str(version))


@pytest.fixture(scope="module")
def reference(trained_base):
    sampler = tf.saved_model.load(str(trained_base / "1")).signatures["serving_default"]
    return lambda seeds: sampler(seed=tf.constant(seeds, tf.int64))["images"].numpy()


def test_a_new_version_replaces_the_old_under_load_without_a_failed_request(start_server, base_copy):
    """No request fails, and every request sent after version 1 reports END is answered by version 2.

    A request sent before may still be answered by version 1: in-flight calls finish on it.
    """
    server = start_server("--model_name=vae", f"--model_base_path={base_copy}", POLL)
    answers, failures, stop = [], [], threading.Event()  # answers: (monotonic time sent, version)

    def hammer():
        while not stop.is_set():
            sent = time.monotonic()
            try:
                answers.append((sent, predict(server, [1, 2]).model_spec.version.value))
            except grpc.RpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")

    def versions_sent_after(moment: float) -> set[int]:
        return {version for sent, version in list(answers) if sent > moment}

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: 1 in versions_sent_after(float("-inf")), "answers from version 1")
        add_version(base_copy, 1, 2)
        wait_for(lambda: statuses(server).get(1, (None,))[0] == STATE.END, "version 1 to be unloaded")
        unloaded = time.monotonic()
        wait_for(lambda: versions_sent_after(unloaded), "answers to requests sent after the swap")
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert not failures, failures[:5]
    assert versions_sent_after(unloaded) == {2}
    assert statuses(server)[2][0] == STATE.AVAILABLE


def test_broken_version_folders_are_reported_and_the_served_version_stays(start_server, base_copy, reference):
    server = start_server("--model_name=vae", f"--model_base_path={base_copy}", POLL)
    (base_copy / "2").mkdir()  # a folder without a SavedModel
    (base_copy / "3").mkdir()
    (base_copy / "3" / "saved_model.pb").write_bytes(b"not a protobuf")
    wait_for(lambda: {2, 3} <= set(statuses(server)), "the broken versions in the status")
    wait_for(lambda: all(statuses(server)[v][1] for v in (2, 3)), "their load errors")
    report = statuses(server)
    assert report[1][0] == STATE.AVAILABLE
    assert report[2][0] == STATE.END and "saved_model.pb" in report[2][1]
    assert report[3][0] == STATE.END and "failed to load" in report[3][1]
    response = predict(server, [4])
    assert response.model_spec.version.value == 1
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["images"]), reference([4]), atol=1e-6)


def test_config_file_policy_labels_batching_cap_and_metrics(start_server, base_copy, tmp_path, reference):
    add_version(base_copy, 1, 2)
    config = tmp_path / "models.config"
    config.write_text(f'''model_config_list {{
      config {{
        name: "vae"
        base_path: "{base_copy}"
        model_platform: "tensorflow"
        model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
        version_labels {{ key: "stable" value: 1 }}
        version_labels {{ key: "canary" value: 2 }}
      }}
    }}''')
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 5000 }\n"
                        "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 100 }\n")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    server = start_server(f"--model_config_file={config}", "--enable_batching",
                          f"--batching_parameters_file={batching}", f"--monitoring_config_file={monitoring}",
                          "--max_request_examples=16")

    assert {v: s[0] for v, s in statuses(server).items()} == {1: STATE.AVAILABLE, 2: STATE.AVAILABLE}
    assert predict(server, [0]).model_spec.version.value == 2
    assert predict(server, [0], label="stable").model_spec.version.value == 1
    assert predict(server, [0], label="canary").model_spec.version.value == 2

    # Concurrent one-seed requests, merged by the batcher, each get their own sample.
    results = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, predict(server, [s]))) for s in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = np.concatenate([tf.make_ndarray(results[s].outputs["images"]) for s in range(12)])
    np.testing.assert_allclose(got, reference(list(range(12))), rtol=0, atol=1e-6)

    with pytest.raises(grpc.RpcError) as raised:
        predict(server, list(range(17)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "17 examples" in raised.value.details() and "--max_request_examples" in raised.value.details()

    status, metrics = server.rest("/monitoring/prometheus/metrics")
    assert status == 200
    ok = [line for line in metrics.splitlines() if line.startswith(":tensorflow:serving:request_count{")
          and 'model_name="vae"' in line and 'status="OK"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in ok) >= 15
    assert 'status="INVALID_ARGUMENT"' in metrics and ":tensorflow:serving:request_latency_bucket" in metrics


def test_reload_config_request_adds_a_model_and_rejects_a_bad_config(start_server, base_copy, trained_base):
    server = start_server("--model_name=vae", f"--model_base_path={trained_base}")
    request = model_management_pb2.ReloadConfigRequest()
    for name, path in (("vae", trained_base), ("other", base_copy)):
        request.config.model_config_list.config.add(name=name, base_path=str(path), model_platform="tensorflow")
    assert server.models.HandleReloadConfigRequest(request, timeout=120).status.error_code == 0
    assert predict(server, [1], model="other").model_spec.version.value == 1

    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.model_config_list.config.add(name="", base_path=str(base_copy))
    with pytest.raises(grpc.RpcError) as raised:
        server.models.HandleReloadConfigRequest(bad, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "name is empty" in raised.value.details()
    assert predict(server, [1], model="other").model_spec.version.value == 1  # the old config still serves


def test_an_edited_config_file_is_applied_and_a_broken_edit_is_not(start_server, trained_base, tmp_path):
    config = tmp_path / "models.config"
    entry = 'config {{ name: "vae" base_path: "{}" {} }}'
    config.write_text(f"model_config_list {{ {entry.format(trained_base, '')} }}")
    server = start_server(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0.2")
    label = 'version_labels { key: "stable" value: 1 }'
    config.write_text(f"model_config_list {{ {entry.format(trained_base, label)} }}")

    def labelled():
        try:
            return predict(server, [1], label="stable").model_spec.version.value == 1
        except grpc.RpcError:
            return False

    wait_for(labelled, "the label from the edited config")
    config.write_text("model_config_list { config { nmae: 'typo' } }")
    time.sleep(1)
    assert labelled() and "not applying" in server.log and "nmae" in server.log


def test_rest_connection_flags_reach_the_rest_server(start_server, trained_base):
    """--rest_api_max_connections: one connection more gets 503; --rest_api_request_timeout_in_ms: an idle
    connection is closed once it passes (http_server's own tests check the limits in detail)."""
    server = start_server("--model_name=vae", f"--model_base_path={trained_base}", "--rest_api_max_connections=2",
                          "--rest_api_request_timeout_in_ms=3000")
    opened = time.monotonic()  # before the server can start its clock on them
    idle = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) for _ in range(2)]
    try:
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=60) as refused:
            answer = refused.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert idle[0].recv(4096) == b""  # closed by the server after the request timeout
        assert 2.9 < time.monotonic() - opened < 50
    finally:
        for connection in idle:
            connection.close()


TGKILL = {"x86_64": 234, "aarch64": 131}  # the tgkill system call's number (Linux)


def test_sigterm_stops_the_server_cleanly_whichever_thread_receives_it(start_server, trained_base):
    """The kernel hands a process's SIGTERM to any thread that does not block it. On Linux this sends it to
    one of gRPC's or TensorFlow's threads (tgkill), elsewhere to the process. Python runs the handler on the
    main thread, which must wake up for it (it once waited forever)."""
    server = start_server("--model_name=vae", f"--model_base_path={trained_base}")
    predict(server, [1])
    if platform.system() == "Linux" and platform.machine() in TGKILL:
        pid = server.process.pid
        others = sorted(int(task) for task in os.listdir(f"/proc/{pid}/task") if int(task) != pid)
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(TGKILL[platform.machine()], pid, others[-1], signal.SIGTERM) == 0, ctypes.get_errno()
        server.process.wait(60)
    assert server.stop() == 0
    assert "stopped" in server.log and "Traceback" not in server.log


@pytest.mark.parametrize("flags, phrases", [
    ((), ("nothing to serve", "--model_base_path")),
    (("--model_config_file={missing}",), ("models.config",)),
    (("--model_config_file={bad}",), ("bad.config", "line 1")),
    (("--model_base_path=/x", "--batching_parameters_file={bad}"), ("needs --enable_batching",)),
    (("--model_base_path=/x", "--rest_api_max_connections=0"), ("--rest_api_max_connections must be at least 1",)),
    (("--model_base_path=/x", "--max_request_bytes=-1"), ("--max_request_bytes must be at least 1",)),
], ids=["no_model", "missing_config_file", "bad_config_file", "batching_file_without_batching",
        "no_rest_connections", "negative_request_bytes"])
def test_command_line_errors_exit_2_with_the_fix(flags, phrases, run_module, tmp_path):
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_lits { }")
    flags = [flag.format(missing=tmp_path / "models.config", bad=bad) for flag in flags]
    result = run_module("serving.server", "--port=0", "--rest_api_port=0", *flags, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and all(phrase in error for phrase in phrases), error
