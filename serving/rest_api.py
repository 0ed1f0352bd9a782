"""TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest) over serving/http_server.py.

    GET  /v1/models/NAME[/versions/N | /labels/L]             model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata    signature defs
    POST /v1/models/NAME[/versions/N | /labels/L]:predict     {"instances": [...]} or {"inputs": ...}

JSON values become arrays of the dtype the signature declares. String tensors
are sent as {"b64": "..."} (or plain text); string outputs whose name ends in
`_bytes` come back as {"b64": "..."}, as TF Serving does. Errors are
`{"error": "..."}` with TF Serving's HTTP status for the code. The HTTP limits
(deadlines, connections, sizes) are http_server's; complete requests run on its
bounded pool of threads.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.http_server import HttpServer
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


def _json_value_to_array(value, dtype: tf.DType, key: str) -> np.ndarray:
    """A JSON value (nested lists) as an array of the signature's dtype, or INVALID_ARGUMENT."""
    if dtype == tf.string:
        def to_bytes(item):
            if isinstance(item, list):
                return [to_bytes(element) for element in item]
            if isinstance(item, dict) and set(item) == {"b64"}:
                try:
                    return base64.b64decode(item["b64"], validate=True)
                except (ValueError, TypeError):
                    raise invalid_argument(f"input '{key}': invalid base64 in {{\"b64\": ...}}") from None
            if isinstance(item, str):
                return item.encode()
            raise invalid_argument(f"input '{key}' expects strings or {{\"b64\": ...}} objects, got {item!r:.60}")
        try:
            return np.array(to_bytes(value), dtype=object)
        except ValueError:
            raise invalid_argument(f"input '{key}' is ragged; every row needs the same shape") from None
    try:
        array = np.asarray(value)
    except ValueError:
        raise invalid_argument(f"input '{key}' is ragged; every row needs the same shape") from None
    accepted = {"b": "b", "i": "biu", "u": "biu", "f": "biuf", "c": "biufc"}[np.dtype(dtype.as_numpy_dtype).kind]
    if array.size and array.dtype.kind not in accepted:
        raise invalid_argument(
            f"input '{key}' expects {dtype.name} values; got {array.dtype.kind!r}-kind JSON values "
            f"like {array.reshape(-1)[0].tolist()!r:.40}"
        )
    return array.astype(dtype.as_numpy_dtype)


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
            columns = {key: [row.get(key) for row in instances] for key in set().union(*instances)}
            missing = [key for key, values in columns.items() if any(value is None for value in values)]
            if missing:
                raise invalid_argument(f"every instance needs the same keys; some lack {', '.join(sorted(missing))}")
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


def predict_body(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict:
    values = {key: _array_to_json(key, array) for key, array in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{key: value[row] for key, value in values.items()} for row in range(rows)]}


class RestApi:
    """Routes a request (method, path, body) to the service; returns (HTTP status, JSON or text)."""

    def __init__(self, service: Service, manager: ModelManager, timeout_seconds: float,
                 metrics_path: str | None = None):
        self.service, self.manager = service, manager
        self.timeout_seconds = timeout_seconds
        self.metrics_path = metrics_path

    def handle(self, method: str, path: str, body: bytes = b"") -> tuple[int, str, str]:
        """(status, content type, body text) of a request; never raises."""
        try:
            path = urllib.parse.urlsplit(path).path
            if self.metrics_path and method == "GET" and path == self.metrics_path:
                return 200, "text/plain; version=0.0.4", self.service.metrics.render()
            match = MODEL_URL.match(path)
            if match is None or (method, match["verb"], match["metadata"]) not in {
                ("GET", None, None), ("GET", None, "/metadata"), ("POST", "predict", None),
                ("POST", "classify", None), ("POST", "regress", None),
            }:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}")
            version = match["version"]
            if version is not None and not version.isdigit():
                raise invalid_argument(f"Failed to convert version: {version} to numeric.")
            request = ModelRequest(
                name=urllib.parse.unquote(match["name"]),
                version=int(version) if version is not None else None,
                label=urllib.parse.unquote(match["label"]) if match["label"] else None,
            )
            if match["verb"] in ("classify", "regress"):
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"{match['verb']} is not served here; use :predict")
            if match["verb"] == "predict":
                answer = self._predict(request, body)
            elif match["metadata"]:
                answer = self._metadata(request)
            else:
                answer = json_format.MessageToDict(
                    status_response(self.manager.status(request.name, request.version, request.label)),
                    preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            return 200, "application/json", json.dumps(answer)
        except ServingError as error:
            return error.http_status, "application/json", json.dumps({"error": error.message})
        except Exception as error:  # the server outlives any request
            log.exception("REST %s %s failed", method, path)
            return 500, "application/json", json.dumps({"error": f"{type(error).__name__}: {error}"})

    def _predict(self, request: ModelRequest, raw: bytes) -> dict:
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as error:
            raise invalid_argument(f"JSON Parse error: {error}") from None
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
        return predict_body(prediction.outputs, row_format)

    def _metadata(self, request: ModelRequest) -> dict:
        version, signature_defs = self.service.metadata(request, entrypoint="REST")
        signature_map = get_model_metadata_pb2.SignatureDefMap(signature_def=signature_defs)
        return {
            "model_spec": {"name": request.name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": json_format.MessageToDict(signature_map, preserving_proto_field_name=True)},
        }


def make_server(api: RestApi, host: str, port: int, max_workers: int, **limits) -> HttpServer:
    """The REST API on (host, port), bound now; `limits` are HttpServer's (timeouts, connections, sizes)."""
    return HttpServer(api.handle, host, port, max_workers, **limits)
