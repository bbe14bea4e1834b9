"""The shadow mirror: stable's requests replayed to a candidate, answers compared.

After the client has its answer, the proxy offers the exchange to
``ShadowMirror.offer``, which decides without waiting: ``shadow_percent`` of
the requests served by the local model are sent again (same method, path,
query, headers and body) to ``shadow_url`` in a background task. At most
``shadow_concurrency`` mirrors are in flight; over the bound a request is
dropped and counted, never queued, so a slow shadow costs the sidecar a
bounded number of tasks and never a client any time.

Each pair of answers is compared with the protocol extractor (the configured
prediction paths): a classification agrees when every row's predicted class
is the same; a regression adds its absolute and relative differences. A compressed
answer (gzip, deflate: the client's ``Accept-Encoding`` goes to both) is
decoded first, within ``capture.max_decoded_bytes``; one that cannot be is
not compared. Both sides' latency and errors are counted too. The operator judges the counts
(``driftline_operator.compare.judge_shadow``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from random import random
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

from yarl import URL

from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.contract.metric_names import ShadowOutcome, Side
from driftline_sidecar.decoding import DECODED_GROWTH, UndecodableBody, decode
from driftline_sidecar.protocols import Extractor, UnparsableBody
from driftline_sidecar.routing_metrics import RoutingMetrics

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

# Bodies larger than this are compared in a thread so the event loop keeps serving.
THREAD_COMPARE_BYTES = 64 * 1024

Task = Literal["classification", "regression"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One compared request: ``agreed`` for a classification, the differences
    (means over the request's rows) for a regression."""

    agreed: bool | None = None
    abs_difference: float | None = None
    rel_difference: float | None = None  # None when stable's values are all zero


def compare_answers(
    request: bytes, stable: bytes, shadow: bytes, *, extractor: Extractor, task: Task
) -> Outcome | None:
    """Compare two answers to one request; None when either has no readable
    prediction for every row (then the pair is not counted as compared)."""
    try:
        ours = extractor(request, stable)
        theirs = extractor(request, shadow)
    except UnparsableBody:
        return None
    if task == "classification":
        a, b = ours.predictions, theirs.predictions
        if not a or None in a or None in b:
            return None
        return Outcome(agreed=a == b)
    x, y = _values(ours.predictions, ours.scores), _values(theirs.predictions, theirs.scores)
    if x is None or y is None or not x:
        return None
    differences = [abs(s - h) for s, h in zip(x, y, strict=True)]
    # Relative to stable's value; a zero stable value has no relative difference
    # unless the shadow says zero too.
    relative = [d / abs(s) if s else 0.0 for s, d in zip(x, differences, strict=True) if s or not d]
    return Outcome(
        abs_difference=sum(differences) / len(differences),
        rel_difference=sum(relative) / len(relative) if relative else None,
    )


def compare_encoded(
    request: bytes,
    stable: tuple[bytes, str],
    shadow: tuple[bytes, str],
    *,
    extractor: Extractor,
    task: Task,
    max_bytes: int,
) -> Outcome | None:
    """``compare_answers`` on two (body, Content-Encoding) answers, decoded
    first; None when either cannot be decoded within ``max_bytes``."""
    try:
        ours = decode(*stable, max_bytes=max_bytes)
        theirs = decode(*shadow, max_bytes=max_bytes)
    except UndecodableBody:
        return None
    return compare_answers(request, ours, theirs, extractor=extractor, task=task)


def _values(predictions: Sequence[Any], scores: Sequence[float | None]) -> list[float] | None:
    """A regression's value per row: its score if one is configured, else the prediction."""
    values = [s if s is not None else p for p, s in zip(predictions, scores, strict=True)]
    if all(type(v) is float or type(v) is int for v in values):
        return [float(v) for v in values]
    return None


@dataclass(frozen=True, slots=True)
class _Exchange:
    request: bytes  # as sent to the model: HTTP/1.1 head and body
    status: int  # stable's answer (the sidecar's own 502/504 included)
    response: bytes | None  # stable's body, None when not kept (error, too large)
    encoding: str  # its Content-Encoding


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    target: str  # raw path and query
    headers: list[tuple[str, str]]
    body: bytes


def parse_request(request: bytes) -> _Request:
    """Split a request the proxy built (``Proxy.begin``: one ``name: value`` per
    line, hop-by-hop headers already removed) into what the client sends again."""
    head, _, body = request.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    method, target, _ = line.split(" ", 2)
    headers = []
    for field in fields:
        name, _, value = field.partition(":")
        if name.lower() != "content-length":  # the client sets it from the body
            headers.append((name, value.strip()))
    return _Request(method, target, headers, body)


