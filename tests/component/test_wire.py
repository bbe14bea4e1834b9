"""HTTP/1.1 details of the proxy port, over raw sockets where a client library
would hide them: pipelining, Expect: 100-continue, HEAD, bodiless statuses,
chunked request bodies, and a client that leaves mid-response."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.component.conftest import wait_until

if TYPE_CHECKING:
    from tests.component.conftest import ModelServer, Sidecar


class _Handler(BaseHTTPRequestHandler):
    """A second, different real server: bodiless statuses and HEAD with a length."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/status/"):
            self.send_response(int(self.path.rsplit("/", 1)[1]))
            self.send_header("etag", '"v1"')
            self.end_headers()
            return
        body = b"x" * 1000
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def plain_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _connect(sidecar: Sidecar) -> socket.socket:
    host, port = sidecar.config["listen"].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, dict[str, str], bytes]]:
    """Read ``count`` Content-Length-framed responses: (status line, headers, body)."""
    buffer = b""
    responses = []
    while len(responses) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            status, *lines = buffer[:head_end].split(b"\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.decode().split(":", 1) for line in lines)
            }
            end = head_end + 4 + int(headers.get("content-length", "0"))
            if len(buffer) >= end:
                responses.append((status, headers, buffer[head_end + 4 : end]))
                buffer = buffer[end:]
                continue
        data = sock.recv(65536)
        assert data, f"connection closed after {len(responses)} responses"
        buffer += data
    return responses


def test_pipelined_requests_are_answered_in_order(sidecar: Sidecar) -> None:
    requests = b"".join(
        b"POST /echo/%d HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (i, len(body), body)
        for i, body in enumerate([b"first", b"", b"third" * 1000])
    )
    with _connect(sidecar) as sock:
        sock.sendall(requests)  # all three before reading any answer
        answers = _read_responses(sock, 3)
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 3
    assert [a[2] for a in answers] == [b"first", b"", b"third" * 1000]
    paths = [json.loads(a[1]["x-echo-request"])["path"] for a in answers]
    assert paths == ["/echo/0", "/echo/1", "/echo/2"]


def test_expect_100_continue_is_answered_before_the_body(sidecar: Sidecar) -> None:
    with _connect(sidecar) as sock:
        sock.sendall(
            b"PUT /echo/e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n"
        )
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        [(status, headers, body)] = _read_responses(sock, 1)
    assert status == b"HTTP/1.1 200 OK" and body == b"hello"
    seen = dict(json.loads(headers["x-echo-request"])["headers"])
    assert seen["content-length"] == "5"
    assert "expect" not in seen  # answered by the sidecar, which had the whole body


def test_chunked_request_body_reaches_the_model_whole(sidecar: Sidecar) -> None:
    parts = [b"a" * 10, b"b" * 70000, b"c"]
    host, port = sidecar.config["listen"].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", "/echo/chunked", body=iter(parts), encode_chunked=True)
        response = connection.getresponse()
        assert response.read() == b"".join(parts)
        seen = dict(json.loads(response.getheader("x-echo-request"))["headers"])
    finally:
        connection.close()
    assert seen["content-length"] == str(sum(map(len, parts)))
    assert "transfer-encoding" not in seen


def test_http10_client_gets_an_unchunked_stream_ended_by_the_close(sidecar: Sidecar) -> None:
    with _connect(sidecar) as sock:
        sock.sendall(b"GET /stream?chunks=3&size=1000&delay_ms=10 HTTP/1.0\r\n\r\n")
        received = b""
        while data := sock.recv(65536):
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"".join(bytes([i]) * 1000 for i in range(3))


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_statuses_and_head_keep_the_connection_usable(
    plain_server: str, sidecar_factory: Callable[..., Sidecar], code: int
) -> None:
    sidecar = sidecar_factory(plain_server)
    host, port = sidecar.config["listen"].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", f"/status/{code}")
        response = connection.getresponse()
        assert (response.status, response.read()) == (code, b"")
        assert response.getheader("etag") == '"v1"'
        assert response.getheader("transfer-encoding") is None

        connection.request("HEAD", "/big")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("content-length") == "1000"
        assert response.read() == b""

        connection.request("GET", "/big")  # the same client and model connections
        response = connection.getresponse()
        assert response.read() == b"x" * 1000
    finally:
        connection.close()


def test_client_leaving_mid_response_frees_the_request(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url)
    with _connect(sidecar) as sock:
        sock.sendall(b"GET /stream?chunks=40&size=65536&delay_ms=50 HTTP/1.1\r\nhost: x\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK")
    # The socket is closed: the sidecar stops relaying, drops that model
    # connection, and goes on serving.
    wait_until(lambda: _in_flight(sidecar.metrics()) == 0.0, timeout=30, what="in flight 0")
    response = httpx.post(sidecar.proxy + "/echo/after", content=b"still here", timeout=10)
    assert response.content == b"still here"


def _in_flight(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("driftline_requests_in_flight{"):
            return float(line.rsplit(" ", 1)[1])
    return -1.0
