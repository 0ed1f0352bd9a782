"""serving.client against an in-process fake PredictionService; no real server is started.

The fake answers GetModelMetadata with fixed signatures shaped like the VAE's and Predict with
deterministic outputs, and records every request, so the tests check what the client sends.
"""

import concurrent.futures
import io
import json
import socket
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from serving import client as client_lib

IMAGE_SHAPE = [None, 28, 28, 1]
SEQUENCE_SHAPE = [None, 3, 6, 6, 1]  # [N, T, H, W, C]: an image after each of T steps, as DRAW's canvas_sequence
SLOW_SEED = 999  # the fake sleeps on this seed, past short deadlines


def _signature(inputs, outputs):
    def infos(specs):
        return {
            key: meta_graph_pb2.TensorInfo(
                name=f"{key}:0", dtype=tf.as_dtype(dtype).as_datatype_enum,
                tensor_shape=tf.TensorShape(shape).as_proto(),
            )
            for key, (dtype, shape) in specs.items()
        }
    return meta_graph_pb2.SignatureDef(
        inputs=infos(inputs), outputs=infos(outputs), method_name="tensorflow/serving/predict"
    )


SIGNATURES = {
    "serving_default": _signature({"seed": (tf.int64, [None])}, {"images": (tf.float32, IMAGE_SHAPE)}),
    "sample_png": _signature({"seed": (tf.int64, [None])}, {"images_bytes": (tf.string, [None])}),
    "canvas_sequence": _signature({"seed": (tf.int64, [None])}, {"images": (tf.float32, SEQUENCE_SHAPE)}),
    "decode": _signature({"latent": (tf.float32, [None, 4])}, {"images": (tf.float32, IMAGE_SHAPE)}),
    "encode": _signature(
        {"images": (tf.float32, IMAGE_SHAPE)},
        {"mean_1": (tf.float32, [None, 4]), "stddev_1": (tf.float32, [None, 4])},
    ),
    "log_likelihood": _signature(
        {"images": (tf.float32, IMAGE_SHAPE), "num_importance_samples": (tf.int64, [None]),
         "seed": (tf.int64, [None])},
        {"log_likelihood": (tf.float32, [None])},
    ),
    "__saved_model_init_op": _signature({}, {"__saved_model_init_op": (tf.string, [])}),
}


def sample_value(seed: int) -> float:
    """The fake's image for a seed is filled with this grey level."""
    return (seed % 5) / 4


