"""A client for TF Serving's gRPC API, as a command and as a small Python API.

    python -m serving.client --server localhost:8500 --model vae --num_samples 16 --seed 0 --out samples.png

It speaks only the public PredictionService API (`GetModelMetadata`, `Predict`) through the
official `tensorflow_serving.apis` stubs, so it works unchanged against `python -m serving.server`
and `tensorflow_model_server`. Input dtypes and shapes come from the server's signature_def
metadata: values are checked and cast before anything is sent.

Sampling is stateless: image i of `serving_default` is drawn from seed[i] alone, so `--seed 0
--num_samples 16` asks for seeds 0, 1, ..., 15 and seed 3 gives the same image whatever the batch,
the server, or the server's batching.

Exit status: 0 on success, 1 when the server answered with an error, 2 for a request that cannot
be sent as given or a server that cannot be reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from typing import Any, Mapping

if __name__ == "__main__":  # the command: quiet TensorFlow's start-up logs before it loads, below
    from serving import startup

    startup.quiet_tensorflow()

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from serving import images as image_lib, tensors

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # gRPC's 4 MiB default holds only ~1300 float32 28×28 images
DEFAULT_TIMEOUT_SECONDS = 30.0


class ClientError(Exception):
    """A request that cannot be sent as given; nothing reached the server's model (exit status 2)."""


class ServerUnreachable(ClientError):
    """No server answers at the target (exit status 2)."""


class ServerError(Exception):
    """The server answered with an error (exit status 1); `code` is its grpc.StatusCode, if any."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(f"{code.name}: {message}" if code else message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class Signature:
    """One SignatureDef: its input and output tensors by key."""

    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """What GetModelMetadata tells about a model: its callable signatures by name."""

    name: str
    version: int | None  # the version that answered; None where the server does not say
    signatures: dict[str, Signature]


def describe(spec: tf.TensorSpec) -> str:
    """`float32 [?, 28, 28, 1]`: a tensor's dtype and shape, `?` for any size."""
    if spec.shape.rank is None:
        return f"{spec.dtype.name} [any shape]"
    return f"{spec.dtype.name} [{', '.join('?' if size is None else str(size) for size in spec.shape)}]"


def _spec(key: str, info) -> tf.TensorSpec:
    return tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.dtypes.as_dtype(info.dtype), name=key)


def _set_model_spec(spec, model: str, version: int | None, version_label: str | None, signature: str = ""):
    if version is not None and version_label is not None:
        raise ClientError("give a version or a version label, not both")
    spec.name = model
    if version is not None:
        spec.version.value = version
    elif version_label is not None:
        spec.version_label = version_label
    spec.signature_name = signature


def predict_request(model: str, inputs: Mapping[str, Any], signature: str = "", version: int | None = None,
                    version_label: str | None = None, output_keys: list[str] | None = None
                    ) -> predict_pb2.PredictRequest:
    """A PredictRequest; each input is an array (sent with its own dtype) or a TensorProto sent as it is."""
    request = predict_pb2.PredictRequest(output_filter=output_keys or [])
    _set_model_spec(request.model_spec, model, version, version_label, signature)
    for key, value in inputs.items():
        is_proto = isinstance(value, tensor_pb2.TensorProto)
        request.inputs[key].CopyFrom(value if is_proto else tensors.to_proto(np.asarray(value)))
    return request


