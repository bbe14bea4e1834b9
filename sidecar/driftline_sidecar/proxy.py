"""The hot path: a raw ASGI reverse proxy in front of one model.

Per request it only forwards, times, and hands the bodies to the capture
queue. Pass-through is exact: method, raw path and query, headers minus
hop-by-hop ones, status, body bytes (no re-encoding, no decompression), and
streamed responses go back chunk by chunk as they arrive. The sidecar's own
work (metrics, spans, capture) can never fail or change a response.

Routing (canary split, shadow mirror) will choose the upstream per request in
``Proxy._route``; today there is one upstream.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import aiohttp
from opentelemetry.trace import Span
from yarl import URL

from driftline_sidecar.capture import Exchange
from driftline_sidecar.metrics import SidecarMetrics
from driftline_sidecar.tracing import TRACE_HEADERS, Tracing

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
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
# Responses up to this size are read whole and sent in one message; larger
# ones, and those without a length (chunked), are streamed as they arrive.
READ_WHOLE_BYTES = 64 * 1024
REQUEST_ID = b"x-request-id"


def make_session(*, timeout_seconds: float, connections: int = 100) -> aiohttp.ClientSession:
    """The pooled keep-alive upstream client. Call inside the running loop."""
    connector = aiohttp.TCPConnector(
        limit=connections,
        # Shorter than a typical server's keep-alive (uvicorn: 5 s), so the pool
        # rarely reuses a connection the model is about to close.
        keepalive_timeout=4.0,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None, connect=timeout_seconds, sock_read=timeout_seconds
        ),
        auto_decompress=False,  # bytes pass through exactly as the model sent them
        # Headers the client did not send are not invented.
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        raise_for_status=False,
    )


class Proxy:
    """The ASGI app on the proxy port."""

    def __init__(
        self,
        *,
        upstream: str,
        session: aiohttp.ClientSession,
        metrics: SidecarMetrics,
        capture: Callable[[Exchange], None] | None = None,
        max_capture_bytes: int = 1 << 20,
        tracing: Tracing | None = None,
    ) -> None:
        self._upstream = upstream.rstrip("/")
        self._session = session
        self._metrics = metrics
        self._capture = capture
        self._max_capture = max_capture_bytes
        self._tracing = tracing
        self.last_upstream_ok: float | None = None  # perf_counter() of the last answer

    def _route(self, scope: Scope) -> str:
        return self._upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        in_flight = self._metrics.in_flight
        in_flight.inc()
        try:
            await self._proxy(scope, receive, send)
        finally:
            in_flight.dec()

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter()
        ts = time.time()
        method: str = scope["method"]
        headers, request_id, carrier = self._request_headers(scope)
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before sending its request
        base = self._route(scope)
        target = base + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        span = client_span = None
        if self._tracing is not None:
            span = self._tracing.start_server(method=method, scope=scope, carrier=carrier)
            client_span, injected = self._tracing.start_client(span, method=method, url=target)
            headers.extend(injected.items())
        request_id_header = (REQUEST_ID, request_id.encode("latin-1"))
        answer = await self._forward(
            method, target, headers, body, send, request_id_header, client_span
        )
        seconds = perf_counter() - start
        try:
            self._metrics.observe_request(
                code=answer.status,
                seconds=seconds,
                upstream_seconds=answer.upstream_seconds,
                request_bytes=len(body),
                response_bytes=answer.sent,
            )
            if span is not None:
                Tracing.end(span, status=answer.status)
            # Probes, errors and empty requests carry no prediction.
            if self._capture is not None and answer.captured and body:
                too_large = answer.too_large or len(body) > self._max_capture
                self._capture(
                    Exchange(
                        request=b"" if too_large else body,
                        response=b"" if too_large else answer.body,
                        status=answer.status,
                        latency_seconds=seconds,
                        request_id=request_id,
                        ts=ts,
                        too_large=too_large,
                    )
                )
        except Exception:  # counting must never fail a request already answered
            log.exception("proxy: bookkeeping after request %s failed", request_id)

    def _request_headers(self, scope: Scope) -> tuple[list[tuple[str, str]], str, dict[str, str]]:
        """Headers to send upstream, the request id, and the incoming trace context."""
        headers: list[tuple[str, str]] = []
        request_id = ""
        carrier: dict[str, str] = {}
        connection_tokens: set[bytes] = set()
        tracing = self._tracing is not None
        for name, value in scope["headers"]:
            if name in HOP_BY_HOP or name == b"content-length":
                if name == b"connection":
                    connection_tokens.update(t.strip().lower() for t in value.split(b","))
                continue
            if name == REQUEST_ID:
                request_id = value.decode("latin-1")
            elif tracing and name in TRACE_HEADERS:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
            else:
                headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if connection_tokens - {b"keep-alive", b"close"}:
            # Connection may name further hop-by-hop headers.
            drop = {t.decode("latin-1") for t in connection_tokens}
            headers = [(n, v) for n, v in headers if n not in drop]
        if not request_id:
            request_id = uuid.uuid4().hex
        headers.append(("x-request-id", request_id))
        return headers, request_id, carrier

    async def _forward(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        send: Send,
        request_id_header: tuple[bytes, bytes],
        client_span: Span | None,
    ) -> _Answer:
        """Send upstream and stream the answer back to the client."""
        started = perf_counter()
        answer = _Answer()
        response_started = False
        try:
            async with self._session.request(
                method,
                URL(target, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as response:
                answer.upstream_seconds = perf_counter() - started
                answer.status = response.status
                if client_span is not None:
                    Tracing.end(client_span, status=answer.status)
                self.last_upstream_ok = perf_counter()
                response_started = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": answer.status,
                        "headers": _response_headers(response.raw_headers, request_id_header),
                    }
                )
                await self._stream_body(response, send, answer)
        except (TimeoutError, aiohttp.ClientError) as error:
            if response_started:
                raise  # mid-body: only closing the connection tells the client
            if client_span is not None:
                Tracing.end(client_span, status=None, error=type(error).__name__)
            timed_out = isinstance(error, TimeoutError)
            answer.status = 504 if timed_out else 502
            problem = "model timed out" if timed_out else f"model unreachable: {error}"
            payload = json.dumps({"error": problem, "upstream": self._upstream}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                        request_id_header,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            answer.sent = len(payload)
            return answer
        answer.captured = 200 <= answer.status < 300
        return answer

    async def _stream_body(
        self, response: aiohttp.ClientResponse, send: Send, answer: _Answer
    ) -> None:
        """Send the response body, keeping a copy up to the capture limit."""
        length = response.content_length
        if length is not None and length <= READ_WHOLE_BYTES:
            answer.body = await response.read()
            await send({"type": "http.response.body", "body": answer.body})
            answer.sent = len(answer.body)
            answer.too_large = answer.sent > self._max_capture
            return
        kept: list[bytes] = []
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            answer.sent += len(chunk)
            if not answer.too_large:
                if answer.sent > self._max_capture:
                    answer.too_large = True  # stop copying; capture counts it
                    kept.clear()
                else:
                    kept.append(chunk)
        await send({"type": "http.response.body", "body": b""})
        answer.body = b"".join(kept)


@dataclass(slots=True)
class _Answer:
    status: int = 502
    upstream_seconds: float | None = None
    sent: int = 0  # body bytes sent to the client
    body: bytes = b""  # copy of the response body for capture
    too_large: bool = False  # the copy was abandoned at the capture limit
    captured: bool = False  # worth capturing (a 2xx answer from the model)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _response_headers(
    raw: tuple[tuple[bytes, bytes], ...], request_id_header: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    headers = [
        (name, value)
        for name, value in raw
        if (lower := name.lower()) not in HOP_BY_HOP and lower != REQUEST_ID
    ]
    headers.append(request_id_header)
    return headers
