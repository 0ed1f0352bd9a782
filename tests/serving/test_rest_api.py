"""TF Serving's REST API over a real socket: status, metadata, both predict formats, b64, errors.

Runs against `python -m serving.server` and, when installed, `tensorflow_model_server`.
"""

from __future__ import annotations

import base64
import http.client
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image


@pytest.fixture(scope="module")
def samples(trained_base):
    sampler = tf.saved_model.load(str(trained_base / "1")).signatures["serving_default"]
    return lambda seeds: sampler(seed=tf.constant(seeds, tf.int64))["images"].numpy()


def test_status_of_the_model_and_of_its_version(server):
    expected = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert server.rest("/v1/models/vae") == (200, expected)
    assert server.rest("/v1/models/vae/versions/1") == (200, expected)


def test_metadata_names_the_version_and_the_signatures(server):
    status, body = server.rest("/v1/models/vae/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "vae", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"]["inputs"]["seed"]["dtype"] == "DT_INT64"


def test_row_format_instances_give_predictions(server, samples):
    status, body = server.rest("/v1/models/vae:predict", {"instances": [{"seed": 3}, {"seed": 4}]})
    assert status == 200
    np.testing.assert_allclose(np.array(body["predictions"]), samples([3, 4]), rtol=0, atol=1e-6)
    # A single-input signature also takes bare values.
    status, bare = server.rest("/v1/models/vae/versions/1:predict", {"instances": [3, 4]})
    assert status == 200 and bare == body


def test_columnar_inputs_give_outputs(server, samples):
    status, body = server.rest("/v1/models/vae:predict", {"inputs": {"seed": [5, 6, 7]}})
    assert status == 200
    np.testing.assert_allclose(np.array(body["outputs"]), samples([5, 6, 7]), rtol=0, atol=1e-6)


def test_bytes_outputs_come_back_base64_encoded_pngs(server, samples):
    status, body = server.rest("/v1/models/vae:predict", {"signature_name": "sample_png", "instances": [8]})
    assert status == 200
    (prediction,) = body["predictions"]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(prediction["b64"]))))
    np.testing.assert_array_equal(image, np.round(samples([8])[0, ..., 0] * 255).astype(np.uint8))


def test_multi_input_rows_and_several_outputs(server, samples):
    images = samples([1, 2])
    instances = [{"images": image.tolist(), "num_importance_samples": 2, "seed": seed}
                 for image, seed in zip(images, (1, 2))]
    status, body = server.rest("/v1/models/vae:predict", {"signature_name": "log_likelihood", "instances": instances})
    assert status == 200 and len(body["predictions"]) == 2 and all(v < 0 for v in body["predictions"])
    status, body = server.rest("/v1/models/vae:predict", {"signature_name": "encode", "inputs": {"images": images.tolist()}})
    assert status == 200 and set(body["outputs"]) == {"mean_1", "stddev_1"}


@pytest.mark.parametrize("method_path_body, status, phrase", [
    (("GET", "/v1/models/nope", None), 404, "nope"),
    (("POST", "/v1/models/nope:predict", {"instances": [1]}), 404, "Servable not found for request: Latest(nope)"),
    (("POST", "/v1/models/vae/versions/9:predict", {"instances": [1]}), 404,
     "Servable not found for request: Specific(vae, 9)"),
    (("POST", "/v1/models/vae/labels/canary:predict", {"instances": [1]}), 400,
     "Unrecognized servable version label: canary"),
    (("POST", "/v1/models/vae:predict", {"signature_name": "nope", "instances": [1]}), 400, "nope"),
    (("POST", "/v1/models/vae:predict", {"instances": [{"seeds": 1}]}), 400, "seed"),
    (("POST", "/v1/models/vae:predict", {"instances": ["a"]}), 400, ""),
    (("POST", "/v1/models/vae:predict", {"nothing": []}), 400, "instances"),
    (("POST", "/v1/models/vae:predict", b"{not json"), 400, ""),
    (("POST", "/v1/models/vae:predict", {"instances": [1], "inputs": [1]}), 400, "instances"),
    (("GET", "/v2/whatever", None), 404, ""),
], ids=["status_unknown_model", "unknown_model", "unknown_version", "unknown_label", "unknown_signature",
        "wrong_key", "wrong_type", "no_inputs", "bad_json", "both_formats", "unknown_path"])
def test_errors_are_json_with_tf_servings_http_status(method_path_body, status, phrase, server):
    method, path, body = method_path_body
    if method == "GET":
        got_status, got = server.rest(path)
    else:
        got_status, got = server.rest(path, raw=body if isinstance(body, bytes) else None,
                                      body=None if isinstance(body, bytes) else body)
    assert got_status == status, got
    assert isinstance(got, dict) and phrase in got["error"]
    assert server.rest("/v1/models/vae")[0] == 200  # and the server is still there


def test_a_malformed_http_request_gets_400_and_the_server_stays_up(server, request):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    connection.putrequest("POST", "/v1/models/vae:predict")
    connection.putheader("Content-Length", "lots")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 400
    if "serving.server" in request.node.callspec.id:
        assert "Content-Length" in json.loads(response.read())["error"]
    connection.close()
    assert server.rest("/v1/models/vae")[0] == 200
