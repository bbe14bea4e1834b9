"""The hot path's bookkeeping: what one request through the sidecar does.

``driftline_sidecar.server`` speaks HTTP to clients and
``driftline_sidecar.upstream`` to the model; this module decides what passes
(headers minus hop-by-hop ones, the request id, trace context), answers for a
model that is down or silent (a JSON 502/504), and, once a request is done,
counts it, ends its spans and hands the bodies to the capture queue. The
sidecar's own work can never fail or change a response.

With a canary split (``driftline_sidecar.routing``) a request may go to the
canary instead: it is served the same way but counted only as routed (the
canary's own sidecar counts it). Requests the local model served may be
mirrored to a shadow once answered (``driftline_sidecar.shadow``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from random import getrandbits
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import Span

from driftline_sidecar.capture import Exchange as Captured
from driftline_sidecar.metrics import SidecarMetrics
from driftline_sidecar.routing import Canary, CanarySplit
from driftline_sidecar.server_timing import Malformed, parse_server_timing
from driftline_sidecar.shadow import ShadowMirror
from driftline_sidecar.tracing import TRACE_HEADERS, Tracing
from driftline_sidecar.upstream import (
    Relay,
    ResponseHead,
    UpstreamConnection,
    UpstreamError,
    UpstreamGone,
    UpstreamPool,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded. Expect
# is answered by the sidecar, which has the whole body before it forwards.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {b"content-length", b"expect"}
REQUEST_ID = b"x-request-id"
# Connection options, or names that no client may strip: Host is the request's
# own (a "Connection: host" would leave the model without one).
_NEVER_NAMED = frozenset({b"keep-alive", b"close", b"host"})
# Retried once on a fresh connection when a pooled one turns out closed.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


@dataclass(slots=True)
class Exchange:
    """One request through the proxy, from its head to the last byte sent."""

    method: bytes
    target: bytes
    keep_alive: bool
    request: bytes  # the request as sent to the model: head and body
    body: bytes  # the request body alone
    request_id: bytes
    start: float = field(default_factory=perf_counter)
    ts: float = field(default_factory=time.time)
    span: Span | None = None
    client_span: Span | None = None
    status: int = 502
    responded: bool = False  # the response head went to the client
    upstream_seconds: float | None = None  # until the model's response head
    model_seconds: float | None = None  # until the model's response end
    server_timing: bytes = b""  # the model's Server-Timing header(s), read after the answer
    sent: int = 0  # response body bytes sent to the client
    kept: list[bytes] = field(default_factory=list)  # copy for capture
    too_large: bool = False  # the response outgrew the capture limit: no copy kept
    content_encoding: bytes = b""  # the response's, for capture to decode its copy
    max_capture: int = 0
    upstream: UpstreamConnection | None = None  # the model connection answering it
    canary: Canary | None = None  # routed to the canary instead of the local model

    def keep(self, data: bytes) -> None:
        """Count a body piece sent to the client, keeping a copy up to the capture limit."""
        self.sent += len(data)
        if self.too_large:
            return
        if self.sent > self.max_capture:
            self.too_large = True  # stop copying; capture counts it
            self.kept.clear()
        else:
            self.kept.append(data)


class Proxy:
    def __init__(
        self,
        *,
        upstream: str,
        pool: UpstreamPool,
        metrics: SidecarMetrics,
        capture: Callable[[Captured], None] | None = None,
        max_capture_bytes: int = 1 << 20,
        tracing: Tracing | None = None,
        split: CanarySplit | None = None,
        shadow: ShadowMirror | None = None,
    ) -> None:
        self._upstream = upstream.rstrip("/")
        where = urlsplit(self._upstream)
        self._host = where.netloc.encode("latin-1")
        self._prefix = where.path.encode("latin-1")  # an upstream URL may carry a base path
        self._pool = pool
        self._metrics = metrics
        self._requests_in_flight = metrics.in_flight
        self._capture = capture
        self._max_capture = max_capture_bytes
        self._tracing = tracing
        self._split = split
        self._shadow = shadow
        self._routed = metrics.routing.routed_canary
        self.last_upstream_ok: float | None = None  # perf_counter() of the last answer

    def begin(
        self,
        method: bytes,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        body_parts: list[bytes],
        *,
        keep_alive: bool,
        client: tuple[str, int] | None = None,
    ) -> Exchange:
        """Start an exchange: the request to send upstream, the request id, the spans."""
        self._requests_in_flight.inc()
        body = body_parts[0] if len(body_parts) == 1 else b"".join(body_parts)
        canary = self._split.pick() if self._split is not None else None
        prefix = self._prefix if canary is None else canary.prefix
        lines = [b"%b %b%b HTTP/1.1" % (method, prefix, target)]
        request_id = b""
        carrier: dict[str, str] = {}
        tracing = self._tracing is not None
        connection_tokens: set[bytes] = set()
        framed = has_host = False
        for name, value in headers:
            lower = name.lower()
            if lower in _NOT_FORWARDED:
                if lower == b"connection":
                    connection_tokens.update(t.strip().lower() for t in value.split(b","))
                framed = framed or lower in (b"content-length", b"transfer-encoding")
            elif lower == REQUEST_ID:
                request_id = value
            elif tracing and lower in TRACE_HEADERS:
                carrier[lower.decode("latin-1")] = value.decode("latin-1")
            else:
                has_host = has_host or lower == b"host"
                lines.append(name + b": " + value)
        connection_tokens -= _NEVER_NAMED
        if connection_tokens:
            # Connection may name further hop-by-hop headers (they can come first).
            lines[1:] = [
                line
                for line in lines[1:]
                if line.split(b":", 1)[0].lower() not in connection_tokens
            ]
        if not has_host:
            lines.append(b"host: " + (self._host if canary is None else canary.host))
        if not request_id:
            # Unique, not secret: no syscall per request (uuid4 reads os.urandom).
            request_id = b"%032x" % getrandbits(128)
        lines.append(REQUEST_ID + b": " + request_id)
        span = client_span = None
        if tracing:
            assert self._tracing is not None
            base = self._upstream if canary is None else canary.url
            span, client_span, injected = self._spans(
                method, target, version, carrier, client, base
            )
            lines.extend(f"{k}: {v}".encode("latin-1") for k, v in injected.items())
        if body or framed:
            lines.append(b"content-length: %d" % len(body))
        lines.append(b"\r\n")
        return Exchange(
            method=method,
            target=target,
            keep_alive=keep_alive,
            request=b"\r\n".join(lines) + body,
            body=body,
            request_id=request_id,
            span=span,
            client_span=client_span,
            max_capture=self._max_capture,
            canary=canary,
        )

    async def forward(self, exchange: Exchange, relay: Relay) -> None:
        """Send the request to the model and relay its answer (raises ``UpstreamError``)."""
        pool = self._pool if exchange.canary is None else exchange.canary.pool
        for attempt in (1, 2):
            connection, reused = await pool.acquire()
            exchange.upstream = connection
            done = connection.exchange(
                exchange.request, relay, head_only=exchange.method == b"HEAD"
            )
            try:
                head = await done
            except UpstreamGone:
                pool.release(connection, reusable=False)
                retry = reused and not connection.received_head and attempt == 1
                if retry and exchange.method in IDEMPOTENT:
                    continue  # a pooled connection the model had just closed
                raise
            except BaseException:  # client gone or an error: the connection is mid-answer
                pool.release(connection, reusable=False)
                raise
            exchange.model_seconds = perf_counter() - exchange.start
            pool.release(connection, reusable=head.keep_alive)
            return

    def response_head(self, head: ResponseHead, exchange: Exchange, extra: list[bytes]) -> bytes:
        """The status line and headers for the client (called once the model's are parsed)."""
        now = perf_counter()
        exchange.responded = True
        exchange.upstream_seconds = now - exchange.start
        if exchange.canary is None:
            self.last_upstream_ok = now
        if exchange.client_span is not None:
            Tracing.end(exchange.client_span, status=head.status)
        lines = [b"HTTP/1.1 %d %b" % (head.status, head.reason)]
        for name, value in head.headers:
            lower = name.lower()
            if lower not in HOP_BY_HOP and lower != REQUEST_ID:
                lines.append(name + b": " + value)
                if lower == b"content-encoding":
                    coding = exchange.content_encoding
                    exchange.content_encoding = coding + b", " + value if coding else value
                elif lower == b"server-timing":
                    timing = exchange.server_timing
                    exchange.server_timing = timing + b", " + value if timing else value
        lines.append(REQUEST_ID + b": " + exchange.request_id)
        lines.extend(extra)
        if not exchange.keep_alive:
            lines.append(b"connection: close")
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def error_response(self, exchange: Exchange, error: UpstreamError) -> bytes:
        """A JSON 502 (model unreachable) or 504 (model silent) for the client."""
        timed_out = isinstance(error, UpstreamTimeout)
        exchange.status = 504 if timed_out else 502
        if exchange.client_span is not None:
            Tracing.end(exchange.client_span, status=None, error=type(error).__name__)
            exchange.client_span = None
        problem = "model timed out" if timed_out else f"model unreachable: {error}"
        upstream = self._upstream if exchange.canary is None else exchange.canary.url
        payload = json.dumps({"error": problem, "upstream": upstream}).encode()
        exchange.sent = len(payload)
        reason = b"Gateway Timeout" if timed_out else b"Bad Gateway"
        close = b"" if exchange.keep_alive else b"connection: close\r\n"
        return (
            b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"%b: %b\r\n%b\r\n%b"
            % (
                exchange.status,
                reason,
                len(payload),
                REQUEST_ID,
                exchange.request_id,
                close,
                payload,
            )
        )

    def finish(self, exchange: Exchange) -> None:
        """Count the exchange, end its span, hand it to capture (never raises)."""
        self._requests_in_flight.dec()
        if exchange.canary is not None:
            self._routed.inc()  # the canary's own sidecar counts, captures and mirrors it
            if exchange.span is not None:
                Tracing.end(exchange.span, status=exchange.status)
            return
        try:
            seconds = perf_counter() - exchange.start
            self._metrics.observe_request(
                code=exchange.status,
                seconds=seconds,
                upstream_seconds=exchange.upstream_seconds,
                request_bytes=len(exchange.body),
                response_bytes=exchange.sent,
                model_seconds=exchange.model_seconds,
            )
            stages = self._stages(exchange) if exchange.server_timing else ()
            if exchange.span is not None:
                Tracing.add_timings(
                    exchange.span,
                    seconds=seconds,
                    model_seconds=exchange.model_seconds,
                    stages=stages,
                )
                Tracing.end(exchange.span, status=exchange.status)
            # Probes, errors and empty requests carry no prediction.
            body = exchange.body
            if not body:
                return
            ok = 200 <= exchange.status < 300
            kept = exchange.kept
            response = kept[0] if len(kept) == 1 else b"".join(kept)
            if self._capture is not None and ok:
                # A request over the limit is not read; a response over it
                # leaves the request to be read alone.
                too_large = len(body) > self._max_capture
                skip_response = too_large or exchange.too_large
                self._capture(
                    Captured(
                        request=b"" if too_large else body,
                        response=b"" if skip_response else response,
                        status=exchange.status,
                        latency_seconds=seconds,
                        request_id=exchange.request_id.decode("latin-1"),
                        ts=exchange.ts,
                        too_large=too_large,
                        response_too_large=exchange.too_large and not too_large,
                        response_encoding=exchange.content_encoding.decode("latin-1"),
                    )
                )
            if self._shadow is not None:
                self._shadow.offer(
                    request=exchange.request,
                    status=exchange.status,
                    response=response if ok and not exchange.too_large else None,
                    upstream_seconds=exchange.upstream_seconds,
                    response_encoding=exchange.content_encoding.decode("latin-1"),
                )
        except Exception:  # counting must never fail a request already answered
            log.exception("proxy: bookkeeping after request %r failed", exchange.request_id)

    def _stages(self, exchange: Exchange) -> list[tuple[str, float]]:
        """The model's Server-Timing stages, counted; none when the header is malformed."""
        try:
            stages = parse_server_timing(exchange.server_timing.decode("latin-1"))
        except Malformed:
            self._metrics.server_timing_malformed.inc()
            return []
        for name, stage_seconds in stages:
            self._metrics.stage(name).observe(stage_seconds)
        return stages

    def close(self) -> None:
        self._pool.close()
        if self._split is not None:
            self._split.close()

    def _spans(
        self,
        method: bytes,
        target: bytes,
        version: str,
        carrier: dict[str, str],
        client: tuple[str, int] | None,
        base: str,
    ) -> tuple[Span, Span, dict[str, str]]:
        assert self._tracing is not None
        text = method.decode("latin-1")
        path, _, query = target.partition(b"?")
        scope: dict[str, Any] = {
            "path": path.decode("latin-1"),
            "query_string": query,
            "scheme": "http",
            "http_version": version,
            "client": client,
        }
        span = self._tracing.start_server(method=text, scope=scope, carrier=carrier)
        url = base + target.decode("latin-1")  # base path included
        client_span, injected = self._tracing.start_client(span, method=text, url=url)
        return span, client_span, injected
