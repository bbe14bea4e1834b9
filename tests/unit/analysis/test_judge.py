"""The pure analysis on crafted windows: figures, SLO verdicts, drift, Events."""

from __future__ import annotations

import numpy as np
import pytest

from driftline_operator.analysis.judge import DriftWindow, Memory, analyze
from driftline_operator.analysis.signals import figures, histogram_quantile
from driftline_operator.analysis.slo import judge_slo
from driftline_operator.analysis.windows import Window
from driftline_operator.api.events import Event
from driftline_operator.api.spec import ModelMonitorSpec, Slo
from driftline_operator.rollout.notices import verdict_notices
from driftline_operator.stats.policy import DriftPolicy
from driftline_operator.stats.verdict import judge_dataset
from driftline_sidecar.contract.profile import NumericProfile, ReferenceProfile, SourceInfo
from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    BinCounts,
    Histogram,
    LayoutMismatch,
    ProcessInfo,
    Snapshot,
    merge,
)

BOUNDS = np.asarray(LATENCY_BUCKETS)
EDGES = [float(e) for e in range(1, 10)]  # 10 bins
UNIFORM = [0.1] * 10


def binned_latency(seconds: np.ndarray) -> Histogram:
    """Per-bucket counts the way Prometheus buckets observations (le: upper bound inclusive)."""
    index = np.searchsorted(BOUNDS, seconds, side="left")
    counts = np.bincount(index, minlength=len(BOUNDS) + 1)
    return Histogram(counts=counts.tolist(), sum=float(seconds.sum()))


def snapshot(
    *,
    codes: dict[str, int] | None = None,
    latency: Histogram | None = None,
    features: dict[str, list[int]] | None = None,
    prediction: list[int] | None = None,
    taken_at: float = 1000.0,
    role: str = "stable",
) -> Snapshot:
    return Snapshot(
        process=ProcessInfo(id="p", pid=1, start_time=0.0),
        taken_at=taken_at,
        model="fraud",
        version="v1",
        role=role,  # type: ignore[arg-type]
        requests=codes or {},
        latency=latency or Histogram(),
        features={name: BinCounts(counts=c) for name, c in (features or {}).items()},
        prediction=BinCounts(counts=prediction) if prediction is not None else None,
    )


def window(seconds: float = 30.0, role: str = "stable", **counts: object) -> Window:
    return Window(role=role, counts=snapshot(role=role, **counts), seconds=seconds, pods=1)  # type: ignore[arg-type]


def fast(n: int, seconds: float = 0.004) -> Histogram:
    return binned_latency(np.full(n, seconds))


def numeric(expected: list[float] = UNIFORM) -> NumericProfile:
    return NumericProfile(
        edges=EDGES, expected=expected, min=0.0, max=10.0, mean=5.0, std=2.9, missing_rate=0.0
    )


def profile(n_features: int = 4) -> ReferenceProfile:
    return ReferenceProfile(
        created_at="2024-01-01T00:00:00Z",
        source=SourceInfo(path="train.parquet", sha256="0" * 64, rows=50_000),
        features={f"f{i}": numeric() for i in range(n_features)},
        prediction=numeric(),
    )


def spec(**overrides: object) -> ModelMonitorSpec:
    return ModelMonitorSpec.model_validate(
        {"selector": {"matchLabels": {"app": "fraud"}}, "model": {"name": "fraud"}, **overrides}
    )


# -- histogram_quantile ----------------------------------------------------------


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_quantile_matches_a_numpy_reference_on_the_same_binned_latencies(q: float) -> None:
    rng = np.random.default_rng(7)
    latencies = rng.lognormal(mean=np.log(0.02), sigma=0.8, size=20_000)
    histogram = binned_latency(latencies)
    estimate = histogram_quantile(histogram, q)
    # Linear interpolation of the cumulative count over [0, bound_0, bound_1, ...].
    cumulative = np.concatenate([[0], np.cumsum(histogram.counts[:-1])])
    reference = np.interp(q * len(latencies), cumulative, np.concatenate([[0.0], BOUNDS]))
    assert estimate == pytest.approx(reference, rel=1e-12)
    # And the exact quantile lies in the bucket the estimate is in.
    exact = float(np.quantile(latencies, q))
    bucket = int(np.searchsorted(BOUNDS, estimate, side="left"))
    low = BOUNDS[bucket - 1] if bucket else 0.0
    assert low <= exact <= BOUNDS[bucket]


