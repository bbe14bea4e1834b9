"""Collection over real HTTP: crafted snapshot servers (bad pods), real sidecars,
and a real Prometheus scraping real sidecars (mirroring to a real shadow model)
giving the same window."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from yarl import URL

from driftline_operator.analysis.metrics import OperatorMetrics
from driftline_operator.analysis.runner import MonitorRunner
from driftline_operator.analysis.windows import WindowTracker
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.sources import Collection, PodTarget
from driftline_operator.sources.prometheus import PrometheusSource
from driftline_operator.sources.sidecar import SidecarSource
from driftline_sidecar.contract.profile import NumericProfile, ReferenceProfile, SourceInfo
from driftline_sidecar.contract.snapshot import BinCounts, ProcessInfo, Snapshot
from tests._loopback import serving
from tests.component.conftest import (
    ModelServer,
    free_port,
    needs_prometheus,
    running_prometheus,
    wait_until,
)

if TYPE_CHECKING:
    from tests.component.conftest import Sidecar

EDGES = [-1.0, -0.5, 0.0, 0.5, 1.0]
CONFIG = {
    "model": {
        "name": "fraud",
        "version": "v1",
        "protocol": "json",
        "features": [{"name": f"f{i}", "bins": EDGES} for i in range(4)],
        "prediction": {"path": "prediction", "score": "probability"},
    }
}


def crafted(requests: int, *, process: str = "p1", at: float = 100.0) -> Snapshot:
    return Snapshot(
        process=ProcessInfo(id=process, pid=7, start_time=50.0),
        taken_at=at,
        model="fraud",
        version="v1",
        role="stable",
        requests={"200": requests},
        features={"amount": BinCounts(counts=[requests, 0, 0])},
    )


# -- crafted snapshot servers ------------------------------------------------------


class Pods:
    """One aiohttp server per pod, answering whatever ``answers[pod]`` says."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[], web.StreamResponse]] = {}
        self.targets: list[PodTarget] = []
        self._servers = AsyncExitStack()

    async def add(self, name: str, answer: Callable[[], Any]) -> None:
        self.answers[name] = answer

        async def handle(request: web.Request) -> web.StreamResponse:
            result = self.answers[name]()
            return await result if asyncio.iscoroutine(result) else result

        url = await self._servers.enter_async_context(serving(web.get("/v1/snapshot", handle)))
        self.targets.append(PodTarget(name=name, ip="127.0.0.1", admin_port=URL(url).port))

    async def close(self) -> None:
        await self._servers.aclose()


@pytest_asyncio.fixture
async def pods() -> AsyncIterator[Pods]:
    served = Pods()
    try:
        yield served
    finally:
        await served.close()


def json_answer(snapshot: Snapshot) -> Callable[[], web.Response]:
    return lambda: web.Response(body=snapshot.model_dump_json(), content_type="application/json")


async def slow() -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="{}")


@pytest.mark.asyncio
async def test_bad_pods_are_reported_and_the_good_ones_collected(pods: Pods) -> None:
    await pods.add("good", json_answer(crafted(10)))
    await pods.add("garbage", lambda: web.Response(text='{"hello": "world"}'))
    await pods.add("not-json", lambda: web.Response(text="<html>"))
    await pods.add("error", lambda: web.Response(status=503, text="busy"))
    await pods.add("slow", slow)
    gone = PodTarget(name="gone", ip="127.0.0.1", admin_port=free_port())
    source = SidecarSource(timeout=0.5)
    try:
        collection = await source.collect([*pods.targets, gone], now=100.0)
    finally:
        await source.close()
    assert list(collection.snapshots) == ["good"]
    assert collection.snapshots["good"].requests == {"200": 10}
    reasons = collection.unreachable
    assert set(reasons) == {"garbage", "not-json", "error", "slow", "gone"}
    assert "not a snapshot (" in reasons["garbage"]
    assert "not a snapshot" in reasons["not-json"]
    assert "HTTP 503" in reasons["error"]
    assert "did not answer within 0.5s" in reasons["slow"]
    assert "ClientConnectorError" in reasons["gone"]


@pytest.mark.asyncio
async def test_a_restart_between_collections_counts_the_new_process_from_zero(pods: Pods) -> None:
    await pods.add("a", json_answer(crafted(500, at=100.0)))
    await pods.add("b", json_answer(crafted(40, process="q", at=100.0)))
    source, tracker = SidecarSource(timeout=5), WindowTracker()
    try:
        assert tracker.advance(await source.collect(pods.targets, now=100.0)).roles == {}
        pods.answers["a"] = json_answer(crafted(7, process="p2", at=130.0))  # restarted
        pods.answers["b"] = json_answer(crafted(55, process="q", at=130.0))
        windows = tracker.advance(await source.collect(pods.targets, now=130.0))
    finally:
        await source.close()
    stable = windows.roles["stable"]
    assert stable.counts.requests == {"200": 7 + 15}
    assert stable.counts.features["amount"].counts == [22, 0, 0]
    assert stable.pods == 2


