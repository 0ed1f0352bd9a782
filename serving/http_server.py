"""An asyncio HTTP/1.1 front end that hands only whole requests to a bounded pool of threads.

The REST API's transport (serving/rest_api.py routes the requests). http.server gave
each connection a thread for as long as it stayed open, so a few idle or slow
sockets held every REST thread. Here one event loop reads requests, and only
complete ones reach the `max_workers` threads that run the handler. Limits, each
a constructor parameter defaulting to the constant named:

* DEFAULT_REQUEST_TIMEOUT_S (10 s): the whole request (request line, headers and
  body) must arrive within this time of the server starting to wait for it. A
  partly sent request then gets 408; a connection that sent nothing (idle
  keep-alive) is closed. Writing a response to a client that does not read it
  is cut off after the same time.
* DEFAULT_MAX_CONNECTIONS (1024) open at once; a connection beyond them gets 503
  and is closed. The server raises its soft open-file limit (`ulimit -n`) towards
  the hard one to fit them and FILE_DESCRIPTOR_HEADROOM (256) more, and logs a
  warning when that does not fit.
* DEFAULT_MAX_HEADER_BYTES (64 KiB) for the request line and headers together,
  and DEFAULT_MAX_HEADERS (100) header lines: 431 beyond.
* DEFAULT_MAX_BODY_BYTES (64 MiB) for a body, which needs a Content-Length
  (411 for chunked uploads): 413 beyond.
* DEFAULT_MAX_ANSWER_BYTES (64 MiB) for one answer's body: the handler should
  refuse beyond it (serving/rest_api.py does, with 400); an answer that still
  comes back larger is replaced by a 400 naming the limit.
* DEFAULT_MAX_BUFFERED_BYTES (256 MiB) for request bodies and answers held at
  once: a body counts as its bytes arrive (a client that declares a large
  Content-Length and sends nothing holds nothing) until the handler returns, an
  answer from then until it is written. A body whose arrived bytes do not fit
  waits within its request's deadline, then gets 503; an answer that does not
  fit waits DEFAULT_REQUEST_TIMEOUT_S, then is replaced by a 503.
* DEFAULT_SHUTDOWN_GRACE_S (30 s): `shutdown()` stops accepting, closes idle
  connections and waits this long for in-flight requests to be answered.

Malformed HTTP gets 400, an HTTP version other than 1.0 and 1.1 gets 505. These
answers are JSON `{"error": "..."}`, and the connection is closed after them.
HTTP/1.1 connections are kept alive unless the client sends `Connection: close`;
HTTP/1.0 ones only when it sends `Connection: keep-alive`.

The interface is socketserver's, as serving/server.py drives it: the socket is bound
on construction, `serve_forever()` runs in a thread until `shutdown()`, then
`server_close()`; `server_address` is the bound (host, port).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import http
import json
import logging
import re
import resource
import socket
import threading
from collections.abc import Callable
from concurrent import futures

log = logging.getLogger("serving")

DEFAULT_REQUEST_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_HEADER_BYTES = 64 << 10
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_MAX_ANSWER_BYTES = 64 << 20
DEFAULT_MAX_BUFFERED_BYTES = 256 << 20
DEFAULT_SHUTDOWN_GRACE_S = 30.0
FILE_DESCRIPTOR_HEADROOM = 256  # open files besides the REST connections: gRPC's, model files, logs
CHUNK_BYTES = 64 << 10  # bodies are read, and answers written, this much at a time
CLOSING_LINGER_S = 1.0  # waiting for a client to close after an answer when refusing or stopping

JSON = "application/json"
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(r"[\x21-\x7e]+")
HTTP_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")
FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")

# (method, request target, body) -> (status, content type, answer body); runs on the pool.
Handler = Callable[[str, str, bytes], tuple[int, str, bytes]]


class HttpError(Exception):
    """A request the front end answers itself with `status`; the connection closes after it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclasses.dataclass
class Request:
    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, str]  # lower-case names; repeated fields joined by ", " (RFC 9110 §5.3)
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        return "close" not in tokens if self.version >= (1, 1) else "keep-alive" in tokens


