"""The shadow mirror end to end: a real sidecar mirrors to a real shadow model,
the served answer is untouched and never waits, the comparison counts are
exact, and the operator's judge_shadow tells a fit candidate from an unfit one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import numpy as np
import pytest
from aiohttp import web

from driftline_operator.api.spec import Comparison
from driftline_operator.cli.demo.model_server import Classifier
from driftline_operator.rollout.compare import judge_shadow
from driftline_sidecar.contract.snapshot import ShadowCounts
from tests._loopback import serving
from tests.component.conftest import (
    N_FEATURES,
    OTHER_SEED,
    STABLE_SEED,
    ModelServer,
    free_port,
    running_model,
)

if TYPE_CHECKING:
    from tests.component.conftest import Sidecar

N = 200
# The latency margin is generous: these tests judge answers, not a loaded machine's p95.
COMPARISON = Comparison(max_disagreement=0.05, max_score_difference=0.01, max_latency_increase="1s")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """A second process serving the same model as the stable one."""
    with running_model(tmp_path_factory.mktemp("twin"), "--seed", str(STABLE_SEED)) as server:
        yield server


@dataclass
class Candidate:
    name: str
    server: ModelServer
    seed: int


@pytest.fixture(params=["twin", "other"])
def candidate(request: pytest.FixtureRequest) -> Candidate:
    """The shadow under test: the stable model's twin, or one with other weights."""
    if request.param == "twin":
        return Candidate("twin", request.getfixturevalue("twin"), STABLE_SEED)
    return Candidate("other", request.getfixturevalue("other_model"), OTHER_SEED)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, N_FEATURES))


def probabilities(seed: int, table: np.ndarray) -> np.ndarray:
    return Classifier(n_features=N_FEATURES, seed=seed).probability(table)


def send(sidecar: Sidecar, table: np.ndarray) -> None:
    with httpx.Client(timeout=30) as client:
        for row in table.tolist():
            response = client.post(
                sidecar.proxy + "/predict", json={f"f{i}": v for i, v in enumerate(row)}
            )
            assert response.status_code == 200, response.text


def settled(sidecar: Sidecar, mirrored: int) -> ShadowCounts:
    """The shadow counts once every mirrored request has an outcome."""
    snapshot = sidecar.wait_records(
        lambda s: (
            s["shadow"]["mirrored"] == mirrored
            and s["shadow"]["compared"] + s["shadow"]["shadow_errors"] >= mirrored
        )
    )
    return ShadowCounts.model_validate(snapshot["shadow"])


def mirroring(shadow_url: str, **routing: Any) -> dict[str, Any]:
    return {
        "shadow_url": shadow_url,
        "shadow_percent": 100,
        "shadow_concurrency": 1000,  # sequential clients: never reached, so counts are exact
        **routing,
    }


def test_classification_agreement_is_counted_and_judged(
    candidate: Candidate, model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url, routing=mirroring(candidate.server.url))
    table = rows(N)
    send(sidecar, table)
    counts = settled(sidecar, N)

    # Expected independently: the two weight vectors applied here.
    expected = int(
        (
            (probabilities(STABLE_SEED, table) >= 0.5)
            == (probabilities(candidate.seed, table) >= 0.5)
        ).sum()
    )
    assert (counts.mirrored, counts.compared, counts.agreed) == (N, N, expected)
    assert (counts.dropped, counts.stable_errors, counts.shadow_errors) == (0, 0, 0)
    assert counts.stable_latency.count == N and counts.shadow_latency.count == N
    verdict = judge_shadow(counts, COMPARISON)
    if candidate.name == "twin":
        assert expected == N
        assert verdict.verdict == "ok", verdict.reason
    else:
        assert N - expected > 0.2 * N  # the other weights really do disagree often
        assert verdict.verdict == "fail", verdict.reason
        assert verdict.failed[0].name == "disagreement"


