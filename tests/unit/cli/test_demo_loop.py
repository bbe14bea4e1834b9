"""The demo's canary loop on snapshots built in memory: it windows, compares,
decides and takes the actions in order, and at weight 100 % judges the canary
against stable's last full window (stable serves nothing then)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from driftline_operator.api.spec import Rollout
from driftline_operator.cli.demo.loop import CanaryLoop
from driftline_operator.rollout.machine import (
    Action,
    PromoteCanary,
    ScaleCanaryToZero,
    SetWeight,
    StartCanary,
)
from driftline_operator.sources import Collection, PodTarget
from driftline_sidecar.contract.snapshot import BinCounts, Histogram, ProcessInfo, Snapshot

SPEC = Rollout.model_validate(
    {
        "strategy": "canary",
        "stableRef": {"name": "v1"},
        "canaryRef": {"name": "v2"},
        "canaryService": {"name": "v2"},
        "steps": [50, 100],
        "interval": "10s",
    }
)
TARGETS = [
    PodTarget("stable", "127.0.0.1", 1, "stable"),
    PodTarget("canary", "127.0.0.1", 2, "canary"),
]
SCORES = [10, 20, 40, 20, 10]  # one window's prediction counts per 100 requests


class CountingSource:
    """Cumulative snapshots that grow by what the test says each role served."""

    def __init__(self) -> None:
        self.served = {"stable": 0, "canary": 0}
        self.errors = {"stable": 0, "canary": 0}

    def serve(self, role: str, requests: int, *, errors: int = 0) -> None:
        self.served[role] += requests
        self.errors[role] += errors

    def _snapshot(self, role: str, now: float) -> Snapshot:
        n, e = self.served[role], self.errors[role]
        latency = Histogram()
        latency.counts[2] = n  # every request in the same fast bucket
        return Snapshot(
            process=ProcessInfo(id=role, pid=1, start_time=0.0),
            taken_at=now,
            model="demo",
            version="v1",
            role=role,  # type: ignore[arg-type]
            requests={"200": n - e, "500": e},
            latency=latency,
            prediction=BinCounts(counts=[c * n // 100 for c in SCORES]),
        )

    async def collect(self, targets: Sequence[PodTarget], *, now: float) -> Collection:
        collection = Collection(taken_at=now)
        for target in targets:
            collection.snapshots[target.name] = self._snapshot(target.role, now)
        return collection

    async def is_online(self) -> bool:
        return True

    async def close(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.taken: list[Action] = []

    async def take(self, action: Action) -> None:
        self.taken.append(action)


def _loop() -> tuple[CanaryLoop, CountingSource, Recorder]:
    source, recorder = CountingSource(), Recorder()
    loop = CanaryLoop(spec=SPEC, slos=[], source=source, targets=TARGETS, actions=recorder)
    return loop, source, recorder


@pytest.mark.asyncio
async def test_healthy_canary_walks_the_steps_and_is_promoted() -> None:
    loop, source, recorder = _loop()
    first = await loop.tick(now=0.0, canary_revision="b", stable_revision="a")
    assert first.decision.event is not None and first.decision.event.reason == "RolloutStarted"
    assert recorder.taken == [StartCanary(), SetWeight(50.0)]

    source.serve("stable", 500)
    source.serve("canary", 500)
    second = await loop.tick(now=10.0, canary_revision="b", stable_revision="a")
    assert second.verdict is not None and second.verdict.verdict == "ok"
    assert second.state.weight == 100.0 and recorder.taken[-1] == SetWeight(100.0)

    source.serve("canary", 1000)  # at 100 % stable serves nothing
    third = await loop.tick(now=20.0, canary_revision="b", stable_revision="a")
    assert third.stable_is_last_full_window
    assert third.verdict is not None and third.verdict.stable_requests == 500
    assert third.state.phase == "Succeeded" and loop.finished
    assert recorder.taken[-3:] == [PromoteCanary(), SetWeight(0.0), ScaleCanaryToZero()]


@pytest.mark.asyncio
async def test_an_empty_stable_window_below_100_percent_is_not_replaced() -> None:
    loop, source, _ = _loop()
    await loop.tick(now=0.0, canary_revision="b", stable_revision="a")
    source.serve("stable", 500)
    source.serve("canary", 500)
    await loop.tick(now=5.0, canary_revision="b", stable_revision="a")  # held: not 10s yet
    source.serve("canary", 500)
    held = await loop.tick(now=8.0, canary_revision="b", stable_revision="a")
    assert not held.stable_is_last_full_window
    assert held.verdict is not None and held.verdict.verdict == "insufficient_data"
    assert held.state.weight == 50.0


@pytest.mark.asyncio
async def test_failing_canary_is_rolled_back_after_the_failure_limit() -> None:
    loop, source, recorder = _loop()
    await loop.tick(now=0.0, canary_revision="b", stable_revision="a")
    for now in (10.0, 20.0):
        source.serve("stable", 500)
        source.serve("canary", 500, errors=100)
        tick = await loop.tick(now=now, canary_revision="b", stable_revision="a")
    assert tick.state.phase == "Failed"
    assert tick.decision.event is not None and tick.decision.event.reason == "RolledBack"
    assert "errorRate" in tick.decision.event.message
    assert recorder.taken[-2:] == [SetWeight(0.0), ScaleCanaryToZero()]
