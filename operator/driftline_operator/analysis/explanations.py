"""One monitor's explanations each interval: what its model relies on, and whether that moved.

Each interval the stable pods' sidecars are asked for their reservoir (a
uniform sample of recent rows, ``GET /v1/reservoir`` with the monitor's admin
token); the rows of each newly closed reservoir window are explained, within
the budgets, in the operator's worker processes (``explain.worker``), by
asking the pod's model container itself. The attributions are counted into
the drift window and judged against the reference attributions: the
profile's background explained against itself, once per profile.

With ``spec.rollout.comparison.maxAttributionDistance`` on a canary, every
explained row is explained again against a canary pod's model: the pairs
(``PairedAttributions``, over the drift window) are what the canary verdict
compares. The canary pods' reservoirs are read too, their rows explained
against both: at weight 100 % stable's own reservoir is empty.

Whatever goes wrong here (no background, the model down, rejecting batches,
answering a shape nobody reads) is the ExplanationsAvailable condition's
reason; the monitor's other verdicts never wait on it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import aiohttp
import numpy as np
from pydantic import ValidationError

from driftline_operator.api.events import Event
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.api.status import (
    EXPLANATIONS_AVAILABLE,
    CanaryAttributionsStatus,
    CanaryFeatureStatus,
    Condition,
    ConditionStatus,
    ExplanationsStatus,
    FeatureAttributionStatus,
    condition,
)
from driftline_operator.explain.background import BackgroundError, Columns, from_profile
from driftline_operator.explain.model import default_path
from driftline_operator.explain.worker import SKIPPED_BUDGET, ExplanationPool, Job, JobResult
from driftline_operator.sources import PodTarget
from driftline_operator.stats.attribution import (
    AttributionCounts,
    AttributionDrift,
    AttributionReference,
    PairedAttributions,
    attribution_drift,
)
from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig
from driftline_sidecar.contract.profile import ReferenceProfile
from driftline_sidecar.contract.reservoir import ReservoirDocument
from driftline_sidecar.protocols import Detected

NO_REFERENCE = "NoReferenceProfile"
NO_BACKGROUND = "NoBackground"
NO_PODS = "NoModelPods"
EXPLAINED = "Explained"
_Side = Literal["only", "stable", "canary"]  # whose model, and whether a canary shares the budget
STATUS_VERDICTS = {"ok": "ok", "drifted": "drift", "insufficient data": "insufficient_data"}


@dataclass
class ExplainOutcome:
    status: ExplanationsStatus | None = None
    condition: Condition | None = None
    events: list[Event] = field(default_factory=list)
    drift: AttributionDrift | None = None
    paired: PairedAttributions | None = None  # explained against stable and the canary


@dataclass
class _Reference:
    key: str
    columns: Columns
    background: np.ndarray
    attributions: AttributionReference | None = None  # None until explained


class MonitorExplanations:
    """What one monitor's explanations keep between intervals."""

    def __init__(
        self,
        monitor: str,
        *,
        pool: Callable[[], ExplanationPool],
        admin_token: str | None,
    ) -> None:
        self._monitor = monitor
        self._pool = pool
        self._token = admin_token
        self._reference: _Reference | None = None
        self._ring: deque[tuple[float, AttributionCounts]] = deque()
        self._pairs: deque[tuple[float, PairedAttributions]] = deque()
        self._canaries: set[str] = set()  # the canary pods the pairs were explained on
        self._seen: dict[str, float] = {}  # pod -> start of the last reservoir window explained
        self._verdict: str | None = None
        self._condition: Condition | None = None
        self._task: asyncio.Task[ExplainOutcome] | None = None
        self._last = ExplainOutcome()

    def poll(
        self,
        *,
        spec: ModelMonitorSpec,
        pods: Sequence[PodTarget],
        profile: ReferenceProfile | None,
        profile_key: str | None,
        now: float,
    ) -> ExplainOutcome:
        """The last finished run's outcome (its Events once), and the next run
        started in the background: explaining takes seconds (the first reference
        tens of them, while workers start), and the monitor's verdicts never wait."""
        if not spec.explain.enabled:
            self.close()
            self._reset()
            self._last = ExplainOutcome()
            return self._last
        task = self._task
        if task is not None and task.done():
            self._task = None
            error = task.exception()
            if error is None:
                self._last = task.result()
            else:
                reason, message = "ExplainerFailed", f"{type(error).__name__}: {error}"
                self._last = ExplainOutcome(condition=self._set("False", reason, message))
        if self._task is None:
            self._task = asyncio.create_task(
                self.run(spec=spec, pods=pods, profile=profile, profile_key=profile_key, now=now)
            )
        events, self._last.events = self._last.events, []
        return replace(self._last, events=events)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def run(
        self,
        *,
        spec: ModelMonitorSpec,
        pods: Sequence[PodTarget],
        profile: ReferenceProfile | None,
        profile_key: str | None,
        now: float,
    ) -> ExplainOutcome:
        if not spec.explain.enabled:
            self._reset()
            return ExplainOutcome()
        if profile is None:
            return self._unavailable(NO_REFERENCE, "no reference profile to explain against")
        reference = self._reference_for(spec, profile, profile_key)
        if isinstance(reference, str):
            return self._unavailable(NO_BACKGROUND, reference)
        stable = [p for p in pods if p.role == "stable" and p.model_port is not None]
        if not stable:
            return self._unavailable(NO_PODS, "no running stable pod with a model port to ask")
        canaries = self._canaries_to_pair(spec, pods)
        readers = stable + canaries
        timeout = spec.analysis.timeout.seconds
        documents = await asyncio.gather(*(self._reservoir(p, timeout) for p in readers))
        failure: JobResult | None = None
        if reference.attributions is None:
            pod, document = next(
                ((p, d) for p, d in zip(stable, documents, strict=False) if d is not None),
                (stable[0], None),
            )
            protocol = _protocol(spec, document)
            if protocol is None:  # nothing seen yet to tell the protocol by
                return self._judge(spec, reference, now, None)
            result = await self._pool().explain_all(
                self._job(spec, reference, pod, protocol, reference.background.tolist())
            )
            if result.failure is not None:
                return self._judge(spec, reference, now, result)
            reference.attributions = AttributionReference.from_values(
                reference.columns.names, np.asarray(result.values)
            )
        window = reference.attributions.empty()
        paired = PairedAttributions.empty(reference.attributions)
        for pod, document in zip(readers, documents, strict=True):
            closed = document.previous if document is not None else None
            if closed is None or not closed.rows or self._seen.get(pod.name) == closed.start:
                continue
            protocol = _protocol(spec, document)
            if protocol is None or closed.features != reference.columns.names:
                continue
            self._seen[pod.name] = closed.start
            # A canary pod's rows are explained by a stable pod's model.
            model = pod if pod.role == "stable" else stable[0]
            side: _Side = "stable" if canaries else "only"
            result = await self._explain(spec, reference, model, protocol, closed.rows, side=side)
            failure = result if _failed(result) else failure
            if result.values and pod.role == "stable":
                window.add(np.asarray(result.values))
            if result.values and canaries:
                candidate = pod if pod.role == "canary" else canaries[0]
                rows = closed.rows[: result.explained]
                again = await self._explain(
                    spec, reference, candidate, protocol, rows, side="canary"
                )
                failure = again if _failed(again) else failure
                if again.values:  # the budget may have cut it: pair what both explained
                    n = again.explained
                    paired.add(np.asarray(result.values[:n]), np.asarray(again.values))
        horizon = now - spec.drift.window.seconds
        self._ring.append((now, window))
        while self._ring and self._ring[0][0] <= horizon:
            self._ring.popleft()
        outcome = self._judge(spec, reference, now, failure)
        if canaries:
            self._pairs.append((now, paired))
            while self._pairs and self._pairs[0][0] <= horizon:
                self._pairs.popleft()
            outcome.paired = PairedAttributions.empty(reference.attributions)
            for _, pairs in self._pairs:
                outcome.paired = outcome.paired.merge(pairs)
            if outcome.status is not None:
                outcome.status.canary = canary_status(spec, outcome.paired)
        return outcome

    def _canaries_to_pair(
        self, spec: ModelMonitorSpec, pods: Sequence[PodTarget]
    ) -> list[PodTarget]:
        """The canary pods to explain rows against as well; none unless the
        canary's comparison asks. Pairs explained on pods none of which runs
        any more were another candidate's: they are dropped."""
        rollout = spec.rollout
        if rollout.strategy != "canary" or rollout.comparison.max_attribution_distance is None:
            self._pairs.clear()
            return []
        canaries = [p for p in pods if p.role == "canary" and p.model_port is not None]
        names = {p.name for p in canaries}
        if not names & self._canaries:
            self._pairs.clear()
        self._canaries = names
        return canaries

    async def _explain(
        self,
        spec: ModelMonitorSpec,
        reference: _Reference,
        pod: PodTarget,
        protocol: Detected,
        rows: list[list[Any]],
        *,
        side: _Side,
    ) -> JobResult:
        """Within the monitor's budget; while rows are also explained against
        the canary, each side has half of it, so neither starves the other."""
        per_minute = spec.explain.explanations_per_minute / (1 if side == "only" else 2)
        return await self._pool().explain(
            self._monitor + ("/canary" if side == "canary" else ""),
            self._job(spec, reference, pod, protocol, rows),
            per_minute=per_minute,
        )

    def forget(self) -> None:
        self._reset()
        self._verdict = None

    def _reset(self) -> None:
        self._reference = None
        self._ring.clear()
        self._pairs.clear()
        self._seen.clear()
        self._condition = None

    def _reference_for(
        self, spec: ModelMonitorSpec, profile: ReferenceProfile, key: str | None
    ) -> _Reference | str:
        features = [
            FeatureConfig(name=f.name, path=f.path, type=f.type, pii=f.pii)
            for f in spec.model.features
        ]
        key = f"{key or profile.created_at}/{[f.model_dump() for f in features]}"
        if self._reference is None or self._reference.key != key:
            try:
                columns, background = from_profile(profile, features)
            except BackgroundError as error:
                return str(error)
            self._reference = _Reference(key, columns, background)
            self._ring.clear()  # attributions against another reference do not compare
            self._pairs.clear()
        return self._reference

    def _job(
        self,
        spec: ModelMonitorSpec,
        reference: _Reference,
        pod: PodTarget,
        protocol: Detected,
        rows: list[list[Any]],
    ) -> Job:
        prediction = spec.model.prediction
        return Job(
            url=f"http://{pod.model_host}:{pod.model_port}"
            + default_path(protocol, spec.model.name),
            protocol=protocol,
            columns=reference.columns,
            prediction=PredictionConfig(
                path=prediction.path, score=prediction.score, task=prediction.task
            ),
            background=reference.background,
            rows=rows,
            timeout_seconds=spec.explain.timeout.seconds,
        )

    async def _reservoir(self, pod: PodTarget, timeout: float) -> ReservoirDocument | None:
        headers = {"authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://{pod.address}/v1/reservoir",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response,
            ):
                if response.status != 200:
                    return None
                return ReservoirDocument.model_validate(await response.json())
        except (aiohttp.ClientError, TimeoutError, ValidationError, ValueError):
            return None  # the pod's collection reports it; explanations wait for it

    def _judge(
        self,
        spec: ModelMonitorSpec,
        reference: _Reference,
        now: float,
        failure: JobResult | None,
    ) -> ExplainOutcome:
        outcome = ExplainOutcome()
        if failure is not None:
            outcome.condition = self._set("False", failure.failure or "", failure.message)
        if reference.attributions is None:
            if failure is None:
                outcome.condition = self._set(
                    "False", "Waiting", "no rows seen yet to learn the model's protocol from"
                )
            return outcome
        merged = reference.attributions.empty()
        for _, counts in self._ring:
            merged = merged.merge(counts)
        drift = attribution_drift(
            reference.attributions,
            merged,
            threshold=spec.explain.threshold,
            min_explanations=spec.explain.min_explanations,
        )
        outcome.drift = drift
        ranked = sorted(drift.features.items(), key=lambda item: -item[1].current_share)
        outcome.status = ExplanationsStatus(
            status=STATUS_VERDICTS[drift.verdict],  # type: ignore[arg-type]
            explained=drift.explained,
            distance=drift.distance,
            threshold=spec.explain.threshold,
            top_features=[
                FeatureAttributionStatus(
                    name=name, share=f.current_share, reference_share=f.reference_share
                )
                for name, f in ranked[:5]
            ]
            if drift.explained
            else [],
            reference_top=drift.top_reference,
        )
        if failure is None:
            outcome.condition = self._set(
                "True", EXPLAINED, f"{drift.explained} rows explained in the drift window"
            )
        outcome.events = self._events(drift)
        return outcome

    def _events(self, drift: AttributionDrift) -> list[Event]:
        previous = self._verdict
        if drift.verdict != "insufficient data":  # a thin window leaves the verdict standing
            self._verdict = drift.verdict
        return verdict_events(previous, drift)

    def _unavailable(self, reason: str, message: str) -> ExplainOutcome:
        return ExplainOutcome(condition=self._set("False", reason, message))

    def _set(self, status: ConditionStatus, reason: str, message: str) -> Condition:
        self._condition = condition(
            EXPLANATIONS_AVAILABLE,
            status,
            reason=reason,
            message=message,
            previous=self._condition,
        )
        return self._condition


