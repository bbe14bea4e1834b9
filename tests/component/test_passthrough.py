"""The proxy forwards requests and responses exactly."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.component.conftest import Sidecar

HOP_BY_HOP = {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}


def seen_by_model(response: httpx.Response) -> dict:
    return json.loads(response.headers["x-echo-request"])


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_method_path_query_headers_and_body_reach_the_model(sidecar: Sidecar, method: str) -> None:
    body = b"" if method in ("GET", "OPTIONS") else bytes(range(256)) * 4  # binary, not JSON
    headers = {
        "x-custom": "a value, with comma",
        "authorization": "Bearer abc",
        "content-type": "application/x-whatever",
        "x-request-id": "req-123",
    }
    url = sidecar.proxy + "/echo/some%20path/x?b=2&a=1&a=%2F&empty="
    response = httpx.request(method, url, headers=headers, content=body, timeout=10)

    assert response.status_code == 200
    assert response.content == body
    seen = seen_by_model(response)
    assert seen["method"] == method
    assert seen["path"] == "/echo/some%20path/x"  # raw, not re-encoded
    assert seen["query"] == "b=2&a=1&a=%2F&empty="
    received = {name: value for name, value in seen["headers"]}
    for name, value in headers.items():
        assert received[name] == value
    # Nothing added that the client did not send, nothing hop-by-hop forwarded.
    assert not HOP_BY_HOP & received.keys()
    sent_names = {"host", "accept", "accept-encoding", "user-agent", *headers}
    if body:
        sent_names.add("content-length")
        assert received["content-length"] == str(len(body))
    assert set(received) == sent_names
    assert received["host"] == sidecar.config["listen"]


def test_head_passes_status_and_length(sidecar: Sidecar) -> None:
    response = httpx.head(sidecar.proxy + "/healthz", timeout=10)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "application/json"


def test_status_and_error_bodies_pass_through(sidecar: Sidecar) -> None:
    response = httpx.get(sidecar.proxy + "/predict", timeout=10)  # the model answers 405
    assert response.status_code == 405
    assert response.json() == {"error": "use POST"}
    response = httpx.post(sidecar.proxy + "/predict", content=b"{not json", timeout=10)
    assert response.status_code == 400


def test_large_body_both_ways(sidecar: Sidecar) -> None:
    body = os.urandom(5 * 1024 * 1024)
    response = httpx.post(sidecar.proxy + "/echo/big", content=body, timeout=30)
    assert response.status_code == 200
    assert len(response.content) == len(body)
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()


def test_chunked_response_streams_chunk_by_chunk(sidecar: Sidecar) -> None:
    url = sidecar.proxy + "/stream?chunks=6&size=3000&delay_ms=50"
    with httpx.stream("GET", url, timeout=10) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        parts = list(response.iter_raw())
    data = b"".join(parts)
    assert data == b"".join(bytes([i]) * 3000 for i in range(6))
    # Delivered as the model produced them (50 ms apart), not buffered into one.
    assert len(parts) >= 3


def test_keep_alive_connection_is_reused(sidecar: Sidecar) -> None:
    host, port = sidecar.config["listen"].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", "/echo/1", body=b"one")
        first = connection.getresponse()
        assert first.read() == b"one"
        socket_before = connection.sock
        assert socket_before is not None
        for i in range(5):
            connection.request("POST", f"/echo/{i}", body=str(i).encode())
            response = connection.getresponse()
            assert response.read() == str(i).encode()
            assert response.getheader("connection") != "close"
        assert connection.sock is socket_before  # http.client reconnects only if closed
    finally:
        connection.close()


def test_request_id_is_honoured_or_generated(sidecar: Sidecar) -> None:
    given = httpx.post(
        sidecar.proxy + "/echo/id", content=b"x", headers={"x-request-id": "abc-1"}, timeout=10
    )
    assert given.headers["x-request-id"] == "abc-1"
    assert dict(seen_by_model(given)["headers"])["x-request-id"] == "abc-1"

    made = httpx.post(sidecar.proxy + "/echo/id", content=b"x", timeout=10)
    generated = made.headers["x-request-id"]
    assert len(generated) == 32
    assert dict(seen_by_model(made)["headers"])["x-request-id"] == generated
    assert made.headers.get_list("x-request-id") == [generated]
