"""One ModelMonitor's analysis loop, minus the timer: collect, window, judge.

``MonitorRunner`` holds what one monitor carries from one interval to the
next (the previous snapshots, the drift window, the previous verdicts) and
the metrics source its spec asks for. The kopf handler calls ``run`` from its
timer, patches ``status`` into the object, upserts ``conditions`` and posts
``events``. No kopf here: the demo and the tests drive it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftline_operator.analysis.explanations import ExplainOutcome, MonitorExplanations
from driftline_operator.analysis.judge import JUDGED_ROLE, DriftWindow, Memory, analyze
from driftline_operator.analysis.metrics import OPERATOR_METRICS, OperatorMetrics
from driftline_operator.analysis.signals import request_count
from driftline_operator.analysis.windows import Window, Windows, WindowTracker
from driftline_operator.api.events import Event
from driftline_operator.api.spec import Metrics, ModelMonitorSpec
from driftline_operator.api.status import Condition
from driftline_operator.sources import MetricsSource, PodTarget
from driftline_operator.sources.factory import make_source
from driftline_operator.stats.attribution import PairedAttributions
from driftline_sidecar.contract.profile import ReferenceProfile

# Fields of status the analysis owns; ``pods`` counts and ``Ready`` belong to
# the reconciler, so only ``pods.unreachable`` goes into the patch.
_STATUS_EXCLUDE: Any = {"conditions": True, "pods": {"selected", "monitored", "not_injected"}}


@dataclass
class AnalysisOutcome:
    status: dict[str, Any]  # a merge patch for .status (camelCase)
    events: list[Event]
    conditions: list[Condition] = field(default_factory=list)  # SLOsMet, DriftDetected
    windows: Windows = field(default_factory=Windows)  # per role and per pod, for rollouts
    attributions: PairedAttributions | None = None  # rows explained against stable and canary


class MonitorRunner:
    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        metrics: OperatorMetrics = OPERATOR_METRICS,
        source_factory: Callable[[Metrics, float], MetricsSource] | None = None,
        previous_status: Mapping[str, Any] | None = None,
        explanations: MonitorExplanations | None = None,
    ) -> None:
        self.namespace = namespace
        self._explanations = explanations
        self.name = name
        self._metrics = metrics
        self._make_source = source_factory or (lambda m, t: make_source(m, timeout=t))
        self._source: MetricsSource | None = None
        self._source_spec: tuple[Metrics, float] | None = None
        self._tracker = WindowTracker()
        self._drift: DriftWindow | None = None
        self._quality: dict[str, DriftWindow] = {}  # labels joined, per role
        self._memory = Memory.from_status(previous_status)
        self._profile_key: str | None = None

    async def run(
        self,
        *,
        spec: ModelMonitorSpec,
        pods: Sequence[PodTarget],
        profile: ReferenceProfile | None,
        profile_sha: str | None = None,
        now: float | None = None,
    ) -> AnalysisOutcome:
        """One interval.

        ``profile_sha`` is the sha256 of the profile document the sidecars were
        given, i.e. ``hashlib.sha256(configmap_value.encode()).hexdigest()``
        (the sidecar hashes the mounted file): counts binned against another
        profile are left out and reported. None accepts what the pods agree on.
        """
        started = time.perf_counter()
        now = time.time() if now is None else now
        source = await self._source_for(spec)
        collection = await source.collect(pods, now=now)
        self._new_profile(profile, profile_sha)
        windows = self._tracker.advance(collection, profile_sha256=profile_sha)
        drift_window = self._drift_window(spec)
        if JUDGED_ROLE in windows.roles:
            drift_window.add(windows.roles[JUDGED_ROLE])
        quality_windows = self._quality_windows(spec, windows)
        problems = {**collection.unreachable, **windows.skipped}
        explained = ExplainOutcome()
        if self._explanations is not None:
            explained = self._explanations.poll(
                spec=spec, pods=pods, profile=profile, profile_key=self._profile_key, now=now
            )
        result = analyze(
            spec=spec,
            windows=windows.roles,
            drift_window=drift_window.merged(),
            profile=profile,
            previous=self._memory,
            now=now,
            unreachable=problems,
            quality_windows=quality_windows,
            attribution_drift=explained.drift,
        )
        self._memory = result.memory
        status = result.status.model_dump(by_alias=True, exclude_none=True, exclude=_STATUS_EXCLUDE)
        conditions = list(result.status.conditions)
        events = list(result.events)
        if explained.status is not None:
            status["explanations"] = explained.status.model_dump(by_alias=True, exclude_none=True)
        if explained.condition is not None:
            conditions.append(explained.condition)
        events += explained.events
        if self._explanations is not None:
            self._metrics.record_attributions(self.namespace, self.name, explained.drift)
        self._metrics.record_analysis(
            self.namespace,
            self.name,
            drift=result.drift,
            slos=result.status.slos,
            requests={role: request_count(w.counts) for role, w in windows.roles.items()},
            data_quality=result.data_quality,
        )
        self._metrics.record_quality(self.namespace, self.name, result.status.quality)
        self._metrics.count_collection_errors(
            self.namespace, self.name, len(collection.unreachable)
        )
        self._metrics.analysis_duration.observe(time.perf_counter() - started)
        return AnalysisOutcome(
            status=status,
            events=events,
            conditions=conditions,
            windows=windows,
            attributions=explained.paired,
        )

    async def close(self, *, forget: bool = True) -> None:
        """Release the source's connections; ``forget`` drops the monitor's series."""
        if self._explanations is not None:
            self._explanations.close()
        if self._source is not None:
            await self._source.close()
            self._source = None
        if forget:
            self._metrics.forget(self.namespace, self.name)

    async def _source_for(self, spec: ModelMonitorSpec) -> MetricsSource:
        wanted = (spec.metrics, spec.analysis.timeout.seconds)
        if self._source is None or wanted != self._source_spec:
            if self._source is not None:
                await self._source.close()
                self._tracker.forget()  # counts from another source do not difference
            self._source = self._make_source(*wanted)
            self._source_spec = wanted
        return self._source

    def _drift_window(self, spec: ModelMonitorSpec) -> DriftWindow:
        seconds = spec.drift.window.seconds
        if self._drift is None or self._drift.seconds != seconds:
            self._drift = DriftWindow(seconds=seconds)
        return self._drift

    def _quality_windows(self, spec: ModelMonitorSpec, windows: Windows) -> dict[str, Window]:
        """Each role's labels over the drift window's span (labels trickle in,
        one interval rarely holds enough)."""
        if spec.quality is None:
            self._quality.clear()
            return {}
        seconds = spec.drift.window.seconds
        for role, window in windows.roles.items():
            ring = self._quality.get(role)
            if ring is None or ring.seconds != seconds:
                ring = self._quality[role] = DriftWindow(seconds=seconds)
            ring.add(window)
        merged = {role: ring.merged() for role, ring in self._quality.items()}
        return {role: window for role, window in merged.items() if window is not None}

    def _new_profile(self, profile: ReferenceProfile | None, sha: str | None) -> None:
        key = None if profile is None else (sha or profile.created_at + profile.source.sha256)
        if key != self._profile_key and self._drift is not None:
            self._drift.clear()  # counts binned for the old profile judge nothing new
        self._profile_key = key
