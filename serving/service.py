"""What the gRPC and REST front ends share: resolve the model spec, check, batch, run, count.

Both front ends turn their wire format into numpy arrays and call `Service`; it
answers with arrays or raises `ServingError`, and records every request in the
metrics under its entry point ("GRPC" or "REST").
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import get_model_status_pb2

from serving import tensors
from serving.batching import Batcher, BatchingError
from serving.config_files import BatchingParameters
from serving.manager import ModelManager, Version
from serving.metrics import UNKNOWN_MODEL, ServingMetrics
from serving.servable import DEFAULT_SIGNATURE, LoadedVersion
from serving.status import ServingError, invalid_argument

DEFAULT_MAX_REQUEST_EXAMPLES = 4096  # ~12 MiB of 28×28 float images per request
DEFAULT_MAX_REQUEST_BYTES = 64 << 20  # decoded inputs of one request: 4096 32×32×3 float images fit


@dataclasses.dataclass(frozen=True)
class ModelRequest:
    """The model spec of a request: a name and optionally a version or a version label."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    def __post_init__(self):
        if not self.name:
            raise invalid_argument("Missing ModelSpec")  # TF Serving's words for an empty model_spec.name
        if self.version is not None and self.label:
            raise invalid_argument("ModelSpec may give a version or a version_label, not both")


@dataclasses.dataclass(frozen=True)
class Prediction:
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


def run_merged(key: tuple[LoadedVersion, str], inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs one merged batch for the batcher; its key is (servable, signature name)."""
    servable, signature_name = key
    return servable.run(signature_name, inputs)


class Service:
    def __init__(self, manager: ModelManager, max_request_examples: int = DEFAULT_MAX_REQUEST_EXAMPLES,
                 batching: BatchingParameters | None = None, metrics: ServingMetrics | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        """Batching parameters turn server-side batching on (`--enable_batching`).

        `max_request_examples` caps the batch (axis 0) of a request, `max_request_bytes`
        the size its inputs decode to; both are checked on the declared shapes, before
        any value is decoded.
        """
        self.manager = manager
        self.max_request_examples = max_request_examples
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics or ServingMetrics()
        self.batcher = Batcher(batching, run_merged) if batching else None

    @contextlib.contextmanager
    def _recorded(self, request: ModelRequest, api: str, entrypoint: str) -> Iterator[dict]:
        """Records the request when the block ends; the block puts the served version in the dict.

        The labels name only what the server serves: a model it does not serve is counted as
        UNKNOWN_MODEL and a version only once resolved, so requests naming a million models or
        versions add no series (and no memory) to the metrics.
        """
        started, status, served = time.perf_counter(), "OK", {}
        try:
            yield served
        except ServingError as error:
            status = error.code.name
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            name = request.name if self.manager.serves(request.name) else UNKNOWN_MODEL
            self.metrics.record(name, str(served.get("version", "")), api, entrypoint, status,
                                time.perf_counter() - started)

    def predict(self, request: ModelRequest, inputs: Mapping[str, np.ndarray | tensors.DeclaredTensor],
                output_filter: Sequence[str] = (), deadline: float | None = None,
                entrypoint: str = "GRPC") -> Prediction:
        """Runs the request's signature. `deadline`: time.monotonic() after which to give up.

        Inputs are arrays, or TensorProtos not yet decoded (`tensors.DeclaredTensor`): they are
        decoded only once their declared dtypes and shapes passed the signature and the caps.
        """
        with self._recorded(request, "Predict", entrypoint) as served, \
                self.manager.acquire(request.name, request.version, request.label) as servable:
            served["version"] = servable.version
            signature_name = request.signature_name or DEFAULT_SIGNATURE
            servable.check_inputs(signature_name, inputs, self.max_request_examples)
            inputs = self._decoded(inputs)
            keys = servable.output_keys(signature_name, output_filter)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            if self.batcher is None:
                outputs = servable.run(signature_name, inputs)
            else:
                outputs = self._batched(servable, signature_name, inputs, remaining)
            return Prediction(servable.version, signature_name, {key: outputs[key] for key in keys})

    def _decoded(self, inputs: Mapping[str, np.ndarray | tensors.DeclaredTensor]) -> dict[str, np.ndarray]:
        """The inputs as arrays, once their declared size is within `max_request_bytes`."""
        size = sum(value.nbytes for value in inputs.values())
        if size > self.max_request_bytes:
            shapes = ", ".join(f"{key} {list(value.shape)}" for key, value in sorted(inputs.items()))
            raise invalid_argument(
                f"the inputs ({shapes}) take {size} bytes; this server takes at most {self.max_request_bytes} "
                f"per request (--max_request_bytes); split the request"
            )
        arrays = {}
        for key, value in inputs.items():
            try:
                arrays[key] = value.to_array() if isinstance(value, tensors.DeclaredTensor) else value
            except ValueError as error:  # values that do not fill the declared shape
                raise invalid_argument(f"input '{key}' is not a valid TensorProto: {error}") from None
        return arrays

    def _batched(self, servable, signature_name, inputs, timeout):
        try:
            return self.batcher.submit((servable, signature_name), dict(inputs), timeout=timeout)
        except BatchingError as error:
            raise ServingError(grpc.StatusCode[error.code], str(error)) from None
        except TimeoutError:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    def metadata(self, request: ModelRequest, entrypoint: str = "GRPC") -> tuple[int, dict]:
        """(version, signature name → SignatureDef) of the servable the request names."""
        with self._recorded(request, "GetModelMetadata", entrypoint) as served, \
                self.manager.acquire(request.name, request.version, request.label) as servable:
            served["version"] = servable.version
            return servable.version, dict(servable.signature_defs)


def status_response(versions: Sequence[Version]) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusResponse of version snapshots (`ModelManager.status`)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for version in versions:
        status = response.model_version_status.add(
            version=version.number, state=get_model_status_pb2.ModelVersionStatus.State.Value(version.state))
        status.status.error_code = version.error_code
        status.status.error_message = version.error
    return response
