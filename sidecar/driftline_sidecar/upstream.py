"""Pooled keep-alive HTTP/1.1 connections to the model, parsed with httptools.

One request at a time per connection (no upstream pipelining). A connection
goes back to the pool only after a complete response the model did not mark
``Connection: close``; idle ones older than ``keepalive_seconds`` are dropped
(shorter than the model server's own keep-alive, uvicorn's 5 s, so the pool
rarely reuses a connection the model is about to close).

The response is handed to a ``Relay`` as it is parsed: the head, then body
pieces, then the end. ``Relay.flush`` runs once per ``data_received``, so a
small response that arrives in one read is written to the client in one
syscall.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Protocol

import httptools


class UpstreamError(Exception):
    """The model could not be reached, or broke off its answer."""


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamGone(UpstreamError):
    """The model closed the connection before its answer was complete."""


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    keep_alive: bool


class Relay(Protocol):
    """Where a response goes as it is parsed (the client connection)."""

    def head(self, head: ResponseHead) -> None: ...
    def body(self, data: bytes) -> None: ...
    def flush(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, *, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._relay: Relay | None = None
        self._done: asyncio.Future[ResponseHead] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._head_only = False
        self._head: ResponseHead | None = None
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._paused = False

    def exchange(
        self, request: bytes, relay: Relay, *, head_only: bool
    ) -> asyncio.Future[ResponseHead]:
        """Send ``request``; the future resolves to the head when the response is complete."""
        assert self.transport is not None
        self._relay, self._head_only, self._head = relay, head_only, None
        self._headers, self._reason = [], b""
        self._parser = httptools.HttpResponseParser(self)
        self._done = done = self._loop.create_future()
        self._last_read = monotonic()
        self._timer = self._loop.call_later(self._timeout, self._check_timeout)
        self.transport.write(request)
        return done

    @property
    def received_head(self) -> bool:
        return self._head is not None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typeshed types it BaseTransport; a stream Protocol is always given a Transport.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # nothing asked: the model sent garbage or a late byte
            self.abort()
            return
        self._last_read = monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(UpstreamGone(f"invalid HTTP response from the model: {error}"))
        if self._relay is not None:
            self._relay.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        head = self._head
        if head is not None and head.content_length is None and not head.chunked:
            self._finish()  # a body delimited by the end of the connection
        else:
            self._fail(UpstreamGone("the model closed the connection"))

    def pause_reading(self) -> None:
        """The client cannot take more yet: stop reading the model's answer."""
        if self.transport is not None and not self.closed and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self._paused:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None and self._relay is not None
        status = parser.get_status_code()
        if status < 200:  # 1xx informational: the real answer follows
            self._headers, self._reason = [], b""
            return
        length: int | None = None
        chunked = False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)
            elif lower == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
        self._head = ResponseHead(
            status, self._reason, self._headers, length, chunked, parser.should_keep_alive()
        )
        self._relay.head(self._head)
        if self._head_only:  # HEAD: the length describes a body that never comes
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self._relay is not None and self._head is not None:
            self._relay.body(body)

    def on_message_complete(self) -> None:
        if self._head is not None:
            self._finish()

    # the end of one exchange

    def _finish(self) -> None:
        done, head = self._done, self._head
        if done is None or head is None:
            return
        self._reset()
        if not head.keep_alive:
            self.abort()
        if not done.done():
            done.set_result(head)

    def _fail(self, error: UpstreamError) -> None:
        done = self._done
        self._reset()
        self.abort()
        if done is not None and not done.done():
            done.set_exception(error)

    def _reset(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._done = self._parser = None
        self.idle_since = monotonic()

    def _check_timeout(self) -> None:
        # One timer per exchange, re-armed from the last read: a slow stream
        # that keeps sending is not a timeout, a silence of ``timeout`` is.
        waited = monotonic() - self._last_read
        if waited < self._timeout:
            self._timer = self._loop.call_later(self._timeout - waited, self._check_timeout)
            return
        self._timer = None
        self._fail(UpstreamTimeout(f"the model sent nothing for {self._timeout:g} s"))


class UpstreamPool:
    """Keep-alive connections to one ``host:port``, at most ``limit`` at once."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        timeout_seconds: float,
        keepalive_seconds: float = 4.0,
        limit: int = 100,
        tls: bool = False,
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._timeout = timeout_seconds
        self._keepalive = keepalive_seconds
        self._idle: list[UpstreamConnection] = []
        self._slots = asyncio.Semaphore(limit)

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused; ``release`` it after the exchange."""
        await self._slots.acquire()
        now = monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive:
                return connection, True
            connection.abort()
        try:
            return await self._connect(), False
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: UpstreamConnection, *, reusable: bool) -> None:
        self._slots.release()
        if reusable and not connection.closed:
            connection.resume_reading()
            self._idle.append(connection)
        else:
            connection.abort()

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], UpstreamConnection] = lambda: UpstreamConnection(  # noqa: E731
            timeout_seconds=self._timeout
        )
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(factory, self._host, self._port, ssl=self._tls or None),
                timeout=self._timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout(f"connecting took over {self._timeout:g} s") from None
        except OSError as error:
            raise UpstreamError(str(error)) from None
        return connection

    def close(self) -> None:
        for connection in self._idle:
            with contextlib.suppress(Exception):
                connection.abort()
        self._idle.clear()