# -- real sidecars ---------------------------------------------------------------


def send(sidecar: Sidecar, rows: list[dict[str, float]]) -> None:
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        for row in rows:
            assert client.post("/predict", json=[row]).status_code == 200


def rows(n: int, shift: float = 0.0) -> list[dict[str, float]]:
    return [{f"f{j}": ((i * 7 + j) % 20) / 10 - 1 + shift for j in range(4)} for i in range(n)]


def target(sidecar: Sidecar, name: str) -> PodTarget:
    host, _, port = sidecar.config["admin"].rpartition(":")
    return PodTarget(name=name, ip=host, admin_port=int(port))


def captured(sidecar: Sidecar, records: int) -> None:
    sidecar.wait_records(lambda s: s["capture"]["records"] >= records)


@pytest.fixture
def two_sidecars(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> tuple[Sidecar, Sidecar]:
    return sidecar_factory(model.url, **CONFIG), sidecar_factory(model.url, **CONFIG)


@pytest.mark.asyncio
async def test_sidecar_source_windows_count_exactly_the_traffic_sent(
    two_sidecars: tuple[Sidecar, Sidecar],
) -> None:
    a, b = two_sidecars
    targets = [target(a, "a"), target(b, "b")]
    send(a, rows(5))
    captured(a, 5)
    source, tracker = SidecarSource(timeout=10), WindowTracker()
    try:
        tracker.advance(await source.collect(targets, now=time.time()))  # baselines
        send(a, rows(30))
        send(b, rows(20, shift=0.3))
        captured(a, 35)
        captured(b, 20)
        windows = tracker.advance(await source.collect(targets, now=time.time()))
    finally:
        await source.close()
    stable = windows.roles["stable"]
    assert stable.counts.requests == {"200": 50}
    assert stable.pods == 2
    for j in range(4):
        counts = stable.counts.features[f"f{j}"].counts
        assert sum(counts) == 50
        assert len(counts) == len(EDGES) + 1
    assert sum(stable.counts.latency.counts) == 50


@pytest.mark.asyncio
async def test_monitor_runner_reports_a_real_window_in_status_and_metrics(
    two_sidecars: tuple[Sidecar, Sidecar],
) -> None:
    a, b = two_sidecars
    spec = ModelMonitorSpec.model_validate(
        {
            "selector": {"matchLabels": {"app": "fraud"}},
            "model": {"name": "fraud"},
            "slos": [{"name": "p99", "metric": "latency", "quantile": 0.99, "max": "10ms"}],
        }
    )
    metrics = OperatorMetrics()
    runner = MonitorRunner("ml", "fraud", metrics=metrics)
    targets = [target(a, "a"), target(b, "b"), PodTarget("c", "127.0.0.1", free_port())]
    try:
        first = await runner.run(spec=spec, pods=targets, profile=None)
        assert first.status["pods"]["unreachable"] == ["c"]
        assert ("Warning", "SidecarUnreachable") in [(e.type, e.reason) for e in first.events]
        send(a, rows(40))
        send(b, rows(30))
        captured(a, 40)
        captured(b, 30)
        second = await runner.run(spec=spec, pods=targets[:2], profile=None)
    finally:
        await runner.close(forget=False)
    status = second.status
    assert status["windows"][0]["requests"] == 70
    assert status["pods"]["unreachable"] == []
    assert status["drift"]["status"] == "no_reference"
    [slo] = status["slos"]
    assert slo["name"] == "p99" and slo["verdict"] in ("ok", "breach")
    text = metrics.render().decode()
    assert (
        'driftline_operator_window_requests{monitor="fraud",namespace="ml",role="stable"} 70.0'
        in text
    )
    assert 'driftline_operator_collection_errors_total{monitor="fraud",namespace="ml"} 1.0' in text


# -- a real Prometheus -----------------------------------------------------------


def write_profile(path: Path) -> str:
    """A reference profile binning every feature like CONFIG; its sha256."""
    feature = NumericProfile(
        edges=EDGES, expected=[1 / 6] * 6, min=-2.0, max=2.0, mean=0.0, std=1.0, missing_rate=0.0
    )
    profile = ReferenceProfile(
        created_at="2024-01-01T00:00:00Z",
        source=SourceInfo(path="reference.csv", sha256="0" * 64, rows=600),
        features={f"f{i}": feature for i in range(4)},
    )
    path.write_text(profile.model_dump_json())
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mirroring_sidecars(
    model: ModelServer,
    other_model: ModelServer,
    sidecar_factory: Callable[..., Sidecar],
    tmp_path: Path,
) -> tuple[Sidecar, Sidecar, str]:
    """Two sidecars with a reference profile, mirroring every request to the
    shadow model; and the profile's sha256."""
    sha = write_profile(tmp_path / "reference.json")
    routing = {
        "shadow_url": other_model.url,
        "shadow_percent": 100,
        "shadow_concurrency": 1000,  # sequential clients: never reached, so counts are exact
    }
    options = {**CONFIG, "routing": routing, "profile_path": str(tmp_path / "reference.json")}
    return sidecar_factory(model.url, **options), sidecar_factory(model.url, **options), sha


@pytest.fixture
def prometheus(tmp_path: Path, mirroring_sidecars: tuple[Sidecar, Sidecar, str]) -> Iterator[str]:
    with running_prometheus(tmp_path, [s.config["admin"] for s in mirroring_sidecars[:2]]) as url:
        yield url


def settled(sidecar: Sidecar, requests: int) -> None:
    """Wait until every request is captured and its mirror has an outcome, so a
    scrape from now on holds the same counts as a snapshot."""
    sidecar.wait_records(
        lambda s: (
            s["capture"]["records"] >= requests
            and s["shadow"]["mirrored"] == requests
            and s["shadow"]["compared"] + s["shadow"]["shadow_errors"] >= requests
        )
    )


def scraped_after(url: str, moment: float, instances: list[str]) -> None:
    """Wait until Prometheus has a scrape of every instance newer than ``moment``."""

    def fresh() -> bool:
        answer = httpx.get(
            url + "/api/v1/query", params={"query": "timestamp(up)"}, timeout=5
        ).json()
        times = {s["metric"]["instance"]: float(s["value"][1]) for s in answer["data"]["result"]}
        return all(times.get(i, 0.0) > moment for i in instances)

    wait_until(fresh, timeout=90, what="a Prometheus scrape after the traffic")


@pytest.mark.prometheus
@pytest.mark.asyncio
@needs_prometheus
async def test_prometheus_source_gives_the_same_window_as_the_sidecars(
    mirroring_sidecars: tuple[Sidecar, Sidecar, str], prometheus: str
) -> None:
    a, b, profile_sha256 = mirroring_sidecars
    targets = [target(a, "a"), target(b, "b")]
    instances = [t.address for t in targets]
    send(a, rows(3))  # every series exists before the baseline
    send(b, rows(3))
    settled(a, 3)
    settled(b, 3)
    sidecars, scraped = SidecarSource(timeout=10), PrometheusSource(prometheus, timeout=10)
    by_sidecar, by_prometheus = WindowTracker(), WindowTracker()
    try:
        assert await scraped.is_online()
        scraped_after(prometheus, time.time(), instances)
        baseline: list[Collection] = [
            await sidecars.collect(targets, now=time.time()),
            await scraped.collect(targets, now=time.time()),
        ]
        assert not baseline[1].unreachable, baseline[1].unreachable
        by_sidecar.advance(baseline[0])
        by_prometheus.advance(baseline[1])

        send(a, rows(40, shift=0.2))
        send(b, rows(25, shift=-0.4))
        settled(a, 43)
        settled(b, 28)
        scraped_after(prometheus, time.time(), instances)
        last = [
            await sidecars.collect(targets, now=time.time()),
            await scraped.collect(targets, now=time.time()),
        ]
        from_sidecar = by_sidecar.advance(last[0])
        from_prometheus = by_prometheus.advance(last[1])
    finally:
        await sidecars.close()
        await scraped.close()
    expected = from_sidecar.roles["stable"].counts
    got = from_prometheus.roles["stable"].counts
    assert expected.requests == {"200": 65}
    assert got.requests == expected.requests
    assert got.features == expected.features
    assert got.prediction == expected.prediction
    assert got.latency.counts == expected.latency.counts
    assert got.latency.bounds == expected.latency.bounds
    assert got.capture == expected.capture
    assert got.classes == expected.classes
    assert from_prometheus.roles["stable"].pods == 2

    # The shadow comparison: every request mirrored and compared, the other
    # weights disagreeing on some; Prometheus gives exactly the same counts.
    shadow = expected.shadow
    assert (shadow.mirrored, shadow.compared, shadow.dropped) == (65, 65, 0)
    assert 0 < shadow.agreed < shadow.compared
    assert shadow.stable_latency.count == 65 and shadow.shadow_latency.count == 65
    assert got.shadow == shadow
    for pod in ("a", "b"):
        assert last[1].snapshots[pod].shadow == last[0].snapshots[pod].shadow

    # Both read the reference profile the bins come from.
    for collection in last:
        assert {s.profile_sha256 for s in collection.snapshots.values()} == {profile_sha256}
    assert got.profile_sha256 == expected.profile_sha256 == profile_sha256
