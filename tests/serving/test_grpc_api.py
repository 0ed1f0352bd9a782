"""TF Serving's gRPC API over a real socket: answers, metadata, status, and every error code.

Runs against `python -m serving.server` and, when it is on PATH, the real
`tensorflow_model_server` (the contract: both servers agree on these tests).
"""

from __future__ import annotations

import dataclasses
import io

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

SEEDS = np.array([0, 5, -3, 2**40], np.int64)


def predict_request(model="vae", signature="", version=None, label=None, output_filter=(), **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.output_filter.extend(output_filter)
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


@pytest.fixture(scope="module")
def in_process(trained_base):
    """The SavedModel's signatures called in this process: the reference answers."""
    signatures = tf.saved_model.load(str(trained_base / "1")).signatures
    return lambda name, **inputs: {key: value.numpy() for key, value in signatures[name](**inputs).items()}


def test_predict_returns_the_in_process_samples_and_names_the_version(server, in_process):
    response = server.predictions.Predict(predict_request(seed=SEEDS), timeout=30)
    images = tf.make_ndarray(response.outputs["images"])
    np.testing.assert_allclose(images, in_process("serving_default", seed=SEEDS)["images"], rtol=0, atol=1e-6)
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("vae", 1, "serving_default")


def test_sample_png_returns_png_bytes_of_the_same_samples(server, in_process):
    response = server.predictions.Predict(predict_request(signature="sample_png", seed=SEEDS), timeout=30)
    pngs = tf.make_ndarray(response.outputs["images_bytes"])
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(png))) for png in pngs])
    expected = np.round(in_process("serving_default", seed=SEEDS)["images"][..., 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(decoded, expected)


def test_output_filter_and_a_multi_input_signature(server, in_process):
    images = in_process("serving_default", seed=SEEDS)["images"]
    ks = np.array([1, 3, 2, 5], np.int64)
    request = predict_request(signature="log_likelihood", images=images, num_importance_samples=ks, seed=SEEDS,
                              output_filter=["log_likelihood"])
    response = server.predictions.Predict(request, timeout=30)
    expected = in_process("log_likelihood", images=images, num_importance_samples=ks, seed=SEEDS)["log_likelihood"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["log_likelihood"]), expected, rtol=1e-5)


def test_metadata_lists_every_signature_with_its_tensors(server):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "vae"
    response = server.predictions.GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    signatures = signature_map.signature_def
    assert {"serving_default", "sample_png", "reconstruct", "encode", "decode", "log_likelihood"} <= set(signatures)
    seed = signatures["serving_default"].inputs["seed"]
    assert seed.dtype == tf.int64.as_datatype_enum and [d.size for d in seed.tensor_shape.dim] == [-1]
    assert response.model_spec.version.value == 1


def test_status_reports_the_version_available(server):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "vae"
    (status,) = server.models.GetModelStatus(request, timeout=30).model_version_status
    assert (status.version, status.state, status.status.error_code) == (
        1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)


@dataclasses.dataclass(frozen=True)
class BadRequest:
    rpc: str
    request: object
    code: grpc.StatusCode
    tf_serving_message: str = ""  # exact TF Serving text both servers must contain
    local_phrases: tuple[str, ...] = ()  # what this project's server adds: what was sent, what is expected


def _metadata_request(fields, model="vae"):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = model
    return request


BAD_REQUESTS = {
    "missing_model_spec": BadRequest("Predict", predict_request(model="", seed=SEEDS), grpc.StatusCode.INVALID_ARGUMENT,
                                     "Missing ModelSpec"),
    "unknown_model": BadRequest("Predict", predict_request(model="nope", seed=SEEDS), grpc.StatusCode.NOT_FOUND,
                                "Servable not found for request: Latest(nope)"),
    "unknown_version": BadRequest("Predict", predict_request(version=9, seed=SEEDS), grpc.StatusCode.NOT_FOUND,
                                  "Servable not found for request: Specific(vae, 9)"),
    "unknown_label": BadRequest("Predict", predict_request(label="canary", seed=SEEDS),
                                grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary"),
    "unknown_signature": BadRequest("Predict", predict_request(signature="nope", seed=SEEDS),
                                    grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
    "wrong_input_key": BadRequest("Predict", predict_request(seeds=SEEDS), grpc.StatusCode.INVALID_ARGUMENT,
                                  "input size does not match signature",
                                  ("Sent extra: {seeds}", "Missing but required: {seed}")),
    "wrong_dtype": BadRequest("Predict", predict_request(seed=SEEDS.astype(np.float32)),
                              grpc.StatusCode.INVALID_ARGUMENT, "",
                              ("input 'seed' has dtype DT_FLOAT", "expects DT_INT64")),
    "wrong_shape": BadRequest("Predict", predict_request(signature="reconstruct", images=np.zeros((2, 28, 28), np.float32)),
                              grpc.StatusCode.INVALID_ARGUMENT, "",
                              ("input 'images' has shape [2,28,28]", "expects [-1,28,28,1]")),
    "bad_output_filter": BadRequest("Predict", predict_request(seed=SEEDS, output_filter=["pixels"]),
                                    grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: pixels"),
    "too_many_importance_samples": BadRequest(
        "Predict", predict_request(signature="log_likelihood", images=np.zeros((4, 28, 28, 1), np.float32),
                                   num_importance_samples=np.full(4, 300_000, np.int64), seed=SEEDS),
        grpc.StatusCode.INVALID_ARGUMENT, "send fewer images or fewer samples per request"),
    "metadata_without_field": BadRequest("GetModelMetadata", _metadata_request([]), grpc.StatusCode.INVALID_ARGUMENT,
                                         "GetModelMetadataRequest must specify at least one metadata_field"),
    "metadata_of_unknown_model": BadRequest("GetModelMetadata", _metadata_request(["signature_def"], "nope"),
                                            grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_tf_servings_status_code_and_message(case, server, request):
    bad = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as raised:
        getattr(server.predictions, bad.rpc)(bad.request, timeout=30)
    assert raised.value.code() == bad.code, raised.value.details()
    assert bad.tf_serving_message in raised.value.details()
    if "serving.server" in request.node.callspec.id:
        for phrase in bad.local_phrases:
            assert phrase in raised.value.details()
    # The server is still there.
    assert server.predictions.Predict(predict_request(seed=SEEDS[:1]), timeout=30).outputs["images"]


def test_classify_is_unimplemented(server):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "vae"
    with pytest.raises(grpc.RpcError) as raised:
        server.predictions.Classify(request, timeout=30)
    assert raised.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION,
                                   grpc.StatusCode.INVALID_ARGUMENT)  # the real server rejects the signature type


def test_the_client_command_writes_a_grid_of_the_served_samples(server, tmp_path, in_process, run_module):
    out = tmp_path / "samples.png"
    result = run_module("serving.client", "--server", f"127.0.0.1:{server.grpc_port}", "--model", "vae",
                        "--num_samples", "4", "--seed", "7", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    grid = np.asarray(Image.open(out))
    expected = in_process("serving_default", seed=np.arange(7, 11, dtype=np.int64))["images"]
    # A 2×2 grid with 1-pixel borders: the top-left tile is seed 7's image.
    np.testing.assert_array_equal(grid[1:29, 1:29], np.round(expected[0, ..., 0] * 255).astype(np.uint8))