class Client:
    """One gRPC channel to a TF Serving–compatible server.

    Args:
      target: `host:port` of the gRPC API.
      timeout: default deadline of each call, in seconds.
    """

    def __init__(self, target: str, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info):
        self.close()

    def metadata(self, model: str, version: int | None = None, version_label: str | None = None,
                 timeout: float | None = None) -> ModelMetadata:
        """The model's signatures, from GetModelMetadata's `signature_def` field."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _set_model_spec(request.model_spec, model, version, version_label)
        response = self._call(self._stub.GetModelMetadata, request, timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        packed = response.metadata.get("signature_def")
        if packed is None or not packed.Unpack(signature_map):
            raise ServerError(f"the server sent no signature_def metadata for model {model!r}")
        signatures = {
            name: Signature(
                inputs={key: _spec(key, signature.inputs[key]) for key in sorted(signature.inputs)},
                outputs={key: _spec(key, signature.outputs[key]) for key in sorted(signature.outputs)},
            )
            for name, signature in sorted(signature_map.signature_def.items())
            if not name.startswith("__")  # __saved_model_init_op is not callable
        }
        answered = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return ModelMetadata(model, answered, signatures)

    def predict(self, model: str, inputs: Mapping[str, Any], signature: str = "serving_default",
                version: int | None = None, version_label: str | None = None,
                output_keys: list[str] | None = None, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Runs one signature on a batch; arrays are sent with their own dtypes (see `conform_inputs`).

        `output_keys` asks for a subset of the outputs (PredictRequest.output_filter).
        """
        request = predict_request(model, inputs, signature, version, version_label, output_keys)
        response = self._call(self._stub.Predict, request, timeout)
        return {key: tensors.to_array(proto) for key, proto in response.outputs.items()}

    def _call(self, rpc, request, timeout: float | None):
        try:
            return rpc(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            # A server that is up answers UNAVAILABLE too (TF Serving does when its batching
            # queue is full), so the status alone does not tell that nothing listens there.
            if error.code() == grpc.StatusCode.UNAVAILABLE and not self._connects():
                raise ServerUnreachable(f"cannot reach {self.target}: {error.details()}") from None
            raise ServerError(error.details(), error.code()) from None

    def _connects(self, wait_seconds: float = 1.0) -> bool:
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=wait_seconds)
            return True
        except grpc.FutureTimeoutError:
            ready.cancel()
            return False


def conform_inputs(signature: Signature, values: Mapping[str, Any], name: str = "") -> dict[str, np.ndarray]:
    """Checks `values` against the signature's inputs and casts each to its declared dtype.

    Raises ClientError for an unknown or missing key, a value of the wrong kind (strings for
    numbers, 1.5 for an integer) or a shape the signature does not accept.
    """
    inputs = ", ".join(f"{key} ({describe(spec)})" for key, spec in signature.inputs.items())
    for key in values:
        if key not in signature.inputs:
            raise ClientError(f"signature {name!r} has no input {key!r}; its inputs: {inputs}")
    missing = [key for key in signature.inputs if key not in values]
    if missing:
        raise ClientError(f"signature {name!r} needs input {', '.join(map(repr, missing))}; its inputs: {inputs}")
    return {key: _conform(key, values[key], spec, name) for key, spec in signature.inputs.items()}