def test_regression_differences_are_counted_and_judged(
    candidate: Candidate, model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(
        model.url,
        model={"protocol": "json", "prediction": {"path": "probability", "task": "regression"}},
        routing=mirroring(candidate.server.url),
    )
    table = rows(N, seed=1)
    send(sidecar, table)
    counts = settled(sidecar, N)

    ours, theirs = probabilities(STABLE_SEED, table), probabilities(candidate.seed, table)
    assert counts.compared == N and counts.agreed == 0
    assert counts.abs_difference_sum == pytest.approx(np.abs(ours - theirs).sum(), abs=1e-9)
    assert counts.rel_difference_sum == pytest.approx(
        (np.abs(ours - theirs) / ours).sum(), abs=1e-9
    )
    verdict = judge_shadow(counts, COMPARISON, task="regression")
    assert verdict.verdict == ("ok" if candidate.name == "twin" else "fail"), verdict.reason


def test_a_shadow_that_is_down_counts_errors_and_clients_see_nothing(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url, routing=mirroring(f"http://127.0.0.1:{free_port()}"))
    send(sidecar, rows(10))
    counts = settled(sidecar, 10)
    assert (counts.shadow_errors, counts.compared, counts.stable_errors) == (10, 0, 0)
    assert sidecar.snapshot()["requests"] == {"200": 10}
    verdict = judge_shadow(counts, COMPARISON, min_requests=1)
    assert verdict.verdict == "insufficient_data"  # nothing compared: no evidence either way


def test_shadow_metrics_and_the_profile_hash_are_exported(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url, routing=mirroring(model.url))
    send(sidecar, rows(3))
    settled(sidecar, 3)
    text = sidecar.metrics()
    for needle in (
        'driftline_shadow_requests_total{model="fraud",outcome="mirrored",role="stable",version="v1"} 3.0',
        'outcome="compared"',
        'outcome="agreed"',
        'outcome="dropped"',
        'driftline_shadow_errors_total{model="fraud",role="stable",side="shadow",version="v1"} 0.0',
        'driftline_shadow_duration_seconds_count{model="fraud",role="stable",side="shadow",version="v1"} 3.0',
        "driftline_shadow_abs_difference_sum",
        'driftline_sidecar_info{model="fraud",profile_sha256="",role="stable",version="v1"} 1.0',
    ):
        assert needle in text, needle


# -- a shadow the test holds back: ordering by events, not by timing ------------


class GatedShadow:
    """An in-process shadow that forwards to a real model, but only once released."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.received = 0
        self.answered = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.received += 1
        self.arrived.set()
        body = await request.read()
        await self.release.wait()
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.upstream + request.path_qs, data=body) as response,
        ):
            answer = await response.read()
        self.answered += 1
        return web.Response(body=answer, status=response.status, content_type="application/json")


@asynccontextmanager
async def gated(upstream: str) -> AsyncIterator[tuple[GatedShadow, str]]:
    shadow = GatedShadow(upstream)
    async with serving(web.route("*", "/{tail:.*}", shadow.handle)) as url:
        try:
            yield shadow, url
        finally:
            shadow.release.set()


async def shadow_counts(client: httpx.AsyncClient, sidecar: Sidecar) -> dict[str, Any]:
    return (await client.get(sidecar.admin + "/v1/snapshot")).json()["shadow"]


async def until_compared(client: httpx.AsyncClient, sidecar: Sidecar, compared: int) -> None:
    for _ in range(600):  # up to ~60 s on a loaded machine
        if (await shadow_counts(client, sidecar))["compared"] == compared:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {compared} comparison(s)")


@pytest.mark.asyncio
async def test_the_client_has_its_exact_answer_before_the_shadow_answers(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    body = json.dumps({"f0": 0.3, "f1": -1.2, "f2": 0.7, "f3": 2.0}).encode()
    async with gated(model.url) as (shadow, url), httpx.AsyncClient(timeout=30) as client:
        sidecar = sidecar_factory(model.url, routing=mirroring(url))
        direct = await client.post(model.url + "/predict", content=body)
        served = await client.post(sidecar.proxy + "/predict", content=body)
        # The shadow is held back, so it has not answered: the client did not wait for it.
        assert shadow.answered == 0
        assert served.status_code == direct.status_code == 200
        assert served.content == direct.content  # byte-identical
        assert served.headers["content-type"] == direct.headers["content-type"]

        await asyncio.wait_for(shadow.arrived.wait(), timeout=60)  # the mirror reached it
        counts = await shadow_counts(client, sidecar)
        assert (counts["mirrored"], counts["compared"]) == (1, 0)
        shadow.release.set()

        await until_compared(client, sidecar, 1)
        counts = await shadow_counts(client, sidecar)
        assert (counts["agreed"], counts["shadow_errors"], shadow.answered) == (1, 0, 1)


@pytest.mark.asyncio
async def test_mirrors_over_the_concurrency_bound_are_dropped(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    body = json.dumps({"f0": 1.0}).encode()
    async with gated(model.url) as (shadow, url), httpx.AsyncClient(timeout=30) as client:
        sidecar = sidecar_factory(model.url, routing=mirroring(url, shadow_concurrency=1))
        assert (await client.post(sidecar.proxy + "/predict", content=body)).status_code == 200
        await asyncio.wait_for(shadow.arrived.wait(), timeout=60)  # the one slot is taken
        for _ in range(5):
            assert (await client.post(sidecar.proxy + "/predict", content=body)).status_code == 200
        counts = await shadow_counts(client, sidecar)
        assert (counts["mirrored"], counts["dropped"]) == (1, 5)
        shadow.release.set()

        await until_compared(client, sidecar, 1)
        assert shadow.received == 1
        # The slot is free again: the next request is mirrored.
        assert (await client.post(sidecar.proxy + "/predict", content=body)).status_code == 200
        await until_compared(client, sidecar, 2)
        assert (await shadow_counts(client, sidecar))["dropped"] == 5
