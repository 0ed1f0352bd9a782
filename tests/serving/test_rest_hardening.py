"""REST against hostile and careless clients (issue 12, item 3): malformed HTTP gets a JSON error,
and idle, slow or too many connections do not stop other requests.

The requests go over a loopback socket to `serving.http_server` in this process, serving the tiny
VAE, with deadlines shortened to fractions of a second.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest

from serving import rest_api
from serving.http_server import HttpServer
from serving.manager import ModelManager, single_model_config
from serving.service import Service

PREDICT = "/v1/models/vae:predict"
GOOD_ANSWER_S = 5.0  # a generous bound on a good request's answer while others misbehave


@pytest.fixture(scope="module")
def api(trained_base):
    manager = ModelManager([single_model_config("vae", str(trained_base))])
    yield rest_api.RestApi(Service(manager), manager, timeout_seconds=30)
    manager.stop()


@contextlib.contextmanager
def serving(server: HttpServer):
    """The server answering in a thread; its port. Shut down and closed at the end."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def rest_server(api, max_workers: int = 2, **limits) -> HttpServer:
    return rest_api.make_server(api, "127.0.0.1", 0, max_workers, **limits)


def echo(method: str, target: str, body: bytes) -> tuple[int, str, str]:
    return 200, "application/json", json.dumps({"method": method, "target": target, "body_bytes": len(body)})


def exchange(sock: socket.socket, data: bytes = b"",
             method: str = "GET") -> tuple[int, object, http.client.HTTPResponse]:
    """Sends `data` (raw HTTP) and reads one answer: (status, JSON body, response)."""
    sock.sendall(data)
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    text = response.read()
    return response.status, json.loads(text) if text else None, response


