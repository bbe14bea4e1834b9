"""The proxy port: HTTP/1.1 parsed with httptools on uvloop, relayed to the model.

Why not uvicorn + an ASGI app + aiohttp, as before: on the bench (1 KB JSON,
300 req/s, 2 shared cores) that stack cost ~800 µs of CPU per request,
nearly all of it Python in uvicorn's ASGI cycle and aiohttp's client request
machinery, against a target of 300 µs. Here a request is a few httptools
callbacks, one write to the model (head and body together), and one write
back to the client for a small response.

Pass-through is exact: method, raw target (path and query as sent), headers
minus hop-by-hop ones (and those ``Connection`` names), status and reason,
body bytes. Request bodies are read whole (chunked ones de-chunked) and sent
with a ``Content-Length``; responses stream back as they arrive, re-chunked
when the model sent no length. ``Expect: 100-continue`` is answered here.
Pipelined requests are answered in order. One task per client connection.

What is not forwarded (``driftline_sidecar.framing`` has nginx's rules) is
answered here in its turn: the answers to the valid requests before it go
first, then the error (400, 405, 408, 413, 414, 431, 501, 505) with
``Connection: close``, and nothing after it on that connection is read. The
body has a size limit, checked against Content-Length before it is read and
while it is de-chunked; the head and the body each have a time limit.
``Upgrade`` is hop-by-hop: such a request is proxied as a plain one (with its
body, when it has a Content-Length; a chunked one is refused), and the
requests after it on the connection are served too.

On shutdown (``ProxyServer.shutdown``) it drains as Envoy does: no new
connections, ``Connection: close`` on every response that starts from then on,
idle keep-alive connections kept for a short grace (a request already on its
way is answered, with that header) and then closed, requests in flight
finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from time import monotonic

import httptools

from driftline_sidecar.framing import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    Rejection,
    origin_form,
    valid_host,
)
from driftline_sidecar.proxy import Exchange, Proxy
from driftline_sidecar.upstream import ResponseHead, UpstreamError, UpstreamGone, UpstreamTimeout

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 5.0  # an idle client connection is closed after this (uvicorn's default)
MAX_QUEUED = 16  # pipelined requests parsed ahead; reading pauses beyond this
LINGER_SECONDS = 2.0  # after an error answer, unread bytes are drained this long before closing
NO_BODY_STATUS = frozenset({204, 304})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Headers looked at before forwarding; the rest pass without a second look.
_CHECKED = frozenset({b"host", b"transfer-encoding", b"content-length", b"expect"})
_NOT_ALLOWED = frozenset({b"CONNECT", b"TRACE"})  # a proxy to one model tunnels and echoes nothing
REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client request may take (``ProxyConfig`` in the sidecar config)."""

    max_body_bytes: int = 32 << 20
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 60.0


@dataclass(slots=True)
class _Request:
    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    since: float  # when its head began, then when its body was asked for
    keep_alive: bool = True
    expect_continue: bool = False
    body: list[bytes] = field(default_factory=list)
    complete: asyncio.Future[None] | None = None  # set once its head is parsed
    host: bytes | None = None
    chunked: bool = False
    read_end: int = 0  # bytes received by the end of the read its head began in
    head_bytes: int = 0  # its header lines
    length: int = 0  # its Content-Length
    raw_left: int = 0  # of an Upgrade request's body, which httptools does not read
    body_bytes: int = 0
    rejection: Rejection | None = None  # answered by the sidecar instead


class _Relay:
    """Writes one upstream response to the client as it is parsed."""

    __slots__ = ("_chunked", "_client", "_exchange", "_no_body", "_out")

    def __init__(self, client: _ClientConnection, exchange: Exchange) -> None:
        self._client, self._exchange = client, exchange
        self._out: list[bytes] = []
        self._chunked = self._no_body = False

    def head(self, head: ResponseHead) -> None:
        exchange = self._exchange
        exchange.status = head.status
        self._no_body = exchange.method == b"HEAD" or head.status in NO_BODY_STATUS
        unframed = not self._no_body and head.content_length is None
        if unframed and self._client.http10:
            exchange.keep_alive = False  # HTTP/1.0 knows no chunks: the end is the close
        if self._client.draining:
            exchange.keep_alive = False  # shutting down: this answer is the connection's last
        self._chunked = unframed and not self._client.http10
        extra = [b"transfer-encoding: chunked"] if self._chunked else []
        self._out.append(self._client.proxy.response_head(head, exchange, extra))

    def body(self, data: bytes) -> None:
        if self._no_body:
            return
        self._exchange.keep(data)
        self._out.append(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)

    def end(self) -> None:
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self.flush()

    def flush(self) -> None:
        if self._out:
            self._client.write(b"".join(self._out))
            self._out.clear()