class ShadowMirror:
    """Mirrors sampled requests to the shadow and counts the comparisons."""

    def __init__(
        self,
        *,
        config: SidecarConfig,
        metrics: RoutingMetrics,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Without a ``session``, one of its own is opened at the first mirror
        (and closed by ``close``)."""
        self._metrics = metrics
        self._session = session
        self._own_session = session is None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._mirrored = metrics.shadow[ShadowOutcome.MIRRORED]
        self._dropped = metrics.shadow[ShadowOutcome.DROPPED]
        self.update(config)

    def update(self, config: SidecarConfig) -> None:
        """Take a new config; the next ``offer`` uses it (mirrors in flight finish
        with the old one)."""
        routing, model = config.routing, config.model
        self._url = routing.shadow_url.rstrip("/") if routing.shadow_url else None
        if routing.shadow_percent and self._url is None:
            log.warning(
                "routing.shadow_percent is %g but routing.shadow_url is not set: nothing is "
                "mirrored",
                routing.shadow_percent,
            )
        self._fraction = routing.shadow_percent / 100.0 if self._url is not None else 0.0
        self._limit = routing.shadow_concurrency
        self._timeout_seconds = routing.shadow_timeout_seconds
        self._task: Task = model.prediction.task
        self._max_decoded = config.capture.max_decoded_bytes
        self._extractor = Extractor(
            protocol=model.protocol, features=(), prediction=model.prediction
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def offer(
        self,
        *,
        request: bytes,
        status: int,
        response: bytes | None,
        upstream_seconds: float | None,
        response_encoding: str = "",
    ) -> None:
        """Maybe mirror one finished exchange; never waits, never raises for the
        caller. ``request`` is what the model was sent (head and body),
        ``response`` stable's body (None if it was not kept), as encoded by
        ``response_encoding``, and ``upstream_seconds`` its time to response
        headers (None: no answer)."""
        if not self._fraction or random() >= self._fraction:
            return
        if self._in_flight >= self._limit:
            self._dropped.inc()
            return
        exchange = _Exchange(request, status, response, response_encoding)
        self._in_flight += 1
        self._metrics.shadow_in_flight.inc()
        self._mirrored.inc()
        if status >= 500:
            self._metrics.shadow_errors[Side.STABLE].inc()
        if upstream_seconds is not None:
            self._metrics.shadow_duration[Side.STABLE].observe(upstream_seconds)
        task = asyncio.get_running_loop().create_task(self._mirror(exchange, self._url))
        self._tasks.add(task)  # a task nobody references can be collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def drain(self, *, timeout: float) -> None:
        """Let the mirrors in flight finish (up to ``timeout``), then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _opened_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp  # a sidecar that never mirrors never loads it (~7 MB of RSS)

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def _mirror(self, exchange: _Exchange, base: str | None) -> None:
        try:
            request = parse_request(exchange.request)
            answer = await self._send(request, base)
            if answer is not None:
                await self._compare(exchange, request.body, *answer)
        except Exception:  # the sidecar's own work must never surface anywhere
            log.exception("shadow: mirroring a request failed")
        finally:
            self._in_flight -= 1
            self._metrics.shadow_in_flight.dec()

    async def _send(self, request: _Request, base: str | None) -> tuple[int, bytes, str] | None:
        """The shadow's status, body and its Content-Encoding, or None when it
        failed (counted)."""
        import aiohttp  # loaded by _opened_session by now: a lookup

        session = self._opened_session()
        errors = self._metrics.shadow_errors[Side.SHADOW]
        started = perf_counter()
        try:
            async with session.request(
                request.method,
                URL(f"{base}{request.target}", encoded=True),
                headers=request.headers,
                data=request.body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
            ) as response:
                self._metrics.shadow_duration[Side.SHADOW].observe(perf_counter() - started)
                status = response.status
                body = await response.read()  # the session does not decompress
                encoding = response.headers.get("Content-Encoding", "")
        except (TimeoutError, aiohttp.ClientError) as error:
            log.debug("shadow: %s %s: %r", request.method, request.target, error)
            errors.inc()
            return None
        if status >= 500:
            errors.inc()
            return None
        return status, body, encoding

    async def _compare(
        self, exchange: _Exchange, sent: bytes, status: int, body: bytes, encoding: str
    ) -> None:
        stable = exchange.response
        if stable is None or not (200 <= exchange.status < 300 and 200 <= status < 300):
            return
        compare = partial(
            compare_encoded,
            extractor=self._extractor,
            task=self._task,
            max_bytes=self._max_decoded,
        )
        cost = len(sent)
        cost += len(stable) * (DECODED_GROWTH if exchange.encoding else 1)
        cost += len(body) * (DECODED_GROWTH if encoding else 1)
        answers = (stable, exchange.encoding), (body, encoding)
        if cost > THREAD_COMPARE_BYTES:
            outcome = await asyncio.to_thread(compare, sent, *answers)
        else:
            outcome = compare(sent, *answers)
        if outcome is None:
            return
        metrics = self._metrics
        metrics.shadow[ShadowOutcome.COMPARED].inc()
        if outcome.agreed:
            metrics.shadow[ShadowOutcome.AGREED].inc()
        if outcome.abs_difference is not None:
            metrics.abs_difference.observe(outcome.abs_difference)
        if outcome.rel_difference is not None:
            metrics.rel_difference.observe(outcome.rel_difference)