def test_quantile_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    histogram = binned_latency(np.array([0.001] * 90 + [60.0] * 10))
    assert histogram_quantile(histogram, 0.95) == LATENCY_BUCKETS[-1]
    assert histogram_quantile(histogram, 0.5) == pytest.approx(0.0005 + 0.0005 * 50 / 90)


def test_quantile_of_an_empty_histogram_is_none_and_a_bad_q_is_refused() -> None:
    assert histogram_quantile(Histogram(), 0.5) is None
    with pytest.raises(ValueError, match=r"not in 0\.\.1"):
        histogram_quantile(fast(3), 1.5)


def test_first_bucket_interpolates_from_zero() -> None:
    histogram = Histogram(counts=[4] + [0] * len(LATENCY_BUCKETS))
    assert histogram_quantile(histogram, 0.5) == pytest.approx(LATENCY_BUCKETS[0] / 2)


# -- golden signals --------------------------------------------------------------


def test_figures_count_only_5xx_as_errors() -> None:
    codes = {"200": 880, "404": 60, "500": 40, "503": 20}
    result = figures(window(seconds=20.0, codes=codes, latency=fast(1000)))
    assert result.requests == 1000
    assert result.requests_per_second == 50.0
    assert result.error_rate == pytest.approx(0.06)
    assert result.p50_ms is not None and 3.0 < result.p50_ms <= 5.0


# -- SLO verdicts ----------------------------------------------------------------


def slo(**fields: object) -> Slo:
    return Slo.model_validate({"name": "s", **fields})


def test_latency_slo_breaches_above_max_and_is_ok_below() -> None:
    slow = window(codes={"200": 100}, latency=binned_latency(np.full(100, 0.25)))
    quick = window(codes={"200": 100}, latency=fast(100))
    p95 = slo(metric="latency", quantile=0.95, max="200ms")
    breach = judge_slo(p95, short=slow, long=slow)
    assert breach.verdict == "breach"
    assert breach.value == pytest.approx(histogram_quantile(slow.counts.latency, 0.95))
    assert breach.objective == pytest.approx(0.2)
    assert "max 200ms" in breach.message
    assert judge_slo(p95, short=quick, long=quick).verdict == "ok"


def test_error_rate_slo() -> None:
    bad = window(codes={"200": 95, "500": 5}, latency=fast(100))
    rule = slo(metric="errorRate", max="2%")
    result = judge_slo(rule, short=bad, long=bad)
    assert (result.verdict, result.value) == ("breach", 0.05)
    good = window(codes={"200": 99, "500": 1, "429": 50}, latency=fast(150))
    assert judge_slo(rule, short=good, long=good).verdict == "ok"


def test_success_rate_breaches_only_when_both_windows_burn_fast() -> None:
    rule = slo(metric="successRate", objective="99%")  # budget 1 %, fast burn at 14.4 %
    burning = window(codes={"200": 800, "503": 200}, latency=fast(1000))  # 20 % errors: 20x
    calm_long = window(seconds=600, codes={"200": 19_800, "503": 200}, latency=fast(20_000))
    hot_long = window(seconds=600, codes={"200": 16_000, "503": 4_000}, latency=fast(20_000))
    calm = window(codes={"200": 1000}, latency=fast(1000))

    burst = judge_slo(rule, short=burning, long=calm_long)  # long window burns 1x
    assert burst.verdict == "ok"
    assert burst.burn_rate == pytest.approx(20.0)
    assert "1.0x over 600s" in burst.message

    sustained = judge_slo(rule, short=burning, long=hot_long)
    assert sustained.verdict == "breach"
    assert sustained.value == pytest.approx(0.8)
    assert sustained.objective == pytest.approx(0.99)

    over = judge_slo(rule, short=calm, long=hot_long)  # it stopped burning: recovered
    assert (over.verdict, over.burn_rate) == ("ok", 0.0)