def _conform(key: str, value: Any, spec: tf.TensorSpec, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nesting
        raise ClientError(f"input {key!r}: {error}") from None
    if spec.dtype == tf.string:
        if array.size and array.dtype.kind not in "SU":
            raise ClientError(f"input {key!r} must be strings ({describe(spec)})")
        cast = array.astype(bytes if array.dtype.kind == "S" else str)
    else:
        if array.size and array.dtype.kind not in "biuf":
            raise ClientError(f"input {key!r} must be numbers ({describe(spec)}), got {array.dtype} values")
        cast = array.astype(spec.dtype.as_numpy_dtype)
        if (spec.dtype.is_integer or spec.dtype.is_bool) and not np.array_equal(cast, array):
            raise ClientError(f"input {key!r} must hold {spec.dtype.name} values, got {value!r}")
    if not spec.shape.is_compatible_with(cast.shape):
        raise ClientError(
            f"input {key!r} has shape {list(cast.shape)}; signature {name!r} takes {describe(spec)}"
        )
    return cast


def parse_input(text: str) -> tuple[str, Any]:
    """`key=JSON` or `key=@file.npy` (an `--input` flag) → (key, value)."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise ClientError(f"--input {text!r}: write KEY=JSON or KEY=@file.npy")
    if value.startswith("@"):
        try:
            return key, np.load(value[1:], allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
            raise ClientError(f"--input {text!r}: cannot read {value[1:]} as .npy: {error}") from None
    try:
        return key, json.loads(value)
    except json.JSONDecodeError as error:
        raise ClientError(f"--input {text!r}: the value is not a JSON literal ({error})") from None


def _output_kind(key: str, spec: tf.TensorSpec) -> str:
    """"images" for float [N, H, W, C], "image_sequences" for float [N, T, H, W, C], "bytes" for strings named
    "…_bytes" (TF Serving's convention for binary strings), "texts" for other strings, else "array"."""
    if spec.dtype == tf.string:
        return "bytes" if key.endswith("_bytes") else "texts"
    if spec.dtype.is_floating and spec.shape.rank == 4:
        return "images"
    if spec.dtype.is_floating and spec.shape.rank == 5:
        return "image_sequences"
    return "array"


def _write(path: pathlib.Path, kind: str, array: np.ndarray) -> list[pathlib.Path]:
    if path.suffix == ".npy":
        np.save(path, array)
        return [path]
    if kind in ("images", "image_sequences"):
        if array.shape[-1] not in (1, 3):
            raise ClientError(f"images with {array.shape[-1]} channels make no PNG; write --out FILE.npy")
        if kind == "images":
            image_lib.save_png(path, image_lib.grid(array))
        else:  # a row per example, a column per step
            image_lib.save_png(path, image_lib.grid(array.reshape(-1, *array.shape[2:]), columns=array.shape[1]))
        return [path]
    if kind == "texts":
        path.write_text("".join(_text(value) + "\n" for value in array.reshape(-1)))
        return [path]
    blobs = array.reshape(-1)
    paths = [path] if blobs.size == 1 else [
        path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(blobs.size)
    ]
    for blob_path, blob in zip(paths, blobs):
        blob_path.write_bytes(blob)
    return paths


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.client",
        description=(
            "Calls a signature of a model on a TF Serving-compatible gRPC server. By default it "
            "samples --num_samples images of serving_default from seeds --seed, --seed+1, ... "
            "(image i depends on its seed alone) and, with --out, writes them as one PNG grid."
        ),
        epilog=(
            "What --out PATH writes: float images [N, H, W, 1 or 3] as one PNG grid; float image "
            "sequences [N, T, H, W, 1 or 3] (e.g. canvas_sequence) as one PNG grid with a row per "
            "example and a column per step; texts (string outputs such as sample_text's text) "
            "one per line; binary string "
            "outputs (e.g. sample_png's images_bytes) as their bytes, to PATH for one sample, "
            "else to PATH-0.png, PATH-1.png, ... (PATH's stem and suffix); any output as an "
            "array if PATH ends in .npy. Without --out, texts print one per line, other outputs "
            "(e.g. log_likelihood) as JSON, images and bytes as a summary line."
        ),
    )
    parser.add_argument("--server", default="localhost:8500", help="gRPC host:port (default %(default)s)")
    parser.add_argument("--model", default="vae", help="model name (default %(default)s)")
    parser.add_argument("--signature", default="serving_default", help="signature name (default %(default)s)")
    parser.add_argument("--num_samples", type=_positive(int), default=16,
                        help="seeds to send when the signature takes `seed` and no other input sets the "
                             "batch size (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="first seed: a `seed` input not given with --input is seed, seed+1, ... "
                             "(default %(default)s)")
    parser.add_argument("--input", action="append", default=[], metavar="KEY=VALUE",
                        help="an input as a JSON literal (latent='[[0,0,0,0]]') or a .npy file "
                             "(images=@x.npy); repeatable; dtypes come from the server's metadata")
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--version", type=_positive(int), help="model version (default: the server's choice)")
    version.add_argument("--version_label", help="model version label, e.g. stable")
    parser.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT_SECONDS,
                        help="deadline of each call in seconds (default %(default)s)")
    parser.add_argument("--output", metavar="KEY", help="the output to write or print (default: the only one)")
    parser.add_argument("--out", type=pathlib.Path, metavar="PATH", help="file to write the output to")
    return parser


def _positive(convert):
    def parse(text: str):
        value = convert(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not positive")
        return value
    parse.__name__ = convert.__name__  # argparse names the type in its messages
    return parse


def _batch_size(values, default: int) -> int:
    """The leading size of the first batched value, else `default`."""
    for value in values:
        try:
            array = np.asarray(value)
        except ValueError:  # ragged; conform_inputs reports it
            continue
        if array.ndim > 0:
            return len(array)
    return default


def _run(client: Client, args: argparse.Namespace) -> int:
    values = {}
    for item in args.input:
        key, value = parse_input(item)
        if key in values:
            raise ClientError(f"--input {key} is given twice")
        values[key] = value

    metadata = client.metadata(args.model, args.version, args.version_label)
    signature = metadata.signatures.get(args.signature)
    if signature is None:
        raise ClientError(f"model {args.model!r} has no signature {args.signature!r}; "
                          f"it has: {', '.join(sorted(metadata.signatures))}")
    outputs_list = ", ".join(f"{key} ({describe(spec)})" for key, spec in signature.outputs.items())
    if args.output is not None and args.output not in signature.outputs:
        raise ClientError(
            f"signature {args.signature!r} has no output {args.output!r}; its outputs: {outputs_list}"
        )
    key = args.output or (next(iter(signature.outputs)) if len(signature.outputs) == 1 else None)
    kind = _output_kind(key, signature.outputs[key]) if key else None
    if args.out is not None:
        if key is None:
            raise ClientError(f"signature {args.signature!r} has several outputs ({outputs_list}); "
                              f"choose the one to write with --output KEY")
        if kind == "array" and args.out.suffix != ".npy":
            raise ClientError(f"output {key!r} ({describe(signature.outputs[key])}) is no image; "
                              f"write it with --out FILE.npy, or omit --out to print it")

    if "seed" in signature.inputs and "seed" not in values:
        batch = _batch_size(values.values(), default=args.num_samples)
        values["seed"] = np.arange(args.seed, args.seed + batch, dtype=np.int64)
    inputs = conform_inputs(signature, values, args.signature)

    outputs = client.predict(args.model, inputs, args.signature, args.version, args.version_label,
                             output_keys=[args.output] if args.output else None)
    if key is not None and key not in outputs:
        raise ServerError(f"the server returned no output {key!r} (it returned: {', '.join(outputs)})")

    model = args.model if metadata.version is None else f"{args.model} version {metadata.version}"
    if args.out is not None:
        try:
            paths = _write(args.out, kind, outputs[key])
        except OSError as error:
            raise ClientError(f"cannot write {error.filename}: {error.strerror}") from None
        where = paths[0] if len(paths) == 1 else f"{paths[0]} ... {paths[-1]}"
        print(f"wrote {where}: {key} {list(outputs[key].shape)} from {model}, {args.signature}")
    elif kind == "array":
        print(json.dumps(outputs[key].tolist()))
    elif kind == "texts":
        print("\n".join(_text(value) for value in outputs[key].reshape(-1)))
    else:
        print(f"{model}, {args.signature}:")
        for name, value in outputs.items():
            dtype = signature.outputs[name].dtype.name if name in signature.outputs else value.dtype
            print(f"  {name}: {dtype} {list(value.shape)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage and the problem
        return exit_.code
    try:
        with Client(args.server, args.timeout) as client:
            return _run(client, args)
    except ServerUnreachable as error:
        name = args.model
        print(f"serving.client: {error} — is the server running? e.g. python -m serving.server "
              f"--model_name {name} --model_base_path runs/{name}/serving/{name}", file=sys.stderr)
        return 2
    except ClientError as error:
        print(f"serving.client: {error}", file=sys.stderr)
        return 2
    except ServerError as error:
        hint = f" (--timeout {args.timeout:g} s)" if error.code == grpc.StatusCode.DEADLINE_EXCEEDED else ""
        print(f"serving.client: server error {error}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
