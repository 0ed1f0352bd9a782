"""TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest) over serving/http_server.py.

    GET  /v1/models/NAME[/versions/N | /labels/L]             model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata    signature defs
    POST /v1/models/NAME[/versions/N | /labels/L]:predict     {"instances": [...]} or {"inputs": ...}

JSON values become arrays of the dtype the signature declares. String tensors
are sent as {"b64": "..."} (or plain text); string outputs whose name ends in
`_bytes` come back as {"b64": "..."}, as TF Serving does. Errors are
`{"error": "..."}` with TF Serving's HTTP status for the code: 400 for anything
wrong in the request (a value of the wrong type or beyond the dtype's range,
`true` as a number, null, ragged rows, JSON nested too deep, a version that is not
a base-10 int64), 404 for unknown paths and methods, and 500 only for a bug here.
The HTTP limits (deadlines, connections, sizes) are http_server's; complete
requests run on its bounded pool of threads. A predict answer is rendered a few
thousand values at a time on that thread, and refused with 400 once it would pass
`max_answer_bytes` (http_server.DEFAULT_MAX_ANSWER_BYTES, 64 MiB): a 20 KB request
for 4096 VAE images would otherwise answer 68 MiB of JSON.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.http_server import DEFAULT_MAX_ANSWER_BYTES, HttpServer
from serving.manager import ModelManager
from serving.servable import DEFAULT_SIGNATURE
from serving.service import ModelRequest, Service, status_response
from serving.status import ServingError, invalid_argument

log = logging.getLogger("serving")

MODEL_URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?$"
)
MAX_INPUT_RANK = 32  # deeper JSON lists than any signature takes; numpy stops at 32 dimensions here
LISTED_AT_ONCE = 1 << 12  # output values turned into Python objects at a time while rendering an answer
MIN_JSON_BYTES_PER_VALUE = 3  # the shortest JSON value with its separator: "0, "


def _describe(item) -> str:
    """A JSON value as a client would name it, for error messages."""
    if item is None or isinstance(item, bool):
        return json.dumps(item)
    if isinstance(item, dict):
        return 'a {"b64": ...} object' if "b64" in item else "an object"
    if isinstance(item, str):
        return f"the string {item!r:.40}"
    return f"{item!r:.40}"


def _accepts(dtype: np.dtype) -> Callable[[object], bool]:
    """Whether a JSON scalar is a value of `dtype`: no booleans as numbers, integers only within range."""
    if dtype.kind == "b":
        return lambda item: type(item) is bool
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return lambda item: type(item) is int and info.min <= item <= info.max
    return lambda item: type(item) in (int, float)


def _string_leaf(item, key: str) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, dict) and set(item) == {"b64"} and isinstance(item["b64"], str):
        try:
            return base64.b64decode(item["b64"], validate=True)
        except ValueError:
            raise invalid_argument(f"input '{key}': invalid base64 in {{\"b64\": ...}}") from None
    if isinstance(item, list):
        raise invalid_argument(f"input '{key}' is ragged; every row needs the same shape")
    raise invalid_argument(f"input '{key}' expects strings or {{\"b64\": ...}} objects, got {_describe(item)}")


def _json_value_to_array(value, dtype: tf.DType, key: str) -> np.ndarray:
    """A JSON value (nested lists) as an array of the signature's dtype, or INVALID_ARGUMENT."""
    rank, first = 0, value
    while isinstance(first, list) and first:
        rank, first = rank + 1, first[0]
    if rank > MAX_INPUT_RANK:
        raise invalid_argument(f"input '{key}' is nested {rank} lists deep; at most {MAX_INPUT_RANK} are served")
    items = np.array(value, dtype=object)  # the rows of a ragged value stay lists, refused below
    if dtype == tf.string:
        return np.array([_string_leaf(item, key) for item in items.flat], dtype=object).reshape(items.shape)
    numpy_dtype = np.dtype(dtype.as_numpy_dtype)
    accepts = _accepts(numpy_dtype)
    wrong = next((item for item in items.flat if not accepts(item)), accepts)
    if isinstance(wrong, list):
        raise invalid_argument(f"input '{key}' is ragged; every row needs the same shape")
    if wrong is not accepts:
        if type(wrong) is int and numpy_dtype.kind in "iu":
            raise invalid_argument(f"input '{key}': {str(wrong):.40} is outside the {dtype.name} range")
        raise invalid_argument(f"input '{key}' expects {dtype.name} values; got {_describe(wrong)}")
    floating = numpy_dtype.kind in "fc"
    try:
        wide = items.astype(np.float64 if floating else numpy_dtype)
    except OverflowError:  # an integer beyond float64
        wide = None
    with np.errstate(over="ignore"):  # refused below
        array = None if wide is None else wide.astype(numpy_dtype, copy=False)
    if array is None or (floating and (np.isinf(array) & ~np.isinf(wide)).any()):
        raise invalid_argument(f"input '{key}' holds a value outside the {dtype.name} range")
    return array