def raw_request(port: int, data: bytes) -> tuple[int, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        status, body, _ = exchange(sock, data)
        return status, body


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def get_status(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/vae", timeout=10) as response:
        return response.status


def good_predict(port: int, seeds=(1, 2)) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{PREDICT}",
                                     data=json.dumps({"instances": list(seeds)}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


# Malformed HTTP over a real socket: JSON errors, and the server stays up.

@pytest.mark.parametrize("data, status, phrase", [
    (b"POST /v1/models/vae:predict HTTP/1.1\r\nContent-Length: lots\r\n\r\n", 400, "Content-Length"),
    (b"POST /v1/models/vae:predict HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
    (b"POST /v1/models/vae:predict HTTP/1.1\r\nContent-Length: \xef\xbc\x91\r\n\r\n", 400, "Content-Length"),
    (b"POST /v1/models/vae:predict HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400, "Content-Length"),
    (b"POST /v1/models/vae:predict HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n1", 400,
     "Content-Length"),
    (b"POST /v1/models/vae:predict HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413, "limit"),
    (b"POST /v1/models/vae:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411,
     "Content-Length"),
    (b"GET /v1/models/vae/versions/\xb2 HTTP/1.1\r\n\r\n", 400, "ASCII"),
    (b"GET /v1/models/vae/versions/\xc2\xb2 HTTP/1.1\r\n\r\n", 400, "ASCII"),
    (b"GET /v1/models/vae/versions/%C2%B2 HTTP/1.1\r\n\r\n", 400, "Failed to convert version"),
    (b"PUT /v1/models/vae HTTP/1.1\r\n\r\n", 404, "Malformed request: PUT"),
    (b"DELETE /v1/models/vae HTTP/1.1\r\n\r\n", 404, "Malformed request: DELETE"),
    (b"G@T /v1/models/vae HTTP/1.1\r\n\r\n", 400, "request line"),
    (b"GET /v1/models/vae\r\n\r\n", 400, "request line"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "request line"),
    (b"GET /v1/models/vae HTTP/2.0\r\n\r\n", 505, "HTTP/2.0"),
    (b"GET /v1/models/vae HTTP/one\r\n\r\n", 400, "HTTP version"),
    (b"GET /v1/models/vae HTTP/1.1\r\nno colon\r\n\r\n", 400, "header"),
    (b"GET /v1/models/vae HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n", 400, "header"),
    (b"GET /v1/models/vae HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400, "header"),
    (b"GET /v1/models/vae HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", 431, "header fields"),
    (b"GET /v1/models/vae HTTP/1.1\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n", 431, "exceed"),
], ids=["cl_word", "cl_negative", "cl_fullwidth_digit", "cl_latin1_superscript", "cl_twice", "cl_huge",
        "chunked", "version_latin1", "version_utf8", "version_percent_encoded", "put", "delete",
        "garbage_method", "no_http_version", "tls_hello", "http2", "bad_version", "header_no_colon",
        "header_folded", "header_nul", "too_many_headers", "huge_header"])
def test_malformed_http_gets_a_json_error_and_the_server_stays_up(api, data, status, phrase):
    with serving(rest_server(api)) as port:
        got_status, body = raw_request(port, data)
        assert got_status == status, body
        assert phrase in body["error"]
        assert get_status(port) == 200


def test_a_request_without_host_header_is_served(api):
    with serving(rest_server(api)) as port:
        status, body = raw_request(port, b"GET /v1/models/vae HTTP/1.1\r\n\r\n")
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"


def test_keep_alive_head_and_expect_continue(api):
    with serving(rest_server(api)) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for seeds in ([1], [2, 3], [4]):
            connection.request("POST", PREDICT, body=json.dumps({"instances": seeds}))
            response = connection.getresponse()
            assert response.status == 200 and response.getheader("Connection") == "keep-alive"
            assert len(json.loads(response.read())["predictions"]) == len(seeds)
        connection.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            status, body, response = exchange(sock, b"HEAD /v1/models/nope HTTP/1.1\r\n\r\n", method="HEAD")
            assert status == 404 and body is None and int(response.getheader("Content-Length")) > 0
            payload = b'{"instances": [5]}'
            sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {len(payload)}\r\n"
                         f"Connection: close\r\n\r\n".encode())
            interim = b"HTTP/1.1 100 Continue\r\n\r\n"
            assert sock.recv(len(interim), socket.MSG_WAITALL) == interim
            status, body, _ = exchange(sock, payload)
            assert status == 200 and len(body["predictions"]) == 1


def test_a_large_answer_arrives_whole_before_the_server_closes(api):
    with serving(rest_server(api)) as port:
        predictions = np.array(good_predict(port, seeds=range(300))["predictions"])
        assert predictions.shape[0] == 300


# Idle, slow and too many connections.

def test_idle_and_slow_connections_do_not_hold_the_request_threads(api):
    """2 × max_workers idle sockets, half-sent requests and a slowloris: good requests still answer."""
    max_workers = 2
    with serving(rest_server(api, max_workers, request_timeout_s=30)) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2 * max_workers)]
        half_sent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2 * max_workers)]
        for sock in half_sent:
            sock.sendall(b"POST /v1/models/vae:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        stop = threading.Event()

        def slowloris():
            with socket.create_connection(("127.0.0.1", port)) as sock:
                for byte in b"GET /v1/models/vae HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                    if stop.wait(0.02):
                        return
                    sock.sendall(bytes([byte]))

        sender = threading.Thread(target=slowloris)
        sender.start()
        try:
            for _ in range(3):
                started = time.monotonic()
                assert get_status(port) == 200
                assert len(good_predict(port)["predictions"]) == 2
                assert time.monotonic() - started < GOOD_ANSWER_S
        finally:
            stop.set()
            sender.join(10)
            for sock in idle + half_sent:
                sock.close()


def test_an_idle_connection_is_closed_after_the_deadline(api):
    with serving(rest_server(api, request_timeout_s=0.5)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            assert sock.recv(100) == b""  # closed without an answer: there was no request
            assert 0.4 < time.monotonic() - started < GOOD_ANSWER_S
        assert get_status(port) == 200


def test_a_request_trickling_in_past_the_deadline_gets_408(api):
    with serving(rest_server(api, request_timeout_s=0.5)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /v1/models/vae HTTP/1.1\r\nX-Slow: ")
            while not select.select([sock], [], [], 0.05)[0]:  # one byte every 50 ms until the server answers
                assert time.monotonic() - started < GOOD_ANSWER_S
                sock.sendall(b"a")
            status, body, _ = exchange(sock)
            assert status == 408 and "did not arrive within 0.5 s" in body["error"]
        assert get_status(port) == 200


def test_beyond_the_connection_cap_new_connections_get_503_and_open_ones_are_served(api):
    with serving(rest_server(api, max_connections=4)) as port:
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        kept.request("GET", "/v1/models/vae")
        assert kept.getresponse().read() and kept.sock is not None
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.2)  # the server has taken them in
        status, body = raw_request(port, b"GET /v1/models/vae HTTP/1.1\r\n\r\n")
        assert status == 503 and "4 connections" in body["error"]
        kept.request("POST", PREDICT, body=json.dumps({"instances": [1]}))
        assert kept.getresponse().status == 200
        idle.pop().close()
        deadline = time.monotonic() + GOOD_ANSWER_S
        while raw_request(port, b"GET /v1/models/vae HTTP/1.1\r\nConnection: close\r\n\r\n")[0] != 200:
            assert time.monotonic() < deadline, "a freed connection slot was not reused"
            time.sleep(0.05)
        kept.close()
        for sock in idle:
            sock.close()


def test_bodies_beyond_the_buffer_budget_wait_then_get_503():
    release, entered = threading.Event(), threading.Event()

    def holding(method, target, body):
        if target == "/hold":
            entered.set()
            release.wait(10)
        return echo(method, target, body)

    with serving(HttpServer(holding, "127.0.0.1", 0, 2, request_timeout_s=0.5, max_body_bytes=1000,
                            max_buffered_body_bytes=1000)) as port:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as holder:
                holder.sendall(post("/hold", b"x" * 1000))  # its body is held until it is answered
                assert entered.wait(10)
                status, body = raw_request(port, post("/waits", b"y" * 10))
                assert status == 503 and "request bodies" in body["error"]
                release.set()
                assert exchange(holder)[0] == 200
            assert raw_request(port, post("/fits", b"z" * 10, "Connection: close")) == (
                200, {"method": "POST", "target": "/fits", "body_bytes": 10})
        finally:
            release.set()


# Shutdown.

def test_shutdown_finishes_in_flight_requests_and_closes_idle_connections():
    release, entered = threading.Event(), threading.Event()

    def slow(method, target, body):
        entered.set()
        release.wait(10)
        return echo(method, target, body)

    server = HttpServer(slow, "127.0.0.1", 0, 2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        in_flight = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        in_flight.request("GET", "/slow")
        assert entered.wait(10)
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        assert idle.recv(100) == b""  # closed at once
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10)
        assert stopper.is_alive()  # still waiting for the request in flight
        release.set()
        response = in_flight.getresponse()
        assert (response.status, response.getheader("Connection")) == (200, "close")
        assert json.loads(response.read())["target"] == "/slow"
        stopper.join(10)
        assert not stopper.is_alive()
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive()


def test_shutdown_before_serve_forever_returns_at_once():
    server = HttpServer(echo, "127.0.0.1", 0, 1)
    server.shutdown()
    server.serve_forever()  # returns: shutdown came first
    server.server_close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.server_address, timeout=10)