def verdict_events(previous: str | None, drift: AttributionDrift) -> list[Event]:
    """A Warning when attributions drift, a Normal Event when they are back; none
    while the verdict holds or the data is too thin to say."""
    if drift.verdict == previous or drift.verdict == "insufficient data":
        return []
    if drift.verdict == "drifted":
        return [
            Event(
                "Warning",
                "AttributionDrifted",
                f"the model relies on other features: distance {drift.distance:.3f}, "
                f"top {', '.join(drift.top_current)} (reference "
                f"{', '.join(drift.top_reference)}), {drift.explained} rows explained",
            )
        ]
    if previous == "drifted":
        return [Event("Normal", "AttributionDriftResolved", "attributions are back in line")]
    return []


def canary_status(spec: ModelMonitorSpec, paired: PairedAttributions) -> CanaryAttributionsStatus:
    """The paired attributions as status shows them: the five features either
    model relies on most, each with both models' shares."""
    limit = spec.rollout.comparison.max_attribution_distance or 0.0
    if not paired.explained:
        return CanaryAttributionsStatus(limit=limit)
    stable, canary = paired.shares()
    ranked = sorted(stable, key=lambda name: (-max(stable[name], canary[name]), name))
    return CanaryAttributionsStatus(
        explained=paired.explained,
        distance=paired.distance(),
        limit=limit,
        features=[
            CanaryFeatureStatus(name=name, stable=stable[name], canary=canary[name])
            for name in ranked[:5]
        ],
    )


def _failed(result: JobResult) -> bool:
    """A failure to report (rows left for the next minute's budget are none)."""
    return result.failure is not None and result.failure != SKIPPED_BUDGET


def _protocol(spec: ModelMonitorSpec, document: ReservoirDocument | None) -> Detected | None:
    if spec.model.protocol != "auto":
        return spec.model.protocol
    protocol = None if document is None else document.current.protocol
    if document is not None and protocol is None and document.previous is not None:
        protocol = document.previous.protocol
    if protocol in ("kserve-v1", "open-inference-v2", "json"):
        return protocol  # type: ignore[return-value]
    return None