def _array_to_json(key: str, array: np.ndarray):
    if array.dtype == object:
        if key.endswith("_bytes"):
            encode = np.vectorize(lambda item: {"b64": base64.b64encode(item).decode()}, otypes=[object])
        else:
            encode = np.vectorize(lambda item: item.decode(errors="replace"), otypes=[object])
        return encode(array).tolist() if array.size else array.tolist()
    return array.tolist()


def parse_predict_body(body: Mapping, input_dtypes: Mapping[str, tf.DType]) -> tuple[dict[str, np.ndarray], bool]:
    """The request's inputs as arrays, and whether it used the row ("instances") format."""
    if "instances" in body and "inputs" in body:
        raise invalid_argument("Must have only one of 'instances' or 'inputs' in JSON request body")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid_argument("'instances' must be a list, one entry per example")
        keys = sorted(input_dtypes)
        if all(isinstance(row, dict) and "b64" not in row for row in instances) and instances:
            names = set().union(*instances)
            missing = [key for key in names if any(key not in row for row in instances)]
            if missing:
                raise invalid_argument(f"every instance needs the same keys; some lack {', '.join(sorted(missing))}")
            columns = {key: [row[key] for row in instances] for key in names}
        elif len(keys) == 1:
            columns = {keys[0]: instances}
        else:
            raise invalid_argument(
                f"this signature takes several inputs ({', '.join(keys)}); send each instance as an object "
                f"with those keys"
            )
        row_format = True
    elif "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and "b64" not in inputs:
            columns = inputs
        elif len(input_dtypes) == 1:
            columns = {next(iter(input_dtypes)): inputs}
        else:
            raise invalid_argument(f"'inputs' must be an object with the keys {', '.join(sorted(input_dtypes))}")
        row_format = False
    else:
        raise invalid_argument("Missing 'instances' or 'inputs' key in JSON request body")
    arrays = {key: _json_value_to_array(value, input_dtypes[key], key)
              for key, value in columns.items() if key in input_dtypes}
    # Unknown keys are passed through as-is so the signature check names them.
    arrays.update({key: np.asarray(0) for key in columns if key not in input_dtypes})
    return arrays, row_format


class _Answer:
    """JSON written piece by piece into one buffer; INVALID_ARGUMENT once it would pass `limit` bytes."""

    def __init__(self, limit: int):
        self.limit, self.buffer = limit, io.BytesIO()

    def refuse(self):
        return invalid_argument(f"the answer would exceed the {self.limit}-byte limit on one REST answer; ask for "
                                f"fewer examples per request, or use gRPC")

    def write(self, piece: bytes) -> None:
        if self.buffer.tell() + len(piece) > self.limit:
            raise self.refuse()
        self.buffer.write(piece)

    def write_array(self, key: str, array: np.ndarray) -> None:
        if array.ndim == 0 or array.size <= LISTED_AT_ONCE:
            self.write(json.dumps(_array_to_json(key, array)).encode())
            return
        self.write(b"[")
        if array.ndim == 1:
            for start in range(0, len(array), LISTED_AT_ONCE):
                self.write((b", " if start else b"") +
                           json.dumps(_array_to_json(key, array[start:start + LISTED_AT_ONCE])).encode()[1:-1])
        else:
            for index in range(len(array)):
                self.write(b", " if index else b"")
                self.write_array(key, array[index])
        self.write(b"]")

    def write_object(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.write(b"{")
        for index, (key, array) in enumerate(arrays.items()):
            self.write((b", " if index else b"") + json.dumps(key).encode() + b": ")
            self.write_array(key, array)
        self.write(b"}")


def predict_answer(outputs: Mapping[str, np.ndarray], row_format: bool, max_bytes: int) -> bytes:
    """The JSON answer to a predict, as TF Serving shapes it, of `max_bytes` at most (else INVALID_ARGUMENT).

    Rendered a row (or LISTED_AT_ONCE values) at a time, so that memory holds the answer's bytes once,
    not also its Python lists and its text.
    """
    answer = _Answer(max_bytes)
    if sum(array.size for array in outputs.values()) * MIN_JSON_BYTES_PER_VALUE > max_bytes:
        raise answer.refuse()  # before rendering any of it
    if not row_format:
        answer.write(b'{"outputs": ')
        if len(outputs) == 1:
            answer.write_array(*next(iter(outputs.items())))
        else:
            answer.write_object(outputs)
        answer.write(b"}")
        return answer.buffer.getvalue()
    answer.write(b'{"predictions": [')
    for row in range(len(next(iter(outputs.values())))):
        answer.write(b", " if row else b"")
        if len(outputs) == 1:
            key, array = next(iter(outputs.items()))
            answer.write_array(key, array[row, ...])
        else:
            answer.write_object({key: array[row, ...] for key, array in outputs.items()})
    answer.write(b"]}")
    return answer.buffer.getvalue()


def _version_number(text: str) -> int:
    """A version path segment as an int64 (ASCII digits only: '²'.isdigit() is true), in TF Serving's words."""
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) >= 1 << 63:
        raise invalid_argument(f"Failed to convert version: {text:.40} to numeric.")
    return int(text)


