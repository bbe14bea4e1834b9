"""The analysis of one ModelMonitor: windows in, figures, verdicts and Events out.

Pure (no kopf, no kubernetes, no I/O), so the tests, the benchmark and the
demo run it on windows built in memory. Each interval:

- golden signals per role: request rate, error ratio (the share of 5xx: a 4xx
  is the client's fault), p50/p95/p99 from the latency histogram with
  Prometheus' ``histogram_quantile`` rules;
- drift of every profiled feature and of the prediction score, with the
  statistics package, on the *drift window*: the last ``spec.drift.window`` of
  intervals merged (``DriftWindow``), because one 30 s interval rarely holds
  enough values for a test;
- data quality of the drift window (``data_quality``): per-feature missing,
  out-of-range and unseen-category rates and schema errors per row, judged
  against ``spec.dataQuality``, an Event for each rate that crosses its
  threshold either way;
- one verdict per ``spec.slos`` entry (``judge_slo``), ``insufficient_data``
  when the window has fewer than ``MIN_REQUESTS`` requests: no data is not bad
  data, so it never breaches and never recovers;
- the status (phase Healthy or Degraded, figures, top drifted features,
  verdicts, two conditions) and an Event for each verdict that *changed*
  since the previous analysis (``Memory``).

Drift and SLOs are judged on the ``stable`` role: a canary or shadow is the
rollout's business (``driftline_operator.compare``), and a shadow sees copies
of stable's requests, so adding it would count every input twice.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from driftline_operator.analysis.data_quality import (
    DataQualityFigures,
    breaches,
    categorical_features,
    data_quality,
    data_quality_events,
    judge_data_quality,
)
from driftline_operator.analysis.quality import quality_status
from driftline_operator.analysis.signals import (
    MIN_REQUESTS,
    figures,
)
from driftline_operator.analysis.slo import FAST_BURN, judge_slo
from driftline_operator.analysis.windows import Window
from driftline_operator.api.events import Event
from driftline_operator.api.spec import Drift, ModelMonitorSpec
from driftline_operator.api.status import (
    DRIFT_DETECTED,
    SLOS_MET,
    Condition,
    ConditionStatus,
    DriftStatus,
    FeatureDriftStatus,
    ModelMonitorStatus,
    PodCounts,
    SloStatus,
    condition,
)
from driftline_operator.api.values import rfc3339
from driftline_operator.stats.attribution import AttributionDrift
from driftline_operator.stats.distances import jensen_shannon
from driftline_operator.stats.policy import P_VALUE_METHODS, DriftPolicy
from driftline_operator.stats.verdict import DatasetDrift, FeatureDrift, judge_dataset
from driftline_sidecar.contract.profile import ReferenceProfile
from driftline_sidecar.contract.snapshot import LayoutMismatch, Snapshot, merge, roll

JUDGED_ROLE = "stable"
TOP_FEATURES = 5


# -- the drift window ----------------------------------------------------------


class DriftWindow:
    """The most recent windows of one role covering ``seconds``, merged.

    Also the long window of the successRate burn rate. Windows binned against
    another profile than the newest one are dropped: their bins do not compare.
    The merged counts are kept as a running total (the new window added, the
    windows that fell out taken away), not summed again every interval.
    """

    def __init__(self, *, seconds: float) -> None:
        self.seconds = seconds
        self._ring: deque[Window] = deque()
        self._total: Snapshot | None = None  # the ring's counts merged; None: not known

    def add(self, window: Window) -> None:
        sha = window.counts.profile_sha256
        if self._ring and sha and self._ring[-1].counts.profile_sha256 not in (sha, ""):
            self.clear()
        self._ring.append(window)
        end = window.counts.taken_at
        dropped = []
        while len(self._ring) > 1 and (
            self.covered - self._ring[0].seconds >= self.seconds
            or self._ring[0].counts.taken_at <= end - self.seconds  # ended before the span
        ):
            dropped.append(self._ring.popleft().counts)
        if self._total is not None:
            try:
                self._total = roll(
                    self._total, added=[window.counts], removed=dropped, like=self._ring[0].counts
                )
            except LayoutMismatch:
                self._total = None  # merged() sums the ring again, and says what does not fit

    @property
    def covered(self) -> float:
        return sum(w.seconds for w in self._ring)

    def merged(self) -> Window | None:
        if not self._ring:
            return None
        newest = self._ring[-1]
        if len(self._ring) == 1:
            self._total = newest.counts
        elif self._total is None:
            self._total = merge([w.counts for w in self._ring])
        return Window(newest.role, self._total, self.covered, max(w.pods for w in self._ring))

    def clear(self) -> None:
        self._ring.clear()
        self._total = None


# -- drift ---------------------------------------------------------------------


def drift_policy(drift: Drift) -> DriftPolicy:
    return DriftPolicy(
        method=drift.method, threshold=drift.threshold, min_samples=drift.min_samples
    )


def judge_drift(profile: ReferenceProfile, window: Window, drift: Drift) -> DatasetDrift:
    """Every profiled feature and the prediction score, judged on ``window``.

    Raises ValueError when the counts were binned with another layout than
    the profile's (the sidecar runs with an older profile).
    """
    counts = window.counts
    return judge_dataset(
        profile,
        counts.features,
        policy=drift_policy(drift),
        share_threshold=drift.drift_share,
        prediction=counts.prediction,
    )


def prediction_score(
    profile: ReferenceProfile, window: Window, *, min_samples: int
) -> float | None:
    """Jensen-Shannon distance (base 2, 0..1) of the prediction score's bins from
    the reference: the number a predictionDrift SLO bounds, whatever test the
    drift verdict uses (a p-value would read the wrong way round)."""
    observed = window.counts.prediction
    if profile.prediction is None or observed is None or sum(observed.counts) < min_samples:
        return None
    return jensen_shannon(profile.prediction.expected, observed.counts)


def severity(verdict: FeatureDrift) -> float:
    """How far past its threshold a feature is (1 = at it), comparable across
    methods: a distance over its threshold, or a threshold over the p-value."""
    if verdict.score is None or not math.isfinite(verdict.score):
        return -1.0
    if verdict.method.split("_")[0] in P_VALUE_METHODS:
        return verdict.threshold / max(verdict.score, 1e-300)
    return verdict.score / verdict.threshold if verdict.threshold > 0 else math.inf


def _feature_status(verdict: FeatureDrift) -> FeatureDriftStatus:
    score = verdict.score if verdict.score is not None and math.isfinite(verdict.score) else None
    return FeatureDriftStatus(
        name=verdict.feature,
        method=verdict.method,
        score=None if score is None else float(f"{score:.4g}"),
        threshold=round(verdict.threshold, 6),
        status=verdict.status,
        samples=verdict.samples,
    )


def drift_status(result: DatasetDrift | None, *, has_profile: bool) -> DriftStatus:
    if not has_profile:
        return DriftStatus(status="no_reference")
    if result is None:
        return DriftStatus(status="insufficient_data")
    judged = [v for v in result.features if v.status != "insufficient_data"]
    top = sorted(judged, key=severity, reverse=True)[:TOP_FEATURES]
    status: Literal["ok", "drift", "insufficient_data"] = (
        "insufficient_data" if not judged else "drift" if result.drift else "ok"
    )
    return DriftStatus(
        status=status,
        drifted_share=round(result.drifted_share, 4) if judged else None,
        drifted=len(result.drifted),
        features=[_feature_status(v) for v in top],
        prediction=_feature_status(result.prediction) if result.prediction else None,
    )


# -- one analysis --------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """What the previous analysis concluded: Events are only about changes.

    An ``insufficient_data`` verdict does not replace a decisive one, so a
    breach, a quiet minute, then a breach again is one Event, not two.
    """

    slos: Mapping[str, str] = field(default_factory=dict)  # name -> ok | breach
    drift: str | None = None  # ok | drift
    prediction: str | None = None  # ok | drift
    conditions: Mapping[str, Condition] = field(default_factory=dict)
    unreachable: frozenset[str] = frozenset()
    drift_error: str | None = None
    data_quality: frozenset[str] | None = None  # breached rates at the last judged window

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Memory:
        """Rebuild it from a stored status, so an operator restart repeats no Event."""
        if not status:
            return cls()
        parsed = ModelMonitorStatus.model_validate(status)
        decisive = ("ok", "breach", "drift")
        prediction = parsed.drift.prediction
        return cls(
            slos={s.name: s.verdict for s in parsed.slos if s.verdict in decisive},
            drift=parsed.drift.status if parsed.drift.status in decisive else None,
            prediction=prediction.status if prediction and prediction.status in decisive else None,
            conditions={
                c.type: c for c in parsed.conditions if c.type in (SLOS_MET, DRIFT_DETECTED)
            },
            unreachable=frozenset(parsed.pods.unreachable),
            data_quality=breaches(parsed.data_quality),
        )


@dataclass
class Analysis:
    status: ModelMonitorStatus
    events: list[Event]
    drift: DatasetDrift | None
    memory: Memory
    data_quality: DataQualityFigures | None = None


def _changed(before: str | None, after: str, bad: str) -> bool | None:
    """True: became bad; False: recovered; None: no Event."""
    if after not in ("ok", bad) or after == before:
        return None
    if after == bad:
        return True
    return False if before == bad else None


def _top_drifted(result: DatasetDrift) -> str:
    drifted = sorted((v for v in result.features if v.drift), key=severity, reverse=True)
    shown = ", ".join(f"{v.feature} ({v.method} {v.score:.3g})" for v in drifted[:TOP_FEATURES])
    more = f" and {len(drifted) - TOP_FEATURES} more" if len(drifted) > TOP_FEATURES else ""
    return shown + more


def analyze(
    *,
    spec: ModelMonitorSpec,
    windows: Mapping[str, Window],
    drift_window: Window | None,
    profile: ReferenceProfile | None,
    previous: Memory | None,
    now: float,
    unreachable: Mapping[str, str] | None = None,
    quality_windows: Mapping[str, Window] | None = None,
    min_requests: int = MIN_REQUESTS,
    fast_burn: float = FAST_BURN,
    attribution_drift: AttributionDrift | None = None,
) -> Analysis:
    """Judge this interval's ``windows`` (by role), the stable ``drift_window``
    and, with ``spec.quality``, each role's labels in ``quality_windows``."""
    previous = previous or Memory()
    unreachable = unreachable or {}
    events: list[Event] = []
    stable = windows.get(JUDGED_ROLE)

    result, drift_error = None, None
    if profile is not None and drift_window is not None:
        try:
            result = judge_drift(profile, drift_window, spec.drift)
        except ValueError as error:
            drift_error = f"drift not judged: {error}"
    if drift_error and drift_error != previous.drift_error:
        events.append(Event("Warning", "DriftNotJudged", drift_error))
    score = None
    if profile is not None and drift_window is not None and result is not None:
        score = prediction_score(profile, drift_window, min_samples=spec.drift.min_samples)
    quality_figures = None
    if drift_window is not None:
        quality_figures = data_quality(drift_window.counts, categorical_features(spec, profile))
    inputs = (
        None if quality_figures is None else judge_data_quality(quality_figures, spec.data_quality)
    )
    quality = None
    stable_quality = None
    if spec.quality is not None and quality_windows:
        calibration = profile.calibration if profile is not None else None
        quality = quality_status(quality_windows, spec.quality, calibration)
        stable_quality = next(
            (f for f in quality.figures if f.role == JUDGED_ROLE and f.segment is None), None
        )
    slos = [
        judge_slo(
            slo,
            short=stable,
            long=drift_window,
            drift=result,
            prediction_drift=score,
            attribution_drift=attribution_drift,
            data_quality=quality_figures,
            min_records=spec.data_quality.min_records,
            quality=stable_quality,
            min_requests=min_requests,
            fast_burn=fast_burn,
        )
        for slo in spec.slos
    ]
    drift = drift_status(result, has_profile=profile is not None)

    memory_slos = dict(previous.slos)
    for verdict in slos:
        change = _changed(previous.slos.get(verdict.name), verdict.verdict, "breach")
        if change is not None:
            message = f"SLO {verdict.name}: {verdict.message}"
            subject = f"slo/{verdict.name}"
            if change:
                events.append(Event("Warning", "SLOBreached", message, subject))
            else:
                events.append(Event("Normal", "SLORecovered", message, subject))
        if verdict.verdict != "insufficient_data":
            memory_slos[verdict.name] = verdict.verdict
    if result is not None:
        change = _changed(previous.drift, drift.status, "drift")
        if change is not None:
            judged = len(result.features) - len(result.insufficient)
            share = (
                f"{len(result.drifted)} of {judged} features drifted "
                f"({result.drifted_share:.0%}, threshold {spec.drift.drift_share:.0%})"
            )
            top = f": {_top_drifted(result)}" if result.drifted else ""
            events.append(
                Event("Warning", "DriftDetected", share + top)
                if change
                else Event("Normal", "DriftCleared", share + top)
            )
        if drift.prediction is not None:
            p = drift.prediction
            change = _changed(previous.prediction, p.status, "drift")
            if change is not None:
                text = f"prediction score {p.method} {p.score}, threshold {p.threshold} ({p.samples} values)"
                events.append(
                    Event("Warning", "PredictionDriftDetected", text)
                    if change
                    else Event("Normal", "PredictionDriftCleared", text)
                )
    quality_breaches = breaches(inputs)
    if quality_figures is not None:
        events += data_quality_events(
            previous.data_quality, quality_breaches, quality_figures, spec.data_quality
        )
    for pod in sorted(set(unreachable) - previous.unreachable):
        events.append(Event("Warning", "SidecarUnreachable", f"pod {pod}: {unreachable[pod]}"))

    breached = [s.name for s in slos if s.verdict == "breach"]
    bad_data = inputs is not None and inputs.status == "degraded"
    drifting = drift.status == "drift" or (
        drift.prediction is not None and drift.prediction.status == "drift"
    )
    conditions = _conditions(slos, drift, previous.conditions, now=rfc3339(now))
    status = ModelMonitorStatus(
        phase="Degraded" if breached or drifting or bad_data else "Healthy",
        conditions=list(conditions.values()),
        pods=PodCounts(unreachable=sorted(unreachable)),
        windows=[figures(w) for _, w in sorted(windows.items(), key=lambda kv: _role_order(kv[0]))],
        drift=drift,
        data_quality=inputs,
        quality=quality,
        slos=slos,
        last_analysis_time=rfc3339(now),
    )
    if stable is not None:
        main = figures(stable)
        status.requests_per_second = main.requests_per_second
        status.p95_ms = main.p95_ms
        status.error_percent = None if main.error_rate is None else round(main.error_rate * 100, 4)
    memory = Memory(
        slos=memory_slos,
        drift=drift.status if drift.status in ("ok", "drift") else previous.drift,
        prediction=(
            drift.prediction.status
            if drift.prediction and drift.prediction.status != "insufficient_data"
            else previous.prediction
        ),
        conditions=conditions,
        unreachable=frozenset(unreachable),
        drift_error=drift_error,
        data_quality=previous.data_quality if quality_breaches is None else quality_breaches,
    )
    return Analysis(
        status=status, events=events, drift=result, memory=memory, data_quality=quality_figures
    )


