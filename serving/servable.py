"""One loaded version of a SavedModel: its signatures, their metadata, and checked calls.

Requests are checked against the SignatureDefs stored in `saved_model.pb` — the
same records `tensorflow_model_server` checks against — before any TensorFlow
runs, so a bad request gets TF Serving's status code and a message naming what
was sent and what the signature expects.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.status import ServingError, invalid_argument, shown

DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"  # SavedModel bookkeeping, not a serving signature


def dtype_name(dtype: int) -> str:
    return types_pb2.DataType.Name(dtype)


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


def signature_shape(info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    """The TensorInfo's shape, -1 for unknown sizes; None for an unknown rank."""
    if info.tensor_shape.unknown_rank:
        return None
    return [dim.size for dim in info.tensor_shape.dim]


def read_signature_defs(path: pathlib.Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The serving SignatureDefs of the SavedModel at `path`, by name."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    if not saved_model.meta_graphs:
        raise ValueError(f"{path}/saved_model.pb holds no MetaGraph")
    signature_defs = saved_model.meta_graphs[0].signature_def
    return {name: signature_defs[name] for name in signature_defs if name != INIT_OP_SIGNATURE}


def runtime_error_text(error: tf.errors.OpError) -> str:
    """The cause of a TensorFlow runtime error, without the graph traceback around it.

    "Graph execution error: … Detected at node … File …  assertion failed: [send fewer …] …
    [[{{node …}}]]" becomes "assertion failed: [send fewer …] …".
    """
    lines = [line.strip() for line in error.message.splitlines()]
    causes = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node",
                                                                       "File ", "[[", "Op:"))]
    if not causes:
        return type(error).__name__
    cause = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", causes[-1].split(" [[")[0])
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", cause)


class LoadedVersion:
    """A SavedModel version in memory. Thread-safe: calls share the loaded functions."""

    def __init__(self, model_name: str, version: int, path: str | pathlib.Path):
        self.model_name = model_name
        self.version = version
        self.path = pathlib.Path(path)
        self.signature_defs = read_signature_defs(self.path)
        loaded = tf.saved_model.load(str(self.path))
        self._functions = {name: loaded.signatures[name] for name in self.signature_defs}
        self._loaded = loaded  # keeps the variables the functions capture alive

    def signature_def(self, name: str) -> meta_graph_pb2.SignatureDef:
        """The SignatureDef called `name` ("" means serving_default); FAILED_PRECONDITION if absent."""
        name = name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{shown(name)}" not found.',
            )
        return self.signature_defs[name]

    def check_inputs(self, signature_name: str, inputs: Mapping[str, np.ndarray], max_examples: int) -> int:
        """Validates `inputs` for the signature; returns their batch size.

        Only the inputs' `dtype`, `ndim` and `shape` are read, so TensorProtos not yet
        decoded (`tensors.DeclaredTensor`) are checked before anything is allocated.

        INVALID_ARGUMENT when the keys differ from the signature's (TF Serving's
        message: sent extra / missing but required), when a dtype or shape does
        not match, when inputs disagree on the batch size, or when the batch
        exceeds `max_examples`.
        """
        signature = self.signature_def(signature_name)
        expected, sent = set(signature.inputs), {shown(key) for key in inputs}
        if expected != set(inputs):
            raise invalid_argument(
                f"input size does not match signature: {len(inputs)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
            )
        batch_sizes = {}
        for key in sorted(inputs):
            value, info = inputs[key], signature.inputs[key]
            sent_dtype = tf.as_dtype(value.dtype).as_datatype_enum if value.dtype != object else types_pb2.DT_STRING
            if sent_dtype != info.dtype:
                raise invalid_argument(
                    f"input '{key}' has dtype {dtype_name(sent_dtype)}, but signature "
                    f"'{signature_name or DEFAULT_SIGNATURE}' expects {dtype_name(info.dtype)}"
                )
            shape = signature_shape(info)
            if shape is not None and (
                len(shape) != value.ndim or any(want not in (-1, got) for want, got in zip(shape, value.shape))
            ):
                raise invalid_argument(
                    f"input '{key}' has shape {shape_text(value.shape)}, but signature "
                    f"'{signature_name or DEFAULT_SIGNATURE}' expects {shape_text(shape)} (-1: any size)"
                )
            if value.ndim:
                batch_sizes[key] = value.shape[0]
        if len(set(batch_sizes.values())) > 1:
            sizes = ", ".join(f"{key} {size}" for key, size in batch_sizes.items())
            raise invalid_argument(f"inputs disagree on the batch size (axis 0): {sizes}")
        batch = next(iter(batch_sizes.values()), 1)
        if batch > max_examples:
            raise invalid_argument(
                f"request holds {batch} examples; this server takes at most {max_examples} per request "
                f"(--max_request_examples); split the request"
            )
        return batch

    def output_keys(self, signature_name: str, output_filter: Sequence[str]) -> list[str]:
        """The outputs to return: all of the signature's, or the filtered ones (checked)."""
        outputs = self.signature_def(signature_name).outputs
        for key in output_filter:
            if key not in outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {shown(key)} Outputs expected to be in the set "
                    f"{{{','.join(sorted(outputs))}}}."
                )
        return list(output_filter) or sorted(outputs)

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls the signature on checked inputs; TensorFlow errors become serving errors."""
        function = self._functions[signature_name or DEFAULT_SIGNATURE]
        try:
            outputs = function(**{key: tf.constant(value) for key, value in inputs.items()})
        except tf.errors.InvalidArgumentError as error:
            raise invalid_argument(runtime_error_text(error)) from None
        except tf.errors.ResourceExhaustedError as error:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, runtime_error_text(error)) from None
        return {key: value.numpy() for key, value in outputs.items()}
