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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic

import httptools

from driftline_sidecar.proxy import Exchange, Proxy
from driftline_sidecar.upstream import ResponseHead, UpstreamError, UpstreamGone, UpstreamTimeout

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 5.0  # an idle client connection is closed after this (uvicorn's default)
MAX_QUEUED = 16  # pipelined requests parsed ahead; reading pauses beyond this
NO_BODY_STATUS = frozenset({204, 304})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(slots=True)
class _Request:
    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool = True
    expect_continue: bool = False
    body: list[bytes] = field(default_factory=list)
    complete: asyncio.Future[None] | None = None


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

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typeshed types it BaseTransport; a stream Protocol is always given a Transport.
        self._transport = transport  # type: ignore[assignment]
        self._client = transport.get_extra_info("peername")
        self._server.connections.add(self)
        self._task = self._loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # Upgrade is hop-by-hop: the request is proxied as a plain one
        except httptools.HttpParserError as error:
            self._bad_request(str(error))
            return
        if len(self._queue) > MAX_QUEUED and self._transport is not None:
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

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._request = _Request(b"", b"", "1.1", [])

    def on_url(self, url: bytes) -> None:
        assert self._request is not None
        self._request.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._request is not None
        self._request.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request, parser = self._request, self._parser
        assert request is not None
        request.method = parser.get_method()
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.expect_continue = request.version == "1.1" and any(
            n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in request.headers
        )
        request.complete = self._loop.create_future()
        self._queue.append(request)

    def on_body(self, body: bytes) -> None:
        assert self._request is not None
        self._request.body.append(body)

    def on_message_complete(self) -> None:
        request, self._request = self._request, None
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
                if len(self._queue) == MAX_QUEUED and self._transport is not None:
                    self._transport.resume_reading()
                keep_alive = await self._answer(request)
                self.busy = False
                self.idle_since = monotonic()
                if not keep_alive or self._server.stopping:
                    break
        except asyncio.CancelledError:
            pass
        finally:
            self.busy = False
            if self._transport is not None:
                self._transport.close()

    async def _answer(self, request: _Request) -> bool:
        assert request.complete is not None
        if not request.complete.done():
            if request.expect_continue:
                self.write(CONTINUE)
            await request.complete
        self.http10 = request.version == "1.0"
        exchange = self._exchange = self.proxy.begin(
            request.method,
            request.target,
            request.version,
            request.headers,
            request.body,
            keep_alive=request.keep_alive,
            client=self._client,
        )
        relay = _Relay(self, exchange)
        try:
            await self.proxy.forward(exchange, relay)
        except UpstreamError as error:
            if exchange.responded:
                raise asyncio.CancelledError from None  # mid-body: closing is the only signal
            self.write(self.proxy.error_response(exchange, error))
        else:
            relay.end()
        finally:
            self._exchange = None
            self.proxy.finish(exchange)
        return exchange.keep_alive

    def idle(self) -> bool:
        return not self.busy and not self._queue

    def close(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closing = True
        if self._transport is not None:
            self._transport.abort()

    def _bad_request(self, problem: str) -> None:
        body = json.dumps({"error": f"invalid HTTP request: {problem}"}).encode()
        self.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
        )
        self.closing = True
        if self._transport is not None:
            self._transport.close()


class ProxyServer:
    """Listens on the proxy port; ``shutdown`` drains requests in flight."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.connections: set[_ClientConnection] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientConnection(self), host, port, reuse_address=True, backlog=2048
        )
        self._sweeper = loop.create_task(self._close_idle())

    async def _close_idle(self) -> None:
        # One sweep a second instead of a timer per request.
        while True:
            await asyncio.sleep(1.0)
            self._close_where(lambda c: monotonic() - c.idle_since > KEEPALIVE_SECONDS)

    def _close_where(self, predicate: Callable[[_ClientConnection], bool]) -> None:
        for connection in list(self.connections):
            if connection.idle() and predicate(connection):
                connection.close()

    async def shutdown(self, *, timeout: float) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout``), close the rest."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        deadline = monotonic() + timeout
        while monotonic() < deadline:
            self._close_where(lambda c: True)
            if not self.connections:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            with contextlib.suppress(Exception):
                connection.abort()
        self.proxy.close()


__all__ = ["ProxyServer", "UpstreamGone", "UpstreamTimeout"]