def test_success_rate_with_a_100_percent_objective_has_no_budget() -> None:
    rule = slo(metric="successRate", objective="100%")
    one_error = window(codes={"200": 99, "500": 1}, latency=fast(100))
    result = judge_slo(rule, short=one_error, long=one_error)
    assert result.verdict == "breach"
    assert result.burn_rate is None  # infinite: not a JSON number


def test_too_few_requests_is_insufficient_data_not_a_verdict() -> None:
    few = window(codes={"500": 10}, latency=binned_latency(np.full(10, 9.0)))
    for rule in (
        slo(metric="latency", quantile=0.99, max="10ms"),
        slo(metric="errorRate", max="1%"),
        slo(metric="successRate", objective="99.9%"),
    ):
        result = judge_slo(rule, short=few, long=few, min_requests=50)
        assert result.verdict == "insufficient_data"
        assert "10 requests in 30s, need 50" in result.message
    assert judge_slo(slo(metric="errorRate", max="1%"), short=None, long=None).verdict == (
        "insufficient_data"
    )


def test_drifted_feature_share_and_prediction_drift_slos() -> None:
    ref = profile(n_features=4)
    shifted = [0, 0, 0, 0, 0, 0, 0, 0, 500, 500]
    counts = {"f0": shifted, "f1": [100] * 10, "f2": [100] * 10, "f3": [100] * 10}
    result = judge_dataset(ref, {n: BinCounts(counts=c) for n, c in counts.items()},
                           policy=DriftPolicy(), share_threshold=0.5)  # fmt: skip
    share = judge_slo(
        slo(metric="driftedFeatureShare", max=0.2), short=None, long=None, drift=result
    )
    assert (share.verdict, share.value) == ("breach", 0.25)
    assert "1 of 4 features drifted" in share.message
    lenient = slo(metric="driftedFeatureShare", max=0.3)
    assert judge_slo(lenient, short=None, long=None, drift=result).verdict == "ok"
    assert judge_slo(lenient, short=None, long=None, drift=None).verdict == "insufficient_data"

    prediction = slo(metric="predictionDrift", max=0.1)
    assert judge_slo(prediction, short=None, long=None, prediction_drift=0.3).verdict == "breach"
    assert judge_slo(prediction, short=None, long=None, prediction_drift=0.05).verdict == "ok"
    assert judge_slo(prediction, short=None, long=None).verdict == "insufficient_data"


# -- drift window ----------------------------------------------------------------


def test_drift_window_merges_the_recent_intervals_and_drops_old_ones() -> None:
    ring = DriftWindow(seconds=90)
    for i in range(5):
        ring.add(window(codes={"200": 10 * (i + 1)}, taken_at=1000.0 + 30 * i))
    merged = ring.merged()
    assert merged is not None
    assert merged.seconds == 90
    assert merged.counts.requests == {"200": 30 + 40 + 50}  # the last three intervals


def test_drift_window_starts_over_when_the_profile_changes() -> None:
    ring = DriftWindow(seconds=600)
    old = window(codes={"200": 5})
    ring.add(Window("stable", old.counts.model_copy(update={"profile_sha256": "a"}), 30, 1))
    ring.add(Window("stable", old.counts.model_copy(update={"profile_sha256": "b"}), 30, 1))
    merged = ring.merged()
    assert merged is not None and merged.counts.requests == {"200": 5}


# -- analyze: status and Events ----------------------------------------------------


SLOS = [
    {"name": "p95", "metric": "latency", "quantile": 0.95, "max": "100ms"},
    {"name": "availability", "metric": "successRate", "objective": "99.9%"},
]


def interval(*, slow: bool = False, requests: int = 200, drifted: bool = False) -> Window:
    latency = binned_latency(np.full(requests, 0.3 if slow else 0.004))
    bins = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1000] if drifted else [100] * 10
    features = {f"f{i}": bins for i in range(4)}
    return window(codes={"200": requests}, latency=latency, features=features,
                  prediction=[100] * 10)  # fmt: skip


def run(w: Window, previous: Memory | None, *, now: float = 2000.0) -> tuple:
    result = analyze(
        spec=spec(slos=SLOS),
        windows={"stable": w},
        drift_window=w,
        profile=profile(),
        previous=previous,
        now=now,
    )
    return result, [(e.type, e.reason) for e in result.events]


