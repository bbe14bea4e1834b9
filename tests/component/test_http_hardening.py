"""The proxy port refuses what nginx refuses, in order, within limits, and drains
on SIGTERM: raw sockets against a real sidecar in front of a recording model."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.component.conftest import Sidecar


class _Recorder(BaseHTTPRequestHandler):
    """A model that answers 200 "ok" to any method and records what reached it."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict[str, str]]]  # (method, target, headers), set per server

    def _any(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        if length:
            self.rfile.read(length)
        self.server.seen.append(  # type: ignore[attr-defined]
            (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        )
        if self.path.startswith("/sleep"):
            time.sleep(2.0)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._any
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def _connect(sidecar: Sidecar) -> socket.socket:
    host, port = sidecar.config["listen"].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=15)


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the sidecar sends until it closes the connection."""
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


def _statuses(received: bytes) -> list[int]:
    # Status lines: each body here is "ok" or JSON, so none looks like one.
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


def _exchange(sidecar: Sidecar, data: bytes) -> bytes:
    with _connect(sidecar) as sock:
        sock.sendall(data)
        return _until_closed(sock)


def test_http10_chunked_request_is_refused_and_what_follows_never_reaches_the_model(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream)
    received = _exchange(
        sidecar,
        b"POST /p HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive"
        b"\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smug/x HTTP/1.1\r\nHost: smuggled\r\n\r\n",
    )  # returns only once the sidecar closed the connection
    assert _statuses(received) == [400]
    assert b"connection: close" in received.lower()
    time.sleep(0.5)
    assert seen == []


REFUSED = {
    "duplicate Host": (b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "duplicate Host, HTTP/1.0": (b"GET /a HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    "no Host on HTTP/1.1": (b"GET /a HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    "Host: a b": (b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    "empty Host": (b"GET /a HTTP/1.1\r\nHost: \r\n\r\n", 400),
    "two Transfer-Encoding lines": (
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "Transfer-Encoding other than chunked": (
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "%00 in the path": (b"GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "%0d%0a in the path": (b"GET /a%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "a bad escape in the path": (b"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "a path above the root": (b"GET /a/../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "* for GET": (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "CONNECT": (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    "TRACE": (b"TRACE /a HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    "absolute-form with user info": (b"GET http://u:p@a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "HTTP/2.0 request line": (b"GET /a HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    "HTTP/0.9 with headers": (b"GET /a HTTP/0.9\r\nHost: a\r\n\r\n", 400),
    "a header line over 8 KiB": (
        b"GET /a HTTP/1.1\r\nHost: a\r\nX-Big: %b\r\n\r\n" % (b"b" * 8200),
        431,
    ),
    "a head over 32 KiB": (
        b"GET /a HTTP/1.1\r\nHost: a\r\n%b\r\n"
        % b"".join(b"X-B%d: %b\r\n" % (i, b"b" * 7000) for i in range(5)),
        431,
    ),
    "over 100 header lines": (
        b"GET /a HTTP/1.1\r\nHost: a\r\n%b\r\n" % b"".join(b"X-%d: 1\r\n" % i for i in range(101)),
        431,
    ),
    "a target over 8 KiB": (b"GET /%b HTTP/1.1\r\nHost: a\r\n\r\n" % (b"a" * 8200), 414),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_heads_nginx_refuses_are_refused_and_not_forwarded(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar], case: str
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream)
    request, status = REFUSED[case]
    received = _exchange(sidecar, request)
    assert _statuses(received) == [status], received[:300]
    assert b"connection: close" in received.lower()
    assert seen == []


def test_connection_host_does_not_strip_host(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream)
    received = _exchange(
        sidecar, b"GET /a HTTP/1.1\r\nHost: model.example\r\nConnection: close, host\r\n\r\n"
    )
    assert _statuses(received) == [200]
    [(_, _, headers)] = seen
    assert headers["host"] == "model.example"


def test_absolute_form_is_forwarded_as_a_path_with_its_host(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream)
    received = _exchange(
        sidecar,
        b"GET http://model.example/v1/x?y=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
    )
    assert _statuses(received) == [200]
    [(method, target, headers)] = seen
    assert (method, target, headers["host"]) == ("GET", "/v1/x?y=1", "model.example")


def test_a_valid_request_then_an_invalid_one_get_their_answers_in_order(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream)
    received = _exchange(
        sidecar,
        b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /second HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
        b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    assert _statuses(received) == [200, 400]  # then the close: /third is never read
    assert received.index(b"ok") < received.index(b"HTTP/1.1 400")
    assert [target for _, target, _ in seen] == ["/first"]


def test_a_request_pipelined_after_an_upgrade_is_answered(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream)
    received = _exchange(
        sidecar,
        b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    assert _statuses(received) == [200, 200]
    assert [target for _, target, _ in seen] == ["/first", "/second"]
    assert "upgrade" not in seen[0][2]  # hop-by-hop: proxied as a plain request


def test_an_upgrade_with_a_body_is_forwarded_with_it_and_what_follows_is_answered(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream)
    inside = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"  # body bytes, never a request
    received = _exchange(
        sidecar,
        b"POST /a HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: %d\r\n\r\n%b"
        % (len(inside), inside)
        + b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    assert _statuses(received) == [200, 200]
    assert [target for _, target, _ in seen] == ["/a", "/second"]
    assert seen[0][2]["content-length"] == str(len(inside))
    chunked = _exchange(
        sidecar,
        b"POST /a HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(inside), inside),
    )
    assert _statuses(chunked) == [400]
    assert len(seen) == 2


def test_bodies_over_the_limit_are_refused_413_before_they_reach_the_model(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream, proxy={"max_request_body_bytes": 1000})
    with _connect(sidecar) as sock:  # refused from its Content-Length, before any body byte
        sock.sendall(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")
        assert _statuses(_until_closed(sock)) == [413]
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    with _connect(sidecar) as sock:  # refused while it is de-chunked
        sock.sendall(b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
        assert _statuses(_until_closed(sock)) == [413]
    received = _exchange(  # at the limit: forwarded
        sidecar,
        b"POST /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n"
        + b"x" * 1000,
    )
    assert _statuses(received) == [200]
    assert [target for _, target, _ in seen] == ["/a"]


def test_a_head_or_body_that_does_not_come_is_answered_408(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(
        upstream, proxy={"header_timeout_seconds": 1.0, "body_timeout_seconds": 1.0}
    )
    with _connect(sidecar) as sock:  # half a head, then nothing
        sock.sendall(b"POST /a HTTP/1.1\r\nHost: a\r\n")
        assert _statuses(_until_closed(sock)) == [408]
    with _connect(sidecar) as sock:  # a whole head, then a trickle of its body
        sock.sendall(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        sock.settimeout(0.25)
        received = b""
        for _ in range(40):  # a byte each 0.25 s: 10 s at most, far past the limit
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            received += data
            if not data:
                break
        assert _statuses(received) == [408]
    assert seen == []


def test_sigterm_drains_keep_alive_connections_like_envoy(
    recorder: tuple[str, list[Any]], sidecar_factory: Callable[..., Sidecar]
) -> None:
    upstream, seen = recorder
    sidecar = sidecar_factory(upstream, proxy={"drain_grace_seconds": 3.0})
    idle = _connect(sidecar)
    busy = _connect(sidecar)
    try:
        idle.sendall(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")  # kept alive, then idle
        busy.sendall(b"GET /sleep HTTP/1.1\r\nHost: a\r\n\r\n")  # in flight for 2 s
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        sidecar.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # A request racing the shutdown on an idle connection is answered,
        # told to close, and the connection then closes.
        idle.sendall(b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
        late = _until_closed(idle)
        assert _statuses(late) == [200] and b"connection: close" in late.lower()
        # The request in flight finishes, with the same header.
        slow = _until_closed(busy)
        assert _statuses(slow) == [200] and b"connection: close" in slow.lower()
        # No new connections.
        with pytest.raises(OSError):
            _connect(sidecar).close()
    finally:
        idle.close()
        busy.close()
    assert sidecar.process.wait(timeout=30) == 0
    assert [target for _, target, _ in seen] == ["/warm", "/sleep", "/late"]