class _ClientConnection(asyncio.Protocol):
    def __init__(self, server: ProxyServer) -> None:
        self.proxy = server.proxy
        self._server = server
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[_Request] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._request: _Request | None = None  # being parsed
        self._exchange: Exchange | None = None  # being answered
        self.http10 = False  # the request being answered is HTTP/1.0
        self._client: tuple[str, int] | None = None
        self.busy = False
        self.idle_since = monotonic()
        self.closing = False
        self._task: asyncio.Task[None] | None = None
        self._received = 0  # bytes read from the client, in all
        self._stopped_reading = False  # a request was refused: the rest is not parsed
        self._paused = False
        self._linger = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typeshed types it BaseTransport; a stream Protocol is always given a Transport.
        self._transport = transport  # type: ignore[assignment]
        self._client = transport.get_extra_info("peername")
        self._server.connections.add(self)
        self._task = self._loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._stopped_reading:
            return  # after a refusal: drained, never parsed
        self._received += len(data)
        while data:
            request = self._request
            if request is not None and request.raw_left:
                data = self._read_raw_body(request, data)
                continue
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                # The request was queued as a plain one: its body (if any)
                # follows raw, then the next request, for a parser anew.
                self._parser = httptools.HttpRequestParser(self)
                data = data[upgrade.args[0] :]
                continue
            except httptools.HttpParserError as error:
                cause = error.__context__
                if not isinstance(cause, Rejection):
                    cause = Rejection(400, f"invalid HTTP request: {error}")
                self._refuse(cause)
                return
            break
        request = self._request
        # httptools holds an unfinished header line until it ends: bound a
        # head still coming by what was read since the read it began in.
        if (
            request is not None
            and request.complete is None
            and self._received - request.read_end > MAX_HEAD_BYTES
        ):
            self._refuse(Rejection(431, "request head over 32 KiB"))
            return
        if len(self._queue) > MAX_QUEUED and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self.closing = True
        if self._task is not None:
            self._task.cancel()  # stops a response mid-way; its upstream connection is dropped

    def pause_writing(self) -> None:
        # The client reads slower than the model sends: stop reading the model.
        if self._exchange is not None and self._exchange.upstream is not None:
            self._exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._exchange is not None and self._exchange.upstream is not None:
            self._exchange.upstream.resume_reading()

    def _read_raw_body(self, request: _Request, data: bytes) -> bytes:
        """Take an Upgrade request's body (httptools skips it) from ``data``; return the rest."""
        piece = data[: request.raw_left]
        request.body.append(piece)
        request.raw_left -= len(piece)
        if not request.raw_left:
            self._request = None
            assert request.complete is not None
            request.complete.set_result(None)
        return data[len(piece) :]

    # httptools callbacks (a ``Rejection`` raised here stops the parser)

    def on_message_begin(self) -> None:
        # The head began somewhere in this read: what comes in later reads
        # while it is incomplete is all head (data_received bounds it).
        self._request = _Request(b"", b"", "1.1", [], monotonic(), read_end=self._received)

    def on_url(self, url: bytes) -> None:
        request = self._request
        assert request is not None
        request.target += url
        if len(request.target) > MAX_LINE_BYTES:
            raise Rejection(414, "request target over 8 KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._request
        assert request is not None
        request.headers.append((name, value))
        size = len(name) + len(value) + 4
        if size > MAX_LINE_BYTES:
            raise Rejection(431, "a header line over 8 KiB")
        request.head_bytes += size
        if request.head_bytes > MAX_HEAD_BYTES:
            raise Rejection(431, "request head over 32 KiB")
        lower = name.lower()
        if lower in _CHECKED:
            self._check_header(request, lower, value)

    def _check_header(self, request: _Request, name: bytes, value: bytes) -> None:
        if name == b"host":
            if request.host is not None:
                raise Rejection(400, "duplicate Host header")
            request.host = value
        elif name == b"transfer-encoding":
            if request.chunked:
                raise Rejection(400, "duplicate Transfer-Encoding header")
            if value.rstrip(b" \t").lower() != b"chunked":  # trailing OWS, as nginx
                raise Rejection(501, "Transfer-Encoding other than chunked")
            request.chunked = True
        elif name == b"content-length":
            # httptools has checked that it is a number, and the only one.
            request.length = int(value)
            if request.length > self._limits.max_body_bytes:
                raise Rejection(413, f"body over {self._limits.max_body_bytes} bytes")
        elif value.lower() == b"100-continue":
            request.expect_continue = True

    def on_headers_complete(self) -> None:
        request, parser = self._request, self._parser
        assert request is not None
        request.method = method = parser.get_method()
        request.version = version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise Rejection(505 if version >= "2" else 400, f"HTTP/{version} is not served")
        if method in _NOT_ALLOWED:
            raise Rejection(405, f"{method.decode()} is not allowed")
        if request.host is None:
            if version == "1.1":
                raise Rejection(400, "HTTP/1.1 request without Host")
        elif not valid_host(request.host):
            raise Rejection(400, "invalid Host header")
        if request.chunked and version == "1.0":  # RFC 9112 6.1: the framing is unreliable
            raise Rejection(400, "HTTP/1.0 request with Transfer-Encoding")
        if len(method) + len(request.target) + 13 > MAX_LINE_BYTES:
            raise Rejection(414, "request line over 8 KiB")
        if len(request.headers) > MAX_HEADERS:
            raise Rejection(431, f"over {MAX_HEADERS} header lines")
        target, authority = origin_form(request.target)
        if authority is not None:  # the target's host wins over Host (RFC 9112 3.2.2)
            request.target = target
            request.headers = [
                (n, authority if n.lower() == b"host" else v) for n, v in request.headers
            ]
        if parser.should_upgrade():
            # httptools stops at an upgrade's head and skips its body:
            # data_received reads a Content-Length one; a chunked one is refused.
            if request.chunked:
                raise Rejection(400, "Upgrade request with a chunked body")
            request.raw_left = request.length
        request.keep_alive = parser.should_keep_alive()
        request.expect_continue = request.expect_continue and version == "1.1"
        # The body's clock starts now, or once 100 Continue has asked for it.
        request.since = math.inf if request.expect_continue else monotonic()
        request.complete = self._loop.create_future()
        self._queue.append(request)

    def on_body(self, body: bytes) -> None:
        request = self._request
        assert request is not None
        request.body.append(body)
        request.body_bytes += len(body)
        if request.body_bytes > self._limits.max_body_bytes:  # de-chunking
            raise Rejection(413, f"body over {self._limits.max_body_bytes} bytes")

    def on_message_complete(self) -> None:
        request = self._request
        if request is not None and request.raw_left:
            return  # an Upgrade request: its body comes raw (data_received)
        self._request = None
        if request is not None and request.complete is not None:
            request.complete.set_result(None)

    # serving

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _serve(self) -> None:
        try:
            while not self.closing:
                if not self._queue:
                    self._wakeup = self._loop.create_future()
                    await self._wakeup
                    continue
                request = self._queue.popleft()
                self.busy = True
                if self._paused and len(self._queue) <= MAX_QUEUED and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
                keep_alive = await self._answer(request)
                self.busy = False
                self.idle_since = monotonic()
                if not keep_alive:
                    break
        except asyncio.CancelledError:
            pass
        finally:
            self.busy = False
            self._end()

    async def _answer(self, request: _Request) -> bool:
        complete = request.complete
        if complete is not None and not complete.done():
            if request.expect_continue:
                self.write(CONTINUE)
                request.since = monotonic()  # the body is asked for only now
            await complete
        if request.rejection is not None:
            self.write(_refusal(request.rejection))
            self._linger = True
            return False
        self.http10 = request.version == "1.0"
        exchange = self._exchange = self.proxy.begin(
            request.method,
            request.target,
            request.version,
            request.headers,
            request.body,
            keep_alive=request.keep_alive and not self._server.stopping,
            client=self._client,
        )
        relay = _Relay(self, exchange)
        try:
            await self.proxy.forward(exchange, relay)
        except UpstreamError as error:
            if exchange.responded:
                raise asyncio.CancelledError from None  # mid-body: closing is the only signal
            exchange.keep_alive = exchange.keep_alive and not self.draining
            self.write(self.proxy.error_response(exchange, error))
        else:
            relay.end()
        finally:
            self._exchange = None
            self.proxy.finish(exchange)
        return exchange.keep_alive

    def _refuse(self, rejection: Rejection) -> None:
        """Answer ``rejection`` after the requests queued before it; read no further."""
        self._stopped_reading = True
        request, self._request = self._request, None
        if request is not None and request.complete is not None and not request.complete.done():
            request.rejection = rejection  # queued already: its body was being read
            request.complete.set_result(None)
        else:
            self._queue.append(_Request(b"", b"", "1.1", [], 0.0, rejection=rejection))
        self._wake()

    def expire(self, now: float) -> None:
        """Refuse a request whose head or body is taking too long (408)."""
        request = self._request
        if request is None or self._paused or self._stopped_reading:
            return
        if request.complete is None:
            if now - request.since > self._limits.header_timeout_seconds:
                limit = self._limits.header_timeout_seconds
                self._refuse(Rejection(408, f"request head not received within {limit:g} s"))
        elif now - request.since > self._limits.body_timeout_seconds:
            limit = self._limits.body_timeout_seconds
            self._refuse(Rejection(408, f"request body not received within {limit:g} s"))

    def _end(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._linger and transport.can_write_eof():
            # The client may still be sending what was refused: closing now
            # would reset the connection and could destroy the answer. Send
            # the end, drop what still comes for a while, then close.
            transport.write_eof()
            if self._paused:
                transport.resume_reading()
            self._loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    @property
    def draining(self) -> bool:
        return self._server.stopping

    def idle(self) -> bool:
        return not self.busy and not self._queue and self._request is None

    def close(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.abort()


def _refusal(rejection: Rejection) -> bytes:
    body = json.dumps({"error": rejection.problem}).encode()
    return (
        b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%b"
        % (
            rejection.status,
            REASONS[rejection.status],
            len(body),
            body,
        )
    )


class ProxyServer:
    """Listens on the proxy port; ``shutdown`` drains (see the module docstring)."""

    def __init__(
        self, proxy: Proxy, *, limits: Limits | None = None, drain_grace_seconds: float = 1.0
    ) -> None:
        self.proxy = proxy
        self.limits = limits or Limits()
        self.connections: set[_ClientConnection] = set()
        self.stopping = False
        self._drain_grace = drain_grace_seconds
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientConnection(self), host, port, reuse_address=True, backlog=2048
        )
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        # One sweep a second instead of timers per request.
        while True:
            await asyncio.sleep(1.0)
            self._check(keepalive=KEEPALIVE_SECONDS)

    def _check(self, *, keepalive: float) -> None:
        now = monotonic()
        for connection in list(self.connections):
            if not connection.idle():
                connection.expire(now)
            elif now - connection.idle_since > keepalive:
                connection.close()

    async def shutdown(self, *, timeout: float) -> None:
        """Stop accepting; from now on every response says ``Connection: close``;
        idle connections get ``drain_grace_seconds`` for a request already on its
        way, then close; requests in flight finish (up to ``timeout``)."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        began = monotonic()
        while self.connections and monotonic() - began < timeout:
            grace_over = monotonic() - began >= self._drain_grace
            self._check(keepalive=0.0 if grace_over else math.inf)
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            with contextlib.suppress(Exception):
                connection.abort()
        self.proxy.close()


__all__ = ["Limits", "ProxyServer", "UpstreamGone", "UpstreamTimeout"]