def test_events_only_when_a_verdict_changes() -> None:
    first, events = run(interval(), None)
    assert events == []  # ok from the start: nothing to announce
    assert first.status.phase == "Healthy"

    breached, events = run(interval(slow=True), first.memory)
    assert events == [("Warning", "SLOBreached")]
    assert breached.status.phase == "Degraded"
    assert "p95 295.0ms" in breached.events[0].message

    again, events = run(interval(slow=True), breached.memory)
    assert events == []

    quiet, events = run(interval(slow=True, requests=5), again.memory)
    assert events == []  # no data says nothing either way
    assert {s.name: s.verdict for s in quiet.status.slos}["p95"] == "insufficient_data"

    _, events = run(interval(), quiet.memory)
    assert events == [("Normal", "SLORecovered")]


def test_drift_detected_then_cleared_with_the_numbers_in_the_message() -> None:
    ok, _ = run(interval(), None)
    assert ok.status.drift.status == "ok"
    drifted, events = run(interval(drifted=True), ok.memory)
    assert ("Warning", "DriftDetected") in events
    message = next(e.message for e in drifted.events if e.reason == "DriftDetected")
    assert "4 of 4 features drifted" in message and "f0 (" in message
    assert drifted.status.drift.status == "drift"
    assert drifted.status.drift.drifted == 4
    assert [f.status for f in drifted.status.drift.features] == ["drift"] * 4
    assert drifted.status.phase == "Degraded"
    _, events = run(interval(), drifted.memory)
    assert ("Normal", "DriftCleared") in events


def test_status_fields_conditions_and_printer_columns() -> None:
    w = window(seconds=30.0, codes={"200": 570, "500": 30}, latency=fast(600))
    canary = window(seconds=30.0, role="canary", codes={"200": 60}, latency=fast(60))
    result = analyze(
        spec=spec(slos=SLOS),
        windows={"canary": canary, "stable": w},
        drift_window=w,
        profile=None,
        previous=None,
        now=0.0,
        unreachable={"pod-b": "timed out after 5s"},
    )
    status = result.status.model_dump(by_alias=True, exclude_none=True)
    assert [x["role"] for x in status["windows"]] == ["stable", "canary"]
    assert status["requestsPerSecond"] == 20.0
    assert status["errorPercent"] == 5.0
    assert status["p95Ms"] == pytest.approx(histogram_quantile(w.counts.latency, 0.95) * 1000)
    assert status["drift"]["status"] == "no_reference"
    assert status["pods"]["unreachable"] == ["pod-b"]
    assert status["lastAnalysisTime"] == "1970-01-01T00:00:00Z"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["SLOsMet"]["status"] == "False"  # 5 % errors burn 50x a 0.1 % budget
    assert conditions["DriftDetected"]["reason"] == "NoReference"
    assert Event("Warning", "SidecarUnreachable", "pod pod-b: timed out after 5s") in result.events


def test_memory_from_a_stored_status_repeats_no_event() -> None:
    breached, events = run(interval(slow=True), None)
    assert events == [("Warning", "SLOBreached")]
    stored = breached.status.model_dump(by_alias=True, exclude_none=True)
    again, events = run(interval(slow=True), Memory.from_status(stored), now=2030.0)
    assert events == []
    condition = next(c for c in again.status.conditions if c.type == "SLOsMet")
    assert condition.last_transition_time == "1970-01-01T00:33:20Z"  # kept from the first


def test_top_features_are_the_most_drifted_first_and_at_most_five() -> None:
    ref = profile(n_features=8)
    features = {}
    for i in range(8):  # 1000 values each; f7 moved the most, f0 not at all
        features[f"f{i}"] = [100 - i * 10] * 9 + [100 + 90 * i]
    w = window(codes={"200": 100}, latency=fast(100), features=features)
    result = analyze(
        spec=spec(), windows={"stable": w}, drift_window=w, profile=ref, previous=None, now=0.0
    )
    names = [f.name for f in result.status.drift.features]
    assert names == ["f7", "f6", "f5", "f4", "f3"]
    scores = [f.score for f in result.status.drift.features]
    assert scores == sorted(scores, reverse=True)


