"""The Neural Statistician behind `python -m serving.server`: sets in, contexts and new items out.

A tiny untrained model (serving does not care) is exported and served; REST and the client send sets of
items of any size, get back the context posterior q(c | D) and new items drawn from it, the same as the
model gives in process; an empty set is the request's INVALID_ARGUMENT, never the server's problem.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

import export
import zoo


@pytest.fixture(scope="module")
def model():
    spec = zoo.get("zoo.neural_statistician")
    return spec.build(spec.make_tiny_config())


@pytest.fixture(scope="module")
def set_server(tmp_path_factory, start_server, model):
    exported = export.export(model, tmp_path_factory.mktemp("neural_statistician"), "neural_statistician")
    return start_server("--model_name=neural_statistician",
                        f"--model_base_path={exported.savedmodel_dir.rsplit('/', 1)[0]}", model="neural_statistician")


def _sets(model, count, size):
    shape = (count, size, *model.config.image_shape)
    return (np.random.default_rng(size).random(shape) < 0.5).astype(np.float32)


@pytest.mark.parametrize("size", [1, 4])
def test_rest_returns_the_context_posterior_and_items_drawn_from_it(set_server, model, size):
    sets = _sets(model, 2, size)
    status, body = set_server.rest("/v1/models/neural_statistician:predict", {
        "signature_name": "context", "inputs": {"images": sets.tolist()}})
    assert status == 200, body
    mean, stddev = model.context(tf.constant(sets))
    np.testing.assert_allclose(body["outputs"]["mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(body["outputs"]["stddev"], stddev, rtol=1e-4, atol=1e-5)
    status, body = set_server.rest("/v1/models/neural_statistician:predict", {
        "signature_name": "sample_from_set", "inputs": {"images": sets.tolist(), "seed": [7, 8]}})
    assert status == 200, body
    expected = model.sample_from_set(tf.constant(sets), tf.constant([7, 8], tf.int64))
    np.testing.assert_allclose(body["outputs"]["items"], expected, atol=1e-5)
    assert np.asarray(body["outputs"]["images"]).shape == (2, *model.picture(expected).shape[1:])


def test_an_empty_set_is_refused_over_grpc_and_the_server_goes_on(set_server, model):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "neural_statistician", "context"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 0, *model.config.image_shape), np.float32)))
    with pytest.raises(grpc.RpcError) as refused:
        set_server.predictions.Predict(request, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one item per set" in refused.value.details()
    status, body = set_server.rest("/v1/models/neural_statistician:predict", {"instances": [{"seed": 3}]})
    assert status == 200 and np.asarray(body["predictions"][0]["items"]).shape == (model.config.set_size,
                                                                                    *model.config.image_shape)


def test_the_client_writes_a_drawn_set_as_a_row_of_its_items(set_server, run_module, model, tmp_path):
    out = tmp_path / "sets.npy"
    result = run_module("serving.client", "--server", f"127.0.0.1:{set_server.grpc_port}", "--model",
                        "neural_statistician", "--num_samples", "2", "--seed", "5", "--output", "items", "--out", out)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(out), model.sample_set(tf.constant([5, 6], tf.int64)), atol=1e-5)