def json_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def response_head(status: int, content_type: str, length: int, keep_alive: bool) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return (f"HTTP/1.1 {status} {reason}\r\nServer: genzoo-serving\r\nDate: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode("latin-1")


def error_response(status: int, message: str) -> bytes:
    """A whole answer (closing the connection) for an error the front end answers itself."""
    payload = json_error(message)
    return response_head(status, JSON, len(payload), keep_alive=False) + payload


def raise_open_file_limit(needed: int) -> int:
    """Raises the soft RLIMIT_NOFILE towards `needed` (at most the hard limit); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError) as error:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, error)
    return soft


def parse_head(lines: list[bytes], max_headers: int) -> Request:
    """The request line and header lines (line ends included) as a Request without body; HttpError if malformed."""
    request_line = lines[0].decode("latin-1").rstrip("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not TARGET.fullmatch(parts[1]):
        raise HttpError(400, f"malformed request line {request_line!r:.100}; expected METHOD /path HTTP/1.1 "
                             f"with an ASCII, percent-encoded path")
    method, target, version_text = parts
    version = HTTP_VERSION.fullmatch(version_text)
    if version is None:
        raise HttpError(400, f"malformed HTTP version {version_text!r:.40}")
    if version[1] != "1":
        raise HttpError(505, f"{version_text} is not supported; use HTTP/1.1 or HTTP/1.0")
    if len(lines) - 1 > max_headers:
        raise HttpError(431, f"more than {max_headers} header fields")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.decode("latin-1").rstrip("\r\n")
        name, colon, value = line.partition(":")
        if not colon or not TOKEN.fullmatch(name) or not FIELD_VALUE.fullmatch(value):
            raise HttpError(400, f"malformed header field {line!r:.100}")
        value = value.strip(" \t")
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Request(method, target, (int(version[1]), int(version[2])), headers)


def content_length(request: Request, max_body_bytes: int) -> int:
    if "transfer-encoding" in request.headers:
        raise HttpError(411, "chunked request bodies are not read; send the body with a Content-Length")
    text = request.headers.get("content-length", "0")
    if not re.fullmatch(r"[0-9]+", text, re.ASCII):
        raise HttpError(400, f"Content-Length {text!r:.40} is not a byte count")
    if len(text) > 20 or int(text) > max_body_bytes:
        raise HttpError(413, f"request body of {text:.40} bytes exceeds the {max_body_bytes}-byte limit")
    return int(text)


class _Budget:
    """Bytes of bodies and answers held at once; `acquire` waits until `size` more fit. Used on the event loop only."""

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self._freed = asyncio.Event()

    async def acquire(self, size: int) -> None:
        while self.used + size > self.capacity:
            self._freed.clear()
            await self._freed.wait()
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size
        self._freed.set()


@dataclasses.dataclass
class _Connection:
    transport: asyncio.Transport
    received: bool = False  # bytes of the next request have arrived
    busy: bool = False  # a whole request is being answered


class HttpServer:
    """Serves `handler` on (host, port); see the module docstring for the limits."""

    def __init__(self, handler: Handler, host: str, port: int, max_workers: int, *,
                 request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, max_headers: int = DEFAULT_MAX_HEADERS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
                 max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
                 shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S):
        if max_buffered_bytes < max(max_body_bytes, max_answer_bytes):
            raise ValueError("max_buffered_bytes must hold at least one body of max_body_bytes "
                             "and one answer of max_answer_bytes")
        self.handler = handler
        self.request_timeout_s, self.max_connections = request_timeout_s, max_connections
        self.max_header_bytes, self.max_headers = max_header_bytes, max_headers
        self.max_body_bytes, self.max_answer_bytes = max_body_bytes, max_answer_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.shutdown_grace_s = shutdown_grace_s
        needed_files = max_connections + FILE_DESCRIPTOR_HEADROOM
        open_files = raise_open_file_limit(needed_files)
        if open_files < needed_files:
            log.warning("the open-file limit (ulimit -n) is %d, below the %d REST connections allowed plus %d for the "
                        "rest of the server; raise the hard limit or lower the connection limit", open_files,
                        max_connections, FILE_DESCRIPTOR_HEADROOM)
        self.socket = socket.create_server((host, port), backlog=min(max_connections, socket.SOMAXCONN))
        self.server_address = self.socket.getsockname()[:2]
        self.pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rest")
        self._lock = threading.Lock()
        self._shutdown_requested, self._loop, self._stop = False, None, None
        self._stopped = threading.Event()
        self._stopping = False
        self._connections: dict[asyncio.Task, _Connection] = {}

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stops accepting, lets in-flight requests finish; returns once serve_forever has."""
        with self._lock:
            self._shutdown_requested = True
            loop, stop = self._loop, self._stop
        if loop is None:
            return  # serve_forever has not started; it will return at once
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:
            pass  # the loop has already closed
        self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def _serve(self) -> None:
        with self._lock:
            if self._shutdown_requested:
                return
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._budget = _Budget(self.max_buffered_bytes)
        server = await asyncio.start_server(self._serve_connection, sock=self.socket, limit=self.max_header_bytes,
                                            backlog=min(self.max_connections, socket.SOMAXCONN))
        await self._stop.wait()
        server.close()
        self._stopping = True
        for connection in self._connections.values():
            if not connection.busy:
                connection.transport.abort()  # its reader sees the end of the stream
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=self.shutdown_grace_s)
        remaining = list(self._connections)
        for task in remaining:
            task.cancel()
        await asyncio.gather(*remaining, return_exceptions=True)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._stopping or len(self._connections) >= self.max_connections:
                writer.write(error_response(503, "the server is stopping; retry later or against another server"
                                            if self._stopping else
                                            f"the server has {self.max_connections} connections open; retry later"))
                await self._flush(writer)
                await self._linger(reader, writer, CLOSING_LINGER_S)
                return
            task = asyncio.current_task()
            self._connections[task] = connection = _Connection(writer.transport)
            try:
                server_closes = await self._converse(reader, writer, connection)
                await self._flush(writer)
                connection.busy = False  # the answer is out: shutdown may close the connection now
                if server_closes:
                    await self._linger(reader, writer, CLOSING_LINGER_S if self._stopping else self.request_timeout_s)
            finally:
                del self._connections[task]
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client left, or does not read its answer
        except asyncio.CancelledError:
            pass  # shutdown's grace period ended; Python 3.11's streams would log a cancelled connection task
        finally:
            writer.transport.abort()

    async def _converse(self, reader, writer, connection: _Connection) -> bool:
        """Answers requests until the client leaves (False) or the server closes after an answer (True)."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            connection.received = connection.busy = False
            try:
                request = await self._read_request(reader, writer, connection)
            except HttpError as error:
                writer.write(error_response(error.status, error.message))
                return True
            if request is None:
                return False
            connection.busy = True
            status, content_type, payload, held = await loop.run_in_executor(self.pool, self._answer, request, loop)
            try:
                keep_alive = request.keep_alive and not self._stopping
                head = response_head(status, content_type, len(payload), keep_alive)
                await self._write(writer, head, b"" if request.method == "HEAD" else payload)
            finally:
                self._budget.release(held)
            log.debug("REST %s - %s %s %d", writer.get_extra_info("peername"), request.method, request.target, status)
            if not keep_alive:
                return True
        return False

    async def _read_request(self, reader, writer, connection: _Connection) -> Request | None:
        """The next whole request; None when the client closes or idles past the deadline without sending one.

        The body's bytes count against the budget as they arrive; the handler's thread releases them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                lines = await self._read_head(reader, connection)
        except TimeoutError:
            if connection.received:
                raise HttpError(408, f"the request did not arrive within {self.request_timeout_s:g} s") from None
            return None
        if lines is None:
            return None
        request = parse_head(lines, self.max_headers)
        length = content_length(request, self.max_body_bytes)
        if length and request.version >= (1, 1) and request.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body, waiting_for_budget = bytearray(), False
        try:
            async with asyncio.timeout_at(deadline):
                while len(body) < length:
                    chunk = await reader.read(min(CHUNK_BYTES, length - len(body)))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", length)
                    waiting_for_budget = True
                    await self._budget.acquire(len(chunk))
                    waiting_for_budget = False
                    body += chunk
        except BaseException as error:
            self._budget.release(len(body))
            if isinstance(error, TimeoutError) and waiting_for_budget:
                raise HttpError(503, "too many request bodies and answers are held; retry later") from None
            if isinstance(error, TimeoutError):
                raise HttpError(408, f"the request body did not arrive within {self.request_timeout_s:g} s") from None
            raise
        request.body = body
        return request

    async def _read_head(self, reader: asyncio.StreamReader, connection: _Connection) -> list[bytes] | None:
        """The request line and header lines; None if the connection ends before a whole head."""
        lines, size = [], 0
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than the stream's limit
                raise HttpError(431, f"request line and headers exceed {self.max_header_bytes} bytes") from None
            connection.received = connection.received or bool(line)
            size += len(line)
            if size > self.max_header_bytes:
                raise HttpError(431, f"request line and headers exceed {self.max_header_bytes} bytes")
            if not line.endswith(b"\n"):
                return None  # the client closed
            if line in (b"\r\n", b"\n"):
                if lines:
                    return lines
                continue  # RFC 9112 §2.2: ignore empty lines before the request line
            lines.append(line)

    def _answer(self, request: Request, loop: asyncio.AbstractEventLoop) -> tuple[int, str, bytes, int]:
        """Runs on the pool: (status, content type, answer body, bytes of budget it holds until written).

        The body's budget is released once the handler returns, before the answer's is acquired, so that
        no request holds budget while it waits for more.
        """
        status, content_type, payload = self._call(request)
        body_bytes, request.body = len(request.body), b""
        if len(payload) > self.max_answer_bytes:
            status, content_type, payload = 400, JSON, json_error(
                f"the answer of {len(payload)} bytes exceeds the {self.max_answer_bytes}-byte limit on one answer; "
                f"ask for less in each request")
        try:
            loop.call_soon_threadsafe(self._budget.release, body_bytes)
            asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(self._budget.acquire(len(payload)), self.request_timeout_s), loop).result()
        except TimeoutError:
            return 503, JSON, json_error("too many request bodies and answers are held; retry later"), 0
        except (RuntimeError, futures.CancelledError):
            return status, content_type, payload, 0  # shutdown's grace period ended: the loop is closing
        return status, content_type, payload, len(payload)

    def _call(self, request: Request) -> tuple[int, str, bytes]:
        try:
            return self.handler(request.method, request.target, request.body)
        except Exception:  # the handler's own bug; the server outlives it
            log.exception("REST %s %s failed", request.method, request.target)
            return 500, JSON, json_error("internal error; see the server's log")

    async def _write(self, writer: asyncio.StreamWriter, head: bytes, payload: bytes) -> None:
        """Writes an answer a chunk at a time, so that the transport never copies it whole; the same deadline
        as a request (TimeoutError for a client that reads too slowly)."""
        async with asyncio.timeout(self.request_timeout_s):
            writer.write(head)
            view = memoryview(payload)
            for start in range(0, len(view), CHUNK_BYTES):
                writer.write(view[start:start + CHUNK_BYTES])
                await writer.drain()
            await writer.drain()

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        """Waits until the answer has gone to the kernel (TimeoutError for a client that reads nothing)."""
        writer.transport.set_write_buffer_limits(high=0)
        await asyncio.wait_for(writer.drain(), self.request_timeout_s)  # high-water mark 0: until nothing is left

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, linger_s: float) -> None:
        """Ends the stream, then reads what the client still sends until it closes, `linger_s` at most.

        Closing with request bytes unread would reset the connection, which can destroy the answer.
        """
        try:
            async with asyncio.timeout(linger_s):
                writer.write_eof()
                while await reader.read(1 << 16):
                    pass
        except (TimeoutError, OSError):
            pass
