"""GAN samplers behind `python -m serving.server`: conditional and code signatures over gRPC and REST.

Two tiny GANs (untrained: serving does not care) are exported side by side and served from
one model config file; the official client and the REST API reach every GAN signature, and a
label outside [0, K) is the request's INVALID_ARGUMENT, never the server's problem.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

import export
import zoo

TINY = dict(generator_units=16, discriminator_units=8, maxout_pieces=2, filters=4, noise_dim=6)


@pytest.fixture(scope="module")
def gan_server(tmp_path_factory, start_server):
    """serving.server with `cgan` and `infogan` (version 1 each) from a model config file."""
    root = tmp_path_factory.mktemp("gans")
    entries = []
    for name in ("cgan", "infogan"):
        model = zoo.get(name).build(zoo.get(name).make_config(**TINY))
        exported = export.export(model, root / name, name)
        entries.append(f'config {{ name: "{name}" base_path: "{exported.savedmodel_dir.rsplit("/", 1)[0]}" '
                       f'model_platform: "tensorflow" }}')
    config_file = root / "models.config"
    config_file.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    server = start_server(f"--model_config_file={config_file}", model="cgan")
    server.wait_until_available("infogan")
    return server


def _client(run_module, server, *flags):
    return run_module("serving.client", "--server", f"127.0.0.1:{server.grpc_port}", *flags)


def test_client_draws_one_tile_per_label_from_the_conditional_signature(gan_server, run_module, tmp_path):
    out = tmp_path / "digits.png"
    result = _client(run_module, gan_server, "--model", "cgan", "--signature", "sample_conditional",
                     "--input", "label=[0,1,2,3,4,5,6,7,8,9]", "--out", out)
    assert result.returncode == 0, result.stderr
    grid = np.asarray(Image.open(out))
    assert grid.shape[:2] == (3 * 29 + 1, 4 * 29 + 1)  # 10 tiles of 28×28: 3 rows of 4, 1-pixel padding


def test_a_label_out_of_range_is_invalid_argument_and_the_server_keeps_serving(gan_server, run_module, tmp_path):
    result = _client(run_module, gan_server, "--model", "cgan", "--signature", "sample_conditional",
                     "--input", "label=[3,10]", "--out", tmp_path / "bad.png")
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "label must be in [0, 10)" in result.stderr
    status, body = gan_server.rest("/v1/models/cgan")
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"


def test_rest_serves_infogan_codes_and_png_samples(gan_server):
    status, body = gan_server.rest("/v1/models/infogan:predict", {
        "signature_name": "sample_with_codes",
        "instances": [{"seed": 5, "category": 2, "continuous": [0.0, 1.0]},
                      {"seed": 5, "category": 2, "continuous": [0.0, -1.0]}]})
    assert status == 200, body
    images = np.asarray([prediction for prediction in body["predictions"]], np.float32)
    assert images.shape == (2, 28, 28, 1) and np.abs(images[0] - images[1]).max() > 0

    status, body = gan_server.rest("/v1/models/infogan:predict",
                                   {"signature_name": "sample_png", "instances": [{"seed": 5}]})
    assert status == 200, body
    png = Image.open(io.BytesIO(base64.b64decode(body["predictions"][0]["b64"])))
    assert png.size == (28, 28)
