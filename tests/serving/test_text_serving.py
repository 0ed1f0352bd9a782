"""A text VAE behind `python -m serving.server`: texts in and out as JSON strings over REST and as string
tensors over gRPC, tokenized and detokenized by the SavedModel itself; a text longer than the model reads is
the request's INVALID_ARGUMENT, never the server's problem."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

import export
import synthetic_texts
import zoo
from serving import client
from training import data as training_data
from zoo import config as config_lib
from zoo.registry import DatasetSpec

TEXTS = ["the cat likes the red ball .", "nobody wants some cold water !"]


@pytest.fixture(scope="module")
def model():
    spec = zoo.get("zoo.text_vae")
    config = config_lib.replace(spec.make_tiny_config(), dataset=str(synthetic_texts.folder()), decoder="scnn")
    words = training_data.counted_vocabulary(DatasetSpec(config.dataset, binarize=False, text=True))
    return spec.build(config.with_vocabulary(words))


@pytest.fixture(scope="module")
def text_server(tmp_path_factory, start_server, model):
    exported = export.export(model, tmp_path_factory.mktemp("text_vae"), "text_vae")
    return start_server("--model_name=text_vae", f"--model_base_path={exported.savedmodel_dir.rsplit('/', 1)[0]}",
                        model="text_vae")


def test_rest_samples_encodes_decodes_and_reconstructs_texts(text_server, model):
    def predict(signature, inputs):
        status, body = text_server.rest("/v1/models/text_vae:predict", {"signature_name": signature,
                                                                         "inputs": inputs})
        assert status == 200, body
        return body["outputs"]

    sampled = predict("sample_text", {"seed": [3, 4], "temperature": [1.0, 0.5]})
    expected = model.sample(tf.constant([3, 4], tf.int64), tf.constant([1.0, 0.5]))
    assert sampled == expected.numpy().astype(str).tolist()
    encoded = predict("encode", {"text": TEXTS})
    np.testing.assert_allclose(encoded["mean"], model.encode(model.tokenizer(tf.constant(TEXTS)))["mean"], atol=1e-5)
    decoded = predict("decode", {"latent": encoded["mean"]})
    assert decoded == predict("reconstruct", {"text": TEXTS})
    assert decoded == model.reconstruct(model.tokenizer(tf.constant(TEXTS))).numpy().astype(str).tolist()


def test_a_text_too_long_is_invalid_argument_over_grpc_and_rest_and_the_server_goes_on(text_server, model):
    too_long = " ".join(["cat"] * (model.config.max_words + 1))
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "text_vae", "encode"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto([too_long]))
    with pytest.raises(grpc.RpcError) as refused:
        text_server.predictions.Predict(request, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {model.config.max_words} words" in refused.value.details()
    status, body = text_server.rest("/v1/models/text_vae:predict",
                                    {"signature_name": "sample_text", "instances": [{"seed": 1, "temperature": 0.0}]})
    assert status == 400 and "temperature must be > 0" in body["error"]
    status, body = text_server.rest("/v1/models/text_vae:predict", {"instances": [{"seed": 3}]})
    assert status == 200 and body["predictions"] == model.sample(tf.constant([3], tf.int64)).numpy().astype(str).tolist()


def test_the_client_prints_sampled_texts_one_per_line(text_server, run_main, model):
    result = run_main(client.main, ["--server", f"127.0.0.1:{text_server.grpc_port}", "--model", "text_vae",
                                    "--num_samples", "3", "--seed", "5"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == model.sample(tf.constant([5, 6, 7], tf.int64)).numpy().astype(str).tolist()
