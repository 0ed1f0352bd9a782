"""Hostile gRPC requests against `python -m serving.server`: refused before they cost memory, answered
with INVALID_ARGUMENT or NOT_FOUND (never INTERNAL or a lost connection), and leaving no trace in the
metrics. Memory is checked by the server process's own peak RSS (VmHWM), not by filling the machine."""

from __future__ import annotations

import pathlib

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.client import predict_request
from serving.status import MAX_MESSAGE_CHARS

MAX_REQUEST_BYTES = 64 << 10  # 20 images of 28×28 floats fit, 21 do not


@pytest.fixture(scope="module")
def server(start_server, trained_base, tmp_path_factory):
    monitoring = tmp_path_factory.mktemp("limits") / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    server = start_server("--model_name=vae", f"--model_base_path={trained_base}",
                          f"--monitoring_config_file={monitoring}", f"--max_request_bytes={MAX_REQUEST_BYTES}")
    for signature, inputs in (("", {"seed": np.array([1], np.int64)}),  # warm up what the good requests use
                              ("reconstruct", {"images": np.zeros((1, 28, 28, 1), np.float32)})):
        server.predictions.Predict(request(signature, **inputs), timeout=60)
    return server


def peak_rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no VmHWM in /proc: peak RSS is measured on Linux only")


def request(signature="", model="vae", version=None, **inputs):
    return predict_request(model, inputs, signature, version)


def declaring(shape, dtype=types_pb2.DT_INT64, **values) -> tensor_pb2.TensorProto:
    """A TensorProto that declares `shape` but carries only `values`."""
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def refused(server, message) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        server.predictions.Predict(message, timeout=60)
    return raised.value


def good_request_works(server):
    assert server.predictions.Predict(request(seed=np.array([1], np.int64)), timeout=60).outputs["images"]


BAD_INPUTS = {
    # A 32-byte request declaring a billion seeds with one value (TF's fill shorthand).
    "billion_rows_one_value": (dict(seed=declaring([10**9], int64_val=[1])), "request holds 1000000000 examples"),
    "10^11_rows_one_value": (dict(seed=declaring([10**11], int64_val=[1])), "request holds 100000000000 examples"),
    "huge_image_dims": (dict(signature="reconstruct",
                             images=declaring([1, 10**5, 10**5, 1], types_pb2.DT_FLOAT, float_val=[0.5])),
                        "has shape [1,100000,100000,1]"),
    "40000_dimensions": (dict(seed=declaring([2**62] * 40_000, int64_val=[1])),
                         "the shape has 40000 dimensions; TensorFlow allows 254"),
    "content_shorter_than_shape": (dict(seed=declaring([16], tensor_content=bytes(8))),
                                   "tensor_content holds 8 bytes; shape [16] of DT_INT64 needs 128"),
    "inputs_beyond_the_byte_cap": (dict(signature="reconstruct",
                                        images=declaring([21, 28, 28, 1], types_pb2.DT_FLOAT, float_val=[0.5])),
                                   f"take 65856 bytes; this server takes at most {MAX_REQUEST_BYTES}"),
    "importance_samples_overflowing_int64": (
        dict(signature="log_likelihood", images=np.zeros((2, 28, 28, 1), np.float32),
             num_importance_samples=np.array([2**62 + 600_000, 2**62 + 600_000], np.int64),
             seed=np.array([1, 2], np.int64)),
        "send fewer images or fewer samples per request"),
    "nan_image": (dict(signature="reconstruct", images=np.full((1, 28, 28, 1), np.nan, np.float32)),
                  "input 'images' must be finite"),
    "inf_latent": (dict(signature="decode", latent=np.array([[0, np.inf, 0, 0]], np.float32)),
                   "input 'latent' must be finite"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_a_malformed_or_oversized_input_is_invalid_argument_and_costs_no_memory(server, case):
    inputs, phrase = BAD_INPUTS[case]
    before = peak_rss_bytes(server.process.pid)
    error = refused(server, request(**inputs))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert phrase in error.details()
    good_request_works(server)
    grown = peak_rss_bytes(server.process.pid) - before
    assert grown < 100 << 20, f"the server's peak RSS grew by {grown / 2**20:.0f} MiB"


def test_unknown_model_names_and_versions_get_short_errors_and_add_no_metric_series(server):
    for index in range(40):
        long_name = f"{index}-" + "x" * (1 << 20)  # a 1 MiB model name
        error = refused(server, request(model=long_name, seed=np.array([1], np.int64)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert len(error.details()) <= MAX_MESSAGE_CHARS and f"({len(long_name)} characters)" in error.details()
        error = refused(server, request(version=1000 + index, seed=np.array([1], np.int64)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    good_request_works(server)

    status, metrics = server.rest("/metrics")
    assert status == 200
    series = [line for line in metrics.splitlines() if line.startswith(":tensorflow:serving:request_count{")]
    assert {line.split('model_name="')[1].split('"')[0] for line in series} <= {"vae", "(unknown)"}
    assert not [line for line in series if 'version="10' in line]  # unknown versions are not labels
    assert 'model_name="(unknown)",version="",API="Predict",entrypoint="GRPC",status="NOT_FOUND"} 40' in metrics
    assert len(metrics) < 64 << 10
