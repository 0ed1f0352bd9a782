"""AlignDRAW behind `python -m serving.server`: captions as text over gRPC and REST.

A tiny AlignDRAW (untrained: serving does not care) is exported and served; the official client
and the REST API send caption strings, which the SavedModel tokenizes itself, and a word outside
the vocabulary is the request's INVALID_ARGUMENT, naming the word, never the server's problem.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import export
import zoo

CAPTION = "the digit 3 is at the top of the digit 5 ."


@pytest.fixture(scope="module")
def model():
    spec = zoo.get("zoo.align_draw")
    return spec.build(spec.make_tiny_config())


@pytest.fixture(scope="module")
def caption_server(tmp_path_factory, start_server, model):
    exported = export.export(model, tmp_path_factory.mktemp("align_draw"), "align_draw")
    return start_server("--model_name=align_draw", f"--model_base_path={exported.savedmodel_dir.rsplit('/', 1)[0]}",
                        model="align_draw")


def _client(run_module, server, *flags):
    return run_module("serving.client", "--server", f"127.0.0.1:{server.grpc_port}", "--model", "align_draw", *flags)


def test_the_client_draws_images_from_captions_over_grpc(caption_server, run_module, model, tmp_path):
    out = tmp_path / "images.npy"
    result = _client(run_module, caption_server, "--signature", "sample_from_caption",
                     "--input", f'caption=["{CAPTION}", "the digit 0 ."]', "--seed", "7",
                     "--output", "images", "--out", out)
    assert result.returncode == 0, result.stderr
    expected = model.sample_from_caption(tf.constant([CAPTION, "the digit 0 ."]), tf.constant([7, 8], tf.int64))
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
    result = _client(run_module, caption_server, "--signature", "sample_from_caption",
                     "--input", f'caption=["{CAPTION}"]', "--output", "images", "--out", tmp_path / "one.png")
    assert result.returncode == 0, result.stderr
    height, width, _ = model.config.image_shape
    assert np.asarray(Image.open(tmp_path / "one.png")).shape[:2] == (height + 2, width + 2)  # a grid of one tile


def test_rest_draws_from_captions_and_returns_the_alignment_over_the_words(caption_server, model):
    status, body = caption_server.rest("/v1/models/align_draw:predict", {
        "signature_name": "sample_from_caption",
        "inputs": {"caption": [CAPTION, "the digit 0 ."], "seed": [7, 8]}})
    assert status == 200, body
    images, alignments = np.asarray(body["outputs"]["images"]), np.asarray(body["outputs"]["alignments"])
    config = model.config
    assert images.shape == (2, *config.image_shape)
    assert alignments.shape == (2, config.glimpses, config.max_words)
    np.testing.assert_allclose(alignments.sum(-1), 1.0, atol=1e-5)
    assert np.all(alignments[1, :, 4:] == 0.0)  # "the digit 0 ." has four words


def test_an_unknown_word_is_invalid_argument_naming_it_and_the_server_keeps_serving(caption_server, run_module,
                                                                                    tmp_path):
    result = _client(run_module, caption_server, "--signature", "sample_from_caption",
                     "--input", 'caption=["the digit 3 is purple ."]', "--output", "images",
                     "--out", tmp_path / "bad.npy")
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "purple" in result.stderr
    status, body = caption_server.rest("/v1/models/align_draw:predict", {
        "signature_name": "sample_from_caption", "instances": [{"caption": "a purple cat", "seed": 1}]})
    assert status == 400 and "purple" in body["error"] and "cat" in body["error"]
    status, body = caption_server.rest("/v1/models/align_draw")
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