class RestApi:
    """Routes a request (method, path, body) to the service; returns (HTTP status, JSON or text)."""

    def __init__(self, service: Service, manager: ModelManager, timeout_seconds: float,
                 metrics_path: str | None = None, max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES):
        self.service, self.manager = service, manager
        self.timeout_seconds = timeout_seconds
        self.metrics_path = metrics_path
        self.max_answer_bytes = max_answer_bytes

    def handle(self, method: str, target: str, body: bytes = b"") -> tuple[int, str, bytes]:
        """(status, content type, answer body) of a request; never raises. 500 means a bug here, not in the request."""
        path = target
        try:
            try:
                path = urllib.parse.urlsplit(target).path
            except ValueError:
                raise invalid_argument(f"malformed request target {target!r:.200}") from None
            if self.metrics_path and method == "GET" and path == self.metrics_path:
                return 200, "text/plain; version=0.0.4", self.service.metrics.render().encode()
            match = MODEL_URL.match(path)
            if match is None or (method, match["verb"], match["metadata"]) not in {
                ("GET", None, None), ("GET", None, "/metadata"), ("POST", "predict", None),
                ("POST", "classify", None), ("POST", "regress", None),
            }:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method:.20} {path:.200}")
            request = ModelRequest(
                name=urllib.parse.unquote(match["name"]),
                version=_version_number(match["version"]) if match["version"] is not None else None,
                label=urllib.parse.unquote(match["label"]) if match["label"] else None,
            )
            if match["verb"] in ("classify", "regress"):
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"{match['verb']} is not served here; use :predict")
            if match["verb"] == "predict":
                return 200, "application/json", self._predict(request, body)
            if match["metadata"]:
                answer = self._metadata(request)
            else:
                answer = json_format.MessageToDict(
                    status_response(self.manager.status(request.name, request.version, request.label)),
                    preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            return 200, "application/json", json.dumps(answer).encode()
        except ServingError as error:
            return error.http_status, "application/json", json.dumps({"error": error.message}).encode()
        except Exception as error:  # the server outlives any request
            log.exception("REST %s %s failed", method, path)
            return 500, "application/json", json.dumps({"error": f"{type(error).__name__}: {error}"}).encode()

    def _predict(self, request: ModelRequest, raw: bytes) -> bytes:
        try:
            body = json.loads(raw or b"null")
        except ValueError as error:  # UnicodeDecodeError and the int() digit limit too
            raise invalid_argument(f"JSON Parse error: {error}") from None
        except RecursionError:
            raise invalid_argument("JSON Parse error: nested too deep") from None
        if not isinstance(body, dict):
            raise invalid_argument("the request body must be a JSON object with 'instances' or 'inputs'")
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument("'signature_name' must be a string")
        request = ModelRequest(request.name, request.version, request.label, signature_name)
        with self.manager.acquire(request.name, request.version, request.label) as servable:
            signature = servable.signature_def(signature_name or DEFAULT_SIGNATURE)
            dtypes = {key: tf.as_dtype(info.dtype) for key, info in signature.inputs.items()}
        inputs, row_format = parse_predict_body(body, dtypes)
        prediction = self.service.predict(request, inputs, deadline=time.monotonic() + self.timeout_seconds,
                                          entrypoint="REST")
        return predict_answer(prediction.outputs, row_format, self.max_answer_bytes)

    def _metadata(self, request: ModelRequest) -> dict:
        version, signature_defs = self.service.metadata(request, entrypoint="REST")
        signature_map = get_model_metadata_pb2.SignatureDefMap(signature_def=signature_defs)
        return {
            "model_spec": {"name": request.name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": json_format.MessageToDict(signature_map, preserving_proto_field_name=True)},
        }


def make_server(api: RestApi, host: str, port: int, max_workers: int, **limits) -> HttpServer:
    """The REST API on (host, port), bound now; `limits` are HttpServer's (timeouts, connections, sizes).

    The answer cap is the API's, so that its own 400 comes first.
    """
    return HttpServer(api.handle, host, port, max_workers, max_answer_bytes=api.max_answer_bytes, **limits)