def test_counts_binned_with_another_layout_are_reported_not_judged() -> None:
    w = window(codes={"200": 100}, latency=fast(100), features={"f0": [50, 50]})
    first = analyze(
        spec=spec(), windows={"stable": w}, drift_window=w, profile=profile(), previous=None, now=0
    )
    assert first.status.drift.status == "insufficient_data"
    [event] = first.events
    assert event.reason == "DriftNotJudged" and "2 bins" in event.message
    again = analyze(
        spec=spec(), windows={"stable": w}, drift_window=w, profile=profile(), previous=first.memory,
        now=30,
    )  # fmt: skip
    assert again.events == []


def test_drift_window_running_total_is_the_ring_added_up_again() -> None:
    ring, added = DriftWindow(seconds=120), []
    for i in range(12):
        codes = {"200": 10 + i} | ({"503": i} if i % 3 == 0 else {})
        added.append(window(codes=codes, taken_at=1000.0 + 30 * i))
        ring.add(added[-1])
        merged = ring.merged()
        again = merge([w.counts for w in added[-4:]])  # 120 s of 30 s windows
        assert merged is not None and merged.seconds == 30 * len(added[-4:])
        nonzero = {code: n for code, n in merged.counts.requests.items() if n}
        assert nonzero == {code: n for code, n in again.requests.items() if n}
        assert merged.counts.latency.counts == again.latency.counts
        assert merged.counts.taken_at == again.taken_at  # the oldest window's, as merge gives


def test_drift_window_with_counts_that_do_not_add_up_says_so_when_merged() -> None:
    ring = DriftWindow(seconds=600)
    first = window(codes={"200": 5})
    ring.add(first)
    ring.merged()
    for taken_at, bins in ((1030.0, [1, 2, 3]), (1060.0, [1, 2])):
        counts = {"taken_at": taken_at, "features": {"x": BinCounts(counts=bins)}}
        ring.add(Window("stable", first.counts.model_copy(update=counts), 30, 1))
    with pytest.raises(LayoutMismatch, match="different lengths"):
        ring.merged()


def test_attribution_drift_slo_bounds_the_distance_and_waits_for_explanations() -> None:
    import numpy as np

    from driftline_operator.stats.attribution import AttributionReference, attribution_drift

    rule = Slo(name="reliance", metric="attributionDrift", max="20%")
    reference = AttributionReference.from_values(["a", "b"], np.array([[1.0, 0.1], [2.0, 0.2]]))
    moved, alike = reference.empty(), reference.empty()
    moved.add(np.array([[0.1, 1.0]] * 10))
    alike.add(np.array([[1.5, 0.15]] * 10))
    judged = [
        judge_slo(
            rule,
            short=None,
            long=None,
            attribution_drift=attribution_drift(
                reference, counts, threshold=0.15, min_explanations=5
            ),
        )
        for counts in (moved, alike, reference.empty())
    ]
    assert [s.verdict for s in judged] == ["breach", "ok", "insufficient_data"]
    assert "attribution distance" in judged[0].message and "max 0.2" in judged[0].message
    assert "0 rows explained" in judged[2].message
    none = judge_slo(rule, short=None, long=None)
    assert none.verdict == "insufficient_data" and "spec.explain" in none.message


def test_verdict_changes_become_notices_with_the_status_figures() -> None:
    ok, _ = run(interval(), None)
    bad, _ = run(interval(slow=True, drifted=True), ok.memory)
    assert [e.subject for e in bad.events if e.reason == "SLOBreached"] == ["slo/p95"]
    status = bad.status.model_dump(by_alias=True, exclude_none=True)
    notices = {
        n.signal: n
        for n in verdict_notices(bad.events, namespace="ml", monitor="fraud", status=status)
    }
    assert notices["slo/p95"].firing and notices["slo/p95"].severity == "critical"
    assert notices["slo/p95"].numbers["value"] > notices["slo/p95"].numbers["objective"]
    assert notices["drift"].firing and dict(notices["drift"].numbers) == {
        "driftedShare": 1.0,
        "drifted": 4,
    }
    good, _ = run(interval(), bad.memory)
    status = good.status.model_dump(by_alias=True, exclude_none=True)
    recovered = verdict_notices(good.events, namespace="ml", monitor="fraud", status=status)
    assert {(n.signal, n.firing) for n in recovered} == {("slo/p95", False), ("drift", False)}