def _role_order(role: str) -> tuple[int, str]:
    return (
        ("stable", "canary", "shadow").index(role) if role in ("stable", "canary", "shadow") else 3,
        role,
    )


def _conditions(
    slos: list[SloStatus],
    drift: DriftStatus,
    before: Mapping[str, Condition],
    *,
    now: str,
) -> dict[str, Condition]:
    wanted: list[tuple[str, ConditionStatus, str, str]] = []
    if slos:
        breached = [s for s in slos if s.verdict == "breach"]
        unknown = [s for s in slos if s.verdict == "insufficient_data"]
        if breached:
            names = ", ".join(s.name for s in breached)
            wanted.append((SLOS_MET, "False", "SLOBreached", f"breached: {names}"))
        elif unknown:
            names = ", ".join(s.name for s in unknown)
            wanted.append(
                (SLOS_MET, "Unknown", "InsufficientData", f"not enough data for: {names}")
            )
        else:
            wanted.append((SLOS_MET, "True", "SLOsMet", f"all {len(slos)} SLOs met"))
    reasons: dict[str, tuple[ConditionStatus, str]] = {
        "drift": ("True", "DriftDetected"),
        "ok": ("False", "NoDrift"),
        "insufficient_data": ("Unknown", "InsufficientData"),
        "no_reference": ("Unknown", "NoReference"),
    }
    state, reason = reasons[drift.status]
    drifted = ", ".join(f.name for f in drift.features if f.status == "drift")
    message = f"{drift.drifted} features drifted: {drifted}" if drift.drifted else ""
    wanted.append((DRIFT_DETECTED, state, reason, message))
    return {
        type_: condition(
            type_, state, reason=reason, message=message, previous=before.get(type_), now=now
        )
        for type_, state, reason, message in wanted
    }
