"""TF Serving's gRPC API: `PredictionService` and `ModelService`, on the official stubs.

Every handler turns a `ServingError` into the RPC's status code and message;
anything unexpected becomes INTERNAL with its first line, and the server keeps
running.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving import tensors
from serving.manager import ModelManager
from serving.service import ModelRequest, Service, status_response
from serving.status import ServingError, invalid_argument

log = logging.getLogger("serving")

METADATA_FIELD = "signature_def"  # the one GetModelMetadata field TF Serving supports


def model_request(spec) -> ModelRequest:
    """ModelRequest of a `tensorflow.serving.ModelSpec` (version and label are a oneof)."""
    choice = spec.WhichOneof("version_choice")
    return ModelRequest(
        name=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
        signature_name=spec.signature_name,
    )


def declared_inputs(protos) -> dict[str, tensors.DeclaredTensor]:
    """The request's TensorProtos, not yet decoded: `Service.predict` checks their shapes first."""
    inputs = {}
    for key, proto in protos.items():
        try:
            inputs[key] = tensors.DeclaredTensor(proto)
        except ValueError as error:  # malformed TensorProto: a negative size, a dtype not served
            raise invalid_argument(f"input '{key}' is not a valid TensorProto: {error}") from None
    return inputs


def handles_errors(method: Callable) -> Callable:
    """Maps ServingError to its status; never lets an exception escape into gRPC's thread."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as error:
            context.abort(error.code, error.message)
        except Exception as error:
            log.exception("%s failed", method.__name__)
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            context.abort(grpc.StatusCode.INTERNAL, first_line)

    return wrapper


def _deadline(context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: Service):
        self.service = service

    @handles_errors
    def Predict(self, request, context):
        model = model_request(request.model_spec)
        prediction = self.service.predict(model, declared_inputs(request.inputs), list(request.output_filter),
                                          deadline=_deadline(context), entrypoint="GRPC")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = prediction.version
        response.model_spec.signature_name = prediction.signature_name
        for key, value in prediction.outputs.items():
            response.outputs[key].CopyFrom(tensors.to_proto(value))
        return response

    @handles_errors
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if not fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [field for field in fields if field != METADATA_FIELD]
        if unsupported:
            raise invalid_argument(f"Metadata field {unsupported[0]} is not supported")
        model = model_request(request.model_spec)
        version, signature_defs = self.service.metadata(model)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response.metadata[METADATA_FIELD].Pack(signature_map)
        return response

    def _unimplemented(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "this server serves Predict and GetModelMetadata only; the zoo's signatures are predict "
                      "signatures")

    Classify = Regress = MultiInference = _unimplemented


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager, validate_config: Callable):
        """`validate_config(ModelServerConfig)` raises ValueError with the problem for a bad config."""
        self.manager = manager
        self.validate_config = validate_config

    @handles_errors
    def GetModelStatus(self, request, context):
        model = model_request(request.model_spec)
        return status_response(self.manager.status(model.name, model.version, model.label))

    @handles_errors
    def HandleReloadConfigRequest(self, request, context):
        config: model_server_config_pb2.ModelServerConfig = request.config
        try:
            self.validate_config(config)
        except ValueError as error:
            raise invalid_argument(str(error)) from None
        self.manager.reload(list(config.model_config_list.config))
        return model_management_pb2.ReloadConfigResponse()  # status defaults to OK


def make_server(service: Service, manager: ModelManager, validate_config: Callable, address: str,
                max_workers: int, max_message_bytes: int) -> tuple[grpc.Server, int]:
    """A gRPC server bound to `address` (not yet started) and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes)],
        maximum_concurrent_rpcs=max_workers * 8,  # beyond this, RESOURCE_EXHAUSTED instead of an unbounded queue
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(service), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager, validate_config), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server, port
