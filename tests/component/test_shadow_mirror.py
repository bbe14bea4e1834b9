"""ShadowMirror against real HTTP shadows on loopback (in-process aiohttp servers)."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.contract.reader import shadow_counts_from_samples
from driftline_sidecar.contract.snapshot import ShadowCounts
from driftline_sidecar.routing_metrics import RoutingMetrics
from driftline_sidecar.shadow import ShadowMirror
from tests._loopback import serving
from tests.component.conftest import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST = json.dumps({"f0": 1.0}).encode()
OK = json.dumps({"prediction": "ok", "probability": 0.2}).encode()
FRAUD = json.dumps({"prediction": "fraud", "probability": 0.9}).encode()


def shadow_counts(registry: CollectorRegistry) -> ShadowCounts:
    return shadow_counts_from_samples(s for family in registry.collect() for s in family.samples)


def answering(handler: Handler) -> AbstractAsyncContextManager[str]:
    """A server answering every request with ``handler``; yields its URL."""
    return serving(web.route("*", "/{tail:.*}", handler))


@asynccontextmanager
async def mirror(
    url: str | None, **routing: object
) -> AsyncIterator[tuple[ShadowMirror, CollectorRegistry]]:
    config = SidecarConfig.model_validate(
        {
            "model": {"name": "fraud"},
            "routing": {"shadow_url": url, "shadow_percent": 100, **routing},
        }
    )
    registry = CollectorRegistry()
    metrics = RoutingMetrics(registry=registry, base=("fraud", "v1", "stable"))
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield ShadowMirror(config=config, metrics=metrics, session=session), registry


def offer(shadow: ShadowMirror, *, status: int = 200, response: bytes | None = OK) -> None:
    shadow.offer(
        request=b"POST /predict?x=1 HTTP/1.1\r\nhost: model\r\ncontent-type: application/json\r\n"
        b"x-request-id: r1\r\ncontent-length: %d\r\n\r\n%b" % (len(REQUEST), REQUEST),
        status=status,
        response=response,
        upstream_seconds=0.001,
    )


async def settle(shadow: ShadowMirror) -> None:
    await shadow.drain(timeout=30)


@pytest.mark.asyncio
async def test_the_same_request_reaches_the_shadow_and_answers_are_compared() -> None:
    seen: list[tuple[str, str, str, bytes, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            (
                request.method,
                request.path,
                request.query_string,
                body,
                request.headers.get("x-request-id"),
            )
        )
        return web.Response(body=FRAUD if request.query.get("x") == "2" else OK)

    async with answering(handler) as url, mirror(url) as (shadow, registry):
        offer(shadow)
        offer(shadow, response=FRAUD)  # stable said fraud, the shadow says ok
        await settle(shadow)
        counts = shadow_counts(registry)
    assert seen == [("POST", "/predict", "x=1", REQUEST, "r1")] * 2
    assert (counts.mirrored, counts.compared, counts.agreed) == (2, 2, 1)
    assert (counts.stable_errors, counts.shadow_errors, counts.dropped) == (0, 0, 0)
    assert counts.stable_latency.count == 2 and counts.shadow_latency.count == 2


@pytest.mark.asyncio
async def test_over_the_concurrency_bound_requests_are_dropped_not_queued() -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(body=OK)

    async with answering(handler) as url, mirror(url, shadow_concurrency=2) as (shadow, registry):
        offer(shadow)
        offer(shadow)
        await arrived.wait()
        for _ in range(5):
            offer(shadow)  # returns at once: nothing waits for the shadow
        assert shadow.in_flight == 2
        assert shadow_counts(registry).dropped == 5
        release.set()
        await settle(shadow)
        offer(shadow)  # a slot is free again
        await settle(shadow)
        counts = shadow_counts(registry)
    assert (counts.mirrored, counts.dropped, counts.compared, counts.agreed) == (3, 5, 3, 3)
    assert shadow.in_flight == 0


@pytest.mark.asyncio
async def test_a_shadow_that_is_down_fails_or_is_slow_counts_as_shadow_errors() -> None:
    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=503, body=b"{}")

    never = asyncio.Event()  # the slow shadow answers only after the test is done

    async def slow(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response(body=OK)

    down = f"http://127.0.0.1:{free_port()}"
    async with mirror(down) as (shadow, registry):
        offer(shadow)
        await settle(shadow)
        assert shadow_counts(registry).shadow_errors == 1
    async with answering(failing) as url, mirror(url) as (shadow, registry):
        offer(shadow)
        await settle(shadow)
        counts = shadow_counts(registry)
        assert (counts.shadow_errors, counts.compared, counts.shadow_latency.count) == (1, 0, 1)
    async with (
        answering(slow) as url,
        mirror(url, shadow_timeout_seconds=0.2) as (shadow, registry),
    ):
        offer(shadow)
        await settle(shadow)
        counts = shadow_counts(registry)
        assert (counts.mirrored, counts.shadow_errors, counts.compared) == (1, 1, 0)
        never.set()


@pytest.mark.asyncio
async def test_stable_errors_are_mirrored_and_counted() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=OK)

    async with answering(handler) as url, mirror(url) as (shadow, registry):
        offer(shadow, status=502, response=None)
        await settle(shadow)
        counts = shadow_counts(registry)
    assert counts == ShadowCounts(
        mirrored=1,
        stable_errors=1,
        stable_latency=counts.stable_latency,
        shadow_latency=counts.shadow_latency,
    )
    assert counts.shadow_latency.count == 1


@pytest.mark.asyncio
async def test_shadow_percent_samples_and_zero_mirrors_nothing() -> None:
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(body=OK)

    async with answering(handler) as url, mirror(url, shadow_percent=0) as (shadow, registry):
        for _ in range(50):
            offer(shadow)
        await settle(shadow)
        assert hits == 0 and shadow_counts(registry).mirrored == 0
        config = SidecarConfig.model_validate(
            {
                "model": {"name": "fraud"},
                "routing": {"shadow_url": url, "shadow_percent": 50, "shadow_concurrency": 1000},
            }
        )
        shadow.update(config)
        n = 400
        for _ in range(n):
            offer(shadow)
        await settle(shadow)
    # 50 % of 400: 200 +- 5 sigma (10), so a correct sampler never fails this.
    assert 150 <= hits <= 250
    assert shadow_counts(registry).mirrored == hits


@pytest.mark.asyncio
async def test_compressed_answers_are_decoded_before_they_are_compared() -> None:
    async def handler(request: web.Request) -> web.Response:
        assert request.headers["accept-encoding"] == "gzip"  # the client's, passed on
        headers = {"content-encoding": "gzip", "content-type": "application/json"}
        return web.Response(body=gzip.compress(OK), headers=headers)

    def offer_encoded(response: bytes, encoding: str) -> None:
        shadow.offer(
            request=b"POST /predict HTTP/1.1\r\nhost: model\r\naccept-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(REQUEST), REQUEST),
            status=200,
            response=response,
            upstream_seconds=0.001,
            response_encoding=encoding,
        )

    async with answering(handler) as url, mirror(url) as (shadow, registry):
        offer_encoded(gzip.compress(OK), "gzip")  # agrees
        offer_encoded(zlib.compress(FRAUD), "deflate")  # disagrees
        offer_encoded(OK, "br")  # stable's answer cannot be read: not compared
        await settle(shadow)
        counts = shadow_counts(registry)
    assert (counts.mirrored, counts.compared, counts.agreed) == (3, 2, 1)
    assert counts.shadow_errors == 0