def step_value(seed: int, step: int) -> float:
    """The fake's image sequence for a seed has step t filled with this grey level."""
    return ((seed + 2 * step) % 5) / 4


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((2, 3), seed % 256, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class FakePredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Serves the model "vae"; "busy" is UNAVAILABLE, any other name NOT_FOUND."""

    def __init__(self):
        self.metadata_requests, self.predict_requests, self.deadlines = [], [], []

    def _check_model(self, request, context):
        if request.model_spec.name == "busy":  # TF Serving's answer when its batching queue is full
            context.abort(grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue is full")
        if request.model_spec.name != "vae":
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"Servable not found for request: Latest({request.model_spec.name})")

    def GetModelMetadata(self, request, context):
        self.metadata_requests.append(request)
        self._check_model(request, context)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = "vae"
        response.model_spec.version.value = 1
        response.metadata["signature_def"].Pack(get_model_metadata_pb2.SignatureDefMap(signature_def=SIGNATURES))
        return response

    def Predict(self, request, context):
        self.predict_requests.append(request)
        self.deadlines.append(context.time_remaining())
        self._check_model(request, context)
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        seeds = inputs.get("seed", np.zeros(0, np.int64))
        if SLOW_SEED in seeds:
            time.sleep(1.0)
        signature = request.model_spec.signature_name
        if signature == "serving_default":
            outputs = {"images": np.stack([np.full([28, 28, 1], sample_value(s), np.float32) for s in seeds])}
        elif signature == "sample_png":
            outputs = {"images_bytes": np.array([png_bytes(s) for s in seeds], dtype=object)}
        elif signature == "canvas_sequence":
            steps = [[np.full(SEQUENCE_SHAPE[2:], step_value(s, t), np.float32) for t in range(SEQUENCE_SHAPE[1])]
                     for s in seeds]
            outputs = {"images": np.array(steps)}
        elif signature == "decode":
            outputs = {"images": np.zeros([len(inputs["latent"]), 28, 28, 1], np.float32)}
        elif signature == "encode":
            batch = len(inputs["images"])
            outputs = {"mean_1": np.zeros([batch, 4], np.float32), "stddev_1": np.ones([batch, 4], np.float32)}
        else:
            outputs = {"log_likelihood": -(seeds + inputs["num_importance_samples"]).astype(np.float32)}
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            if not request.output_filter or key in request.output_filter:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


@pytest.fixture(scope="module")
def fake_server():
    service = FakePredictionService()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def fake(fake_server):
    service, address = fake_server
    service.metadata_requests.clear()
    service.predict_requests.clear()
    service.deadlines.clear()
    service.address = address
    return service


@pytest.fixture
def run(fake, capsys):
    """run(*flags) → (exit status, stdout, stderr) of the command line against the fake."""
    def run(*flags, server=None):
        status = client_lib.main(["--server", server or fake.address, *flags])
        out, err = capsys.readouterr()
        return status, out, err
    return run


def sent(request, key):
    return tf.make_ndarray(request.inputs[key])


def read_png(path):
    return np.asarray(Image.open(path))


# The default command: serving_default on consecutive seeds, written as a grid.

def test_default_request_sends_consecutive_seeds_as_int64_from_metadata(fake, run, tmp_path):
    status, out, err = run("--num_samples", "5", "--seed", "7", "--out", str(tmp_path / "s.png"))
    assert status == 0, err
    [request] = fake.predict_requests
    assert request.model_spec.name == "vae"
    assert request.model_spec.signature_name == "serving_default"
    assert not request.model_spec.HasField("version") and not request.model_spec.version_label
    assert request.inputs["seed"].dtype == tf.int64.as_datatype_enum
    np.testing.assert_array_equal(sent(request, "seed"), [7, 8, 9, 10, 11])
    assert "s.png" in out and "vae version 1" in out


def test_grid_png_has_one_tile_per_seed_in_seed_order(run, tmp_path):
    path = tmp_path / "samples.png"
    status, _, err = run("--num_samples", "16", "--seed", "3", "--out", str(path))
    assert status == 0, err
    pixels = read_png(path)
    assert pixels.shape == (4 * 29 + 1, 4 * 29 + 1)  # 4×4 tiles of 28 px, 1 px padding
    for i in range(16):
        top, left = 1 + (i // 4) * 29, 1 + (i % 4) * 29
        assert pixels[top, left] == round(sample_value(3 + i) * 255)
    np.testing.assert_array_equal(pixels[0], 255)  # padding is white


def test_image_sequences_are_a_grid_with_a_row_per_seed_and_a_column_per_step(run, tmp_path):
    path = tmp_path / "strips.png"
    status, out, err = run("--signature", "canvas_sequence", "--num_samples", "4", "--seed", "2", "--out", str(path))
    assert status == 0, err
    assert "images [4, 3, 6, 6, 1]" in out
    pixels = read_png(path)
    assert pixels.shape == (4 * 7 + 1, 3 * 7 + 1)  # 4 rows × 3 steps of 6 px tiles, 1 px padding
    for row in range(4):
        for step in range(3):
            tile = pixels[1 + row * 7 : 7 + row * 7, 1 + step * 7 : 7 + step * 7]
            np.testing.assert_array_equal(tile, round(step_value(2 + row, step) * 255))


def test_same_seed_gives_same_tile_whatever_the_batch(run, tmp_path):
    run("--num_samples", "1", "--seed", "4", "--out", str(tmp_path / "one.png"))
    run("--num_samples", "9", "--seed", "0", "--out", str(tmp_path / "nine.png"))
    one, nine = read_png(tmp_path / "one.png"), read_png(tmp_path / "nine.png")
    np.testing.assert_array_equal(one[1:29, 1:29], nine[1 + 29 : 29 + 29, 1 + 29 : 29 + 29])  # seed 4: row 1, col 1


def test_version_and_label_reach_both_rpcs(fake, run):
    assert run("--version", "3")[0] == 0
    for request in (*fake.metadata_requests, *fake.predict_requests):
        assert request.model_spec.version.value == 3
    fake.metadata_requests.clear()
    fake.predict_requests.clear()
    assert run("--version_label", "stable")[0] == 0
    for request in (*fake.metadata_requests, *fake.predict_requests):
        assert request.model_spec.version_label == "stable"
        assert not request.model_spec.HasField("version")


def test_version_and_label_together_are_a_usage_error(fake, run):
    status, _, err = run("--version", "1", "--version_label", "stable")
    assert status == 2 and "not allowed with" in err
    assert not fake.metadata_requests


def test_timeout_is_the_call_deadline(fake, run):
    assert run("--timeout", "5")[0] == 0
    assert 4 < fake.deadlines[0] < 6  # gRPC rounds deadlines; the default would be 30


def test_deadline_exceeded_exits_1_with_status_name(run):
    status, _, err = run("--seed", str(SLOW_SEED), "--num_samples", "1", "--timeout", "0.2")
    assert status == 1
    assert "DEADLINE_EXCEEDED" in err and "--timeout 0.2" in err


def test_summary_without_out_names_outputs_dtypes_and_shapes(run):
    status, out, _ = run("--num_samples", "2")
    assert status == 0
    assert "images: float32 [2, 28, 28, 1]" in out


def test_large_responses_pass_grpc_default_message_limit(run):
    status, out, err = run("--num_samples", "2000")  # 6.3 MB of float32, over gRPC's 4 MiB default
    assert status == 0, err
    assert "[2000, 28, 28, 1]" in out


# --input: JSON literals and .npy files, cast to the metadata's dtypes.

def test_json_input_is_cast_to_declared_dtype(fake, run, tmp_path):
    status, _, err = run("--signature", "decode", "--input", "latent=[[0, 1, 2, 3]]", "--out", str(tmp_path / "d.png"))
    assert status == 0, err
    [request] = fake.predict_requests
    assert request.model_spec.signature_name == "decode"
    assert request.inputs["latent"].dtype == tf.float32.as_datatype_enum
    np.testing.assert_array_equal(sent(request, "latent"), [[0, 1, 2, 3]])
    assert read_png(tmp_path / "d.png").shape == (30, 30)


def test_npy_input_is_cast_to_declared_dtype(fake, run, tmp_path):
    np.save(tmp_path / "latent.npy", np.arange(8, dtype=np.float64).reshape(2, 4))
    status, _, err = run("--signature", "decode", "--input", f"latent=@{tmp_path / 'latent.npy'}")
    assert status == 0, err
    assert fake.predict_requests[0].inputs["latent"].dtype == tf.float32.as_datatype_enum
    np.testing.assert_array_equal(sent(fake.predict_requests[0], "latent"), np.arange(8).reshape(2, 4))


def test_missing_seed_is_filled_to_the_batch_of_other_inputs(fake, run, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros([3, 28, 28, 1], np.float32))
    status, out, err = run("--signature", "log_likelihood", "--seed", "10",
                           "--input", f"images=@{tmp_path / 'x.npy'}", "--input", "num_importance_samples=[5, 5, 5]")
    assert status == 0, err
    np.testing.assert_array_equal(sent(fake.predict_requests[0], "seed"), [10, 11, 12])
    assert json.loads(out) == [-15.0, -16.0, -17.0]  # a non-image output prints as JSON


@pytest.mark.parametrize("flags, message", [
    (["--signature", "decode", "--input", "z=[[0, 0, 0, 0]]"],
     "has no input 'z'; its inputs: latent (float32 [?, 4])"),
    (["--signature", "log_likelihood", "--input", "seed=[1]"], "needs input 'images', 'num_importance_samples'"),
    (["--signature", "decode", "--input", "latent=[[0, 0, 0]]"],
     "has shape [1, 3]; signature 'decode' takes float32 [?, 4]"),
    (["--input", "seed=[0.5]"], "must hold int64 values"),
    (["--input", "seed=[\"a\"]"], "must be numbers"),
    (["--signature", "nope"],
     "has no signature 'nope'; it has: canvas_sequence, decode, encode, log_likelihood, sample_png, serving_default"),
    (["--signature", "encode", "--input", "images=[]", "--out", "x.png"], "several outputs"),
    (["--output", "nope"], "has no output 'nope'; its outputs: images (float32 [?, 28, 28, 1])"),
])
def test_requests_the_metadata_rules_out_fail_before_sending(fake, run, flags, message):
    status, out, err = run(*flags)
    assert status == 2
    assert message in err and "Traceback" not in err
    assert not fake.predict_requests


@pytest.mark.parametrize("flag, message", [
    ("latent=[[0, 0", "is not a JSON literal"),
    ("latent", "write KEY=JSON or KEY=@file.npy"),
    ("latent=@/nonexistent/latent.npy", "cannot read /nonexistent/latent.npy"),
])
def test_bad_input_flags_fail_before_contacting_the_server(fake, run, flag, message):
    status, _, err = run("--signature", "decode", "--input", flag)
    assert status == 2 and message in err
    assert not fake.metadata_requests


@pytest.mark.parametrize("content", [b"", b"not an array"])
def test_unreadable_npy_input_is_a_usage_error(fake, run, tmp_path, content):
    (tmp_path / "bad.npy").write_bytes(content)
    status, _, err = run("--signature", "decode", "--input", f"latent=@{tmp_path / 'bad.npy'}")
    assert status == 2 and "as .npy" in err and "Traceback" not in err
    assert not fake.metadata_requests


def test_non_image_output_to_png_is_refused_before_sending(fake, run, tmp_path):
    status, _, err = run("--signature", "log_likelihood", "--input", "images=[]",
                         "--input", "num_importance_samples=[]", "--out", str(tmp_path / "ll.png"))
    assert status == 2 and "--out FILE.npy" in err
    assert not fake.predict_requests


def test_output_selects_one_of_several_and_npy_keeps_the_array(fake, run, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros([2, 28, 28, 1], np.float32))
    status, _, err = run("--signature", "encode", "--input", f"images=@{tmp_path / 'x.npy'}",
                         "--output", "stddev_1", "--out", str(tmp_path / "s.npy"))
    assert status == 0, err
    assert list(fake.predict_requests[0].output_filter) == ["stddev_1"]
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.ones([2, 4]))


# String outputs: PNG bytes written as they are.

def test_bytes_outputs_are_written_one_file_per_sample(run, tmp_path):
    status, out, err = run("--signature", "sample_png", "--num_samples", "3", "--seed", "5",
                           "--out", str(tmp_path / "out.png"))
    assert status == 0, err
    for i in range(3):
        assert (tmp_path / f"out-{i}.png").read_bytes() == png_bytes(5 + i)
    assert not (tmp_path / "out.png").exists()


def test_a_single_bytes_output_is_written_to_out_itself(run, tmp_path):
    status, _, _ = run("--signature", "sample_png", "--num_samples", "1", "--out", str(tmp_path / "one.png"))
    assert status == 0
    assert (tmp_path / "one.png").read_bytes() == png_bytes(0)


# Failures: one line on stderr, no traceback.

def test_unreachable_server_exits_2_with_a_hint(run):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens there
    status, _, err = run("--model", "iwae", server=address)
    assert status == 2
    assert f"cannot reach {address}" in err
    assert "is the server running? e.g. python -m serving.server --model_name iwae" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_server_error_exits_1_with_status_name_and_message(run):
    status, _, err = run("--model", "nope")
    assert status == 1
    assert "NOT_FOUND" in err and "Servable not found for request: Latest(nope)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unavailable_from_a_running_server_is_a_server_error(run):
    status, _, err = run("--model", "busy")
    assert status == 1
    assert "UNAVAILABLE: The batch scheduling queue is full" in err and "cannot reach" not in err


# The Python API.

def test_client_metadata_gives_signatures_as_tensor_specs(fake):
    with client_lib.Client(fake.address) as client:
        metadata = client.metadata("vae")
    assert metadata.version == 1
    assert "__saved_model_init_op" not in metadata.signatures
    signature = metadata.signatures["serving_default"]
    assert signature.inputs["seed"] == tf.TensorSpec([None], tf.int64, name="seed")
    assert signature.outputs["images"].shape.as_list() == IMAGE_SHAPE


def test_client_predict_returns_numpy_arrays(fake):
    with client_lib.Client(fake.address) as client:
        outputs = client.predict("vae", {"seed": np.arange(3, dtype=np.int64)})
    assert outputs["images"].dtype == np.float32 and outputs["images"].shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(outputs["images"][:, 0, 0, 0], [sample_value(s) for s in range(3)])


def test_conform_inputs_needs_no_server():
    signature = client_lib.Signature(inputs={"seed": tf.TensorSpec([None], tf.int64)}, outputs={})
    conformed = client_lib.conform_inputs(signature, {"seed": [1, 2.0]}, "serving_default")
    assert conformed["seed"].dtype == np.int64
    with pytest.raises(client_lib.ClientError, match="has no input 'latent'"):
        client_lib.conform_inputs(signature, {"seed": [1], "latent": [0]}, "serving_default")


def test_parse_input_reads_json_and_npy(tmp_path):
    assert client_lib.parse_input("latent=[[0, 0.5]]") == ("latent", [[0, 0.5]])
    assert client_lib.parse_input('name="x=y"') == ("name", "x=y")  # only the first = splits
    np.save(tmp_path / "x.npy", np.eye(2))
    key, value = client_lib.parse_input(f"images=@{tmp_path / 'x.npy'}")
    assert key == "images"
    np.testing.assert_array_equal(value, np.eye(2))
