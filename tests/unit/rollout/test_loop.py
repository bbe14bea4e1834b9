"""The operator's rollout loop on snapshots built in memory, with workloads
that record what they are asked to do: it windows, compares, decides and
takes the actions in order, at weight 100 % judges the canary against
stable's last full window, and keeps a decision whose actions failed."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from driftline_operator.analysis.windows import WindowTracker
from driftline_operator.api.spec import ModelMonitorSpec, Quality
from driftline_operator.rollout.loop import Revision, RolloutLoop, RolloutOutcome, state_of
from driftline_operator.rollout.machine import (
    Action,
    ActionError,
    PromoteCanary,
    RolloutState,
    ScaleCanaryToZero,
    SetWeight,
    StartCanary,
)
from driftline_operator.rollout.routers import Router, RouteTarget
from driftline_operator.sources import Collection, PodTarget
from driftline_operator.stats.attribution import AttributionReference, PairedAttributions
from driftline_sidecar.contract.snapshot import (
    BinCounts,
    Histogram,
    ProcessInfo,
    QualityCounts,
    Snapshot,
)

SPEC = ModelMonitorSpec.model_validate(
    {
        "selector": {"matchLabels": {"app": "m"}},
        "model": {"name": "m"},
        "rollout": {
            "strategy": "canary",
            "stableRef": {"name": "v1"},
            "canaryRef": {"name": "v2"},
            "canaryService": {"name": "v2"},
            "steps": [50, 100],
            "interval": "10s",
        },
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
        self.labelled = {"stable": (0, 0), "canary": (0, 0)}  # (right, wrong), all "ok"

    def serve(self, role: str, requests: int, *, errors: int = 0) -> None:
        self.served[role] += requests
        self.errors[role] += errors

    def label(self, role: str, *, right: int, wrong: int) -> None:
        before = self.labelled[role]
        self.labelled[role] = (before[0] + right, before[1] + wrong)

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
            quality={
                "": QualityCounts(
                    confusion={"ok": dict(zip(("ok", "fraud"), self.labelled[role], strict=True))}
                )
            },
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


class RecordingWorkloads:
    """`Workloads` that record the actions; `failing` makes the next carry_out fail."""

    def __init__(self) -> None:
        self.taken: list[Action] = []
        self.failing = False

    def router(self, name: str) -> Router:
        return _NoRouter()  # the weights are actions, recorded by carry_out

    async def revision(self, name: str) -> str:
        return {"v1": "a", "v2": "b"}[name]

    async def revisions(self, name: str) -> list[Revision]:
        return []

    async def owner(self, pods: Sequence[Mapping[str, Any]], *, who: str) -> str:
        return "v1"

    async def carry_out(
        self,
        actions: Sequence[Action],
        *,
        router: Router | None,
        target: RouteTarget,
        deployment: str | None = None,
    ) -> None:
        if self.failing:
            self.failing = False
            raise ActionError("the API server is away")
        self.taken.extend(actions)


class Harness:
    """The loop with a ModelMonitor held in memory, as the API would hold it."""

    def __init__(self) -> None:
        self.source = CountingSource()
        self.workloads = RecordingWorkloads()
        self.tracker = WindowTracker()
        self.monitor: dict[str, Any] = {"metadata": {}, "status": {}}
        self.loop = self.start()

    def start(self) -> RolloutLoop:
        """A loop as a (re)started operator makes it: nothing but the monitor."""
        return RolloutLoop(
            workloads=self.workloads,
            record=self.record,
            namespace="ml",
            name="m",
            admin_token=None,
            logger=logging.getLogger("test"),
        )

    async def record(self, fields: Mapping[str, Any]) -> None:
        self.monitor["status"].update(fields)

    async def tick(
        self,
        now: float,
        *,
        spec: ModelMonitorSpec = SPEC,
        attributions: PairedAttributions | None = None,
    ) -> RolloutOutcome:
        windows = self.tracker.advance(await self.source.collect(TARGETS, now=now))
        outcome = await self.loop.tick(
            spec=spec,
            monitor=self.monitor,
            pods=[],
            windows=windows,
            now=now,
            attributions=attributions,
        )
        self.monitor["status"].update(outcome.status)
        return outcome

    @property
    def state(self) -> RolloutState:
        return state_of(self.monitor)


class _NoRouter:
    async def set_weight(self, target: RouteTarget, weight: float) -> None: ...

    async def get_weight(self, target: RouteTarget) -> float:
        return 0.0

    async def finalize(self, target: RouteTarget) -> None: ...


@pytest.mark.asyncio
async def test_healthy_canary_walks_the_steps_and_is_promoted() -> None:
    h = Harness()
    first = await h.tick(0.0)
    assert first.decision is not None and first.decision.event is not None
    assert first.decision.event.reason == "RolloutStarted"
    assert h.workloads.taken == [StartCanary(), SetWeight(50.0)]

    h.source.serve("stable", 500)
    h.source.serve("canary", 500)
    second = await h.tick(10.0)
    assert second.verdict is not None and second.verdict.verdict == "ok"
    assert h.state.weight == 100.0 and h.workloads.taken[-1] == SetWeight(100.0)

    h.source.serve("canary", 1000)  # at 100 % stable serves nothing
    third = await h.tick(20.0)
    assert third.baseline_substituted
    assert third.verdict is not None and third.verdict.stable_requests == 500
    assert h.state.phase == "Succeeded"
    assert h.workloads.taken[-3:] == [PromoteCanary(), SetWeight(0.0), ScaleCanaryToZero()]


@pytest.mark.asyncio
async def test_labels_counted_before_a_restart_still_count_after_it() -> None:
    spec = SPEC.model_copy(update={"quality": Quality(classes=["ok", "fraud"], min_labels=100)})
    h = Harness()
    await h.tick(0.0, spec=spec)
    for now in (10.0, 20.0):  # 40 labels a side per interval; minLabels is 100
        h.source.serve("stable", 500)
        h.source.serve("canary", 500)
        h.source.label("stable", right=38, wrong=2)
        h.source.label("canary", right=28, wrong=12)
        held = await h.tick(now, spec=spec)
        assert held.verdict is not None and held.verdict.reason.startswith("InsufficientLabels")
    kept = h.monitor["status"]["rollout"]["labelled"]
    assert '"features"' not in kept  # per-feature bins are not what labels are judged on

    h.loop, h.tracker = h.start(), WindowTracker()  # the operator restarts
    await h.tick(25.0, spec=spec)  # a restarted operator's first look is no window
    h.source.serve("stable", 500)
    h.source.serve("canary", 500)
    h.source.label("stable", right=38, wrong=2)
    h.source.label("canary", right=28, wrong=12)
    judged = await h.tick(35.0, spec=spec)

    # 120 labels a side, as without the restart: 95 % against 70 %.
    assert judged.verdict is not None and judged.verdict.verdict == "fail"
    accuracy = next(c for c in judged.verdict.checks if c.name == "accuracy")
    assert accuracy.stable == pytest.approx(114 / 120)
    assert accuracy.candidate == pytest.approx(84 / 120)


@pytest.mark.asyncio
async def test_a_canary_without_labels_keeps_no_sums_in_status() -> None:
    h = Harness()
    await h.tick(0.0)
    h.source.serve("stable", 500)
    h.source.serve("canary", 500)
    await h.tick(10.0)
    assert h.state.phase == "Progressing"
    assert h.monitor["status"]["rollout"]["labelled"] is None


@pytest.mark.asyncio
async def test_a_status_that_does_not_read_is_logged_and_the_rollout_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = SPEC.model_copy(update={"quality": Quality(classes=["ok", "fraud"], min_labels=100)})
    h = Harness()
    await h.tick(0.0, spec=spec)
    h.monitor["status"]["rollout"]["labelled"] = "{not json"
    h.monitor["status"]["rollout"]["baseline"] = '{"requests": "many"}'
    h.loop = h.start()  # a restarted operator reads both
    h.source.serve("stable", 500)
    h.source.serve("canary", 500)
    h.source.label("stable", right=38, wrong=2)
    h.source.label("canary", right=28, wrong=12)
    with caplog.at_level("WARNING", logger="test"):
        held = await h.tick(10.0, spec=spec)

    # Summed anew from this window: 40 labels a side, not an exception.
    assert held.verdict is not None and held.verdict.reason.startswith("InsufficientLabels")
    assert "stable 40, canary 40" in held.verdict.reason
    warned = [r.getMessage() for r in caplog.records]
    assert any("status.rollout.labelled does not read" in m for m in warned)
    assert any("status.rollout.baseline does not read" in m for m in warned)
    assert '"canary"' in h.monitor["status"]["rollout"]["labelled"]  # written afresh


@pytest.mark.asyncio
async def test_an_empty_stable_window_below_100_percent_is_not_replaced() -> None:
    h = Harness()
    await h.tick(0.0)
    h.source.serve("stable", 500)
    h.source.serve("canary", 500)
    await h.tick(5.0)  # held: not 10s yet
    h.source.serve("canary", 500)
    held = await h.tick(8.0)
    assert not held.baseline_substituted
    assert held.verdict is not None and held.verdict.verdict == "insufficient_data"
    assert h.state.weight == 50.0


@pytest.mark.asyncio
async def test_failing_canary_is_rolled_back_after_the_failure_limit() -> None:
    h = Harness()
    await h.tick(0.0)
    for now in (10.0, 20.0):
        h.source.serve("stable", 500)
        h.source.serve("canary", 500, errors=100)
        tick = await h.tick(now)
    assert h.state.phase == "Failed"
    assert tick.decision is not None and tick.decision.event is not None
    assert tick.decision.event.reason == "RolledBack"
    assert "errorRate" in tick.decision.event.message
    assert h.workloads.taken[-2:] == [SetWeight(0.0), ScaleCanaryToZero()]


@pytest.mark.asyncio
async def test_a_decision_whose_actions_failed_stays_pending_and_is_retried() -> None:
    h = Harness()
    h.workloads.failing = True
    failed = await h.tick(0.0)
    assert failed.status == {}  # nothing confirmed; the record says what is pending
    assert h.state.phase == "Progressing"
    assert h.state.pending is not None
    assert h.state.pending.actions == (StartCanary(), SetWeight(50.0))
    assert [(e.type, e.reason) for e in failed.events] == [("Warning", "RolloutError")]
    assert "the API server is away" in failed.events[0].message
    retried = await h.tick(1.0)
    assert retried.decision is not None and retried.decision.event is not None
    assert retried.decision.event.reason == "RolloutStarted"
    assert h.workloads.taken == [StartCanary(), SetWeight(50.0)]
    assert h.state.pending is None and h.state.step_started_at == 0.0


@pytest.mark.asyncio
async def test_a_held_step_reasserts_its_weight_every_tick() -> None:
    h = Harness()
    await h.tick(0.0)
    held = await h.tick(5.0)  # no traffic yet: nothing to decide on
    assert held.verdict is not None and held.verdict.verdict == "insufficient_data"
    assert h.workloads.taken == [StartCanary(), SetWeight(50.0), SetWeight(50.0)]


# The same rows explained against both models: stable leans on a, the canary on c.
RELIANCE_SPEC = ModelMonitorSpec.model_validate(
    {
        **SPEC.model_dump(by_alias=True, exclude_none=True),
        "reference": {"configMapRef": {"name": "m-reference"}},
        "explain": {"enabled": True, "minExplanations": 10},
        "rollout": {
            **SPEC.rollout.model_dump(by_alias=True, exclude_none=True),
            "comparison": {"maxAttributionDistance": 0.2},
        },
    }
)


def reliance(rows: int) -> PairedAttributions:
    reference = AttributionReference.from_values(["a", "b", "c"], [[3.0, 1.0, 0.1]] * 4)
    pairs = PairedAttributions.empty(reference)
    pairs.add([[3.0, 1.0, 0.1]] * rows, [[0.1, 1.0, 3.0]] * rows)
    return pairs


@pytest.mark.asyncio
async def test_a_canary_relying_on_other_features_waits_for_explanations_then_rolls_back() -> None:
    h = Harness()
    await h.tick(0.0, spec=RELIANCE_SPEC)
    h.source.serve("stable", 500)
    h.source.serve("canary", 500)
    waiting = await h.tick(10.0, spec=RELIANCE_SPEC, attributions=reliance(3))
    assert waiting.verdict is not None and waiting.verdict.verdict == "insufficient_data"
    assert waiting.verdict.reason.startswith("InsufficientExplanations:")
    assert h.state.weight == 50.0 and h.state.failures == 0
    for now in (20.0, 30.0):
        h.source.serve("stable", 500)
        h.source.serve("canary", 500)
        tick = await h.tick(now, spec=RELIANCE_SPEC, attributions=reliance(12))
    assert h.state.phase == "Failed"
    assert tick.decision is not None and tick.decision.event is not None
    assert tick.decision.event.reason == "RolledBack"
    assert "attributions: reliance: total variation" in tick.decision.event.message
    assert h.workloads.taken[-2:] == [SetWeight(0.0), ScaleCanaryToZero()]
