"""Errors that carry a TF Serving status: a gRPC code and the message TF Serving gives."""

from __future__ import annotations

import grpc

# tensorflow_serving/model_servers/http_server.cc maps status codes to HTTP like this.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


MAX_MESSAGE_CHARS = 2000  # gRPC sends the message in a header; clients refuse headers over 8 KiB
MAX_ECHO_CHARS = 100  # of a name or key the client sent, repeated in a message


def shown(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` from a request, cut to `limit` characters for a message: a 100 kB model name is not sent back."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} characters)"


class ServingError(Exception):
    """A request that fails with `code` (a `grpc.StatusCode`) and a message for the caller.

    Messages longer than MAX_MESSAGE_CHARS are cut (`shown`), so an error always reaches
    the client as its code and text, never as a failure to receive an oversized status.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        message = shown(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)
