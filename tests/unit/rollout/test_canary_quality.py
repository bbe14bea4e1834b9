"""Labelled quality in the canary comparison is judged on the labels since
the rollout began (``RolloutSums``), not interval by interval; the
estimatedAccuracy SLO judges the canary from its scores and holds it
("insufficient data") until enough are scored."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from driftline_operator.api.spec import Comparison, Quality, Slo
from driftline_operator.rollout.compare import Check, RolloutSums, compare
from driftline_sidecar.contract.profile import SCORE_BOUNDS, Calibration
from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    Histogram,
    ProcessInfo,
    QualityCounts,
    Snapshot,
)

QUALITY = Quality(classes=["ok", "fraud"], min_labels=100)
COMPARISON = Comparison(max_error_rate_increase=0.01, max_latency_increase="20ms")


def window(
    role: str, *, right: int = 0, wrong: int = 0, scored: list[int] | None = None
) -> Snapshot:
    """One interval: 500 requests, and ``right``/``wrong`` labels joined in it."""
    latency = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=int)
    latency[5] = 500
    return Snapshot(
        process=ProcessInfo(id=role, pid=1, start_time=0.0),
        taken_at=0.0,
        model="fraud",
        version="v1" if role == "stable" else "v2",
        role=role,  # type: ignore[arg-type]
        requests={"200": 500},
        latency=Histogram(counts=latency.tolist(), sum=5.0),
        score=None if scored is None else Histogram(bounds=list(SCORE_BOUNDS), counts=scored),
        quality={"": QualityCounts(confusion={"ok": {"ok": right, "fraud": wrong}})},
    )


def accuracy(checks: tuple[Check, ...]) -> Check:
    return next(c for c in checks if c.name == "accuracy")


def test_labels_trickling_in_are_judged_together() -> None:
    sums = RolloutSums()
    for interval in range(3):  # 40 labels a side per interval; minLabels is 100
        stable, canary = window("stable", right=38, wrong=2), window("canary", right=28, wrong=12)
        sums.add("rev-2", {"stable": stable, "canary": canary})
        alone = compare(stable, canary, COMPARISON, quality=QUALITY)
        assert alone.verdict == "insufficient_data"  # one interval never has enough
        assert alone.reason.startswith("InsufficientLabels")
        together = compare(stable, canary, COMPARISON, quality=QUALITY, labelled=sums.pair())
        if interval < 2:
            assert together.verdict == "insufficient_data"
            assert "stable 40" in together.reason or "stable 80" in together.reason
    # 120 labels a side: 95 % against 70 %, significantly worse.
    assert together.verdict == "fail"
    check = accuracy(together.checks)
    assert check.stable == pytest.approx(114 / 120) and check.candidate == pytest.approx(84 / 120)
    # The z-test on the summed counts (a 2x2 chi-square without correction, one-sided).
    _, two_sided, _, _ = stats.chi2_contingency([[36, 84], [6, 114]], correction=False)
    assert check.p_value == pytest.approx(two_sided / 2, rel=1e-6)


def test_a_new_canary_revision_starts_the_sums_again() -> None:
    sums = RolloutSums()
    sums.add("rev-2", {"stable": window("stable", right=90), "canary": window("canary", right=90)})
    sums.add("rev-3", {"stable": window("stable", right=5), "canary": window("canary", right=7)})
    pair = sums.pair()
    assert pair is not None
    assert pair[1].quality[""].confusion["ok"]["ok"] == 7  # rev-2's labels are not rev-3's
    only_stable = RolloutSums()
    only_stable.add(None, {"stable": window("stable", right=1)})
    assert only_stable.pair() is None


CALIBRATION = Calibration(
    positive_class="fraud",
    rows=[100] * 21,
    accuracy=[0.9] * 10 + [0.6] * 11,  # right 90 % below 0.5, 60 % above
    positive_rate=[None] * 21,
)
ESTIMATE_SLO = Slo(name="estimate", metric="estimatedAccuracy", objective="80%")


def scored(low: int, high: int) -> list[int]:
    """``low`` scores in the 0.2 bucket, ``high`` in the 0.7 one."""
    counts = [0] * 21
    counts[3], counts[13] = low, high
    return counts


def test_the_estimate_judges_the_canary_once_enough_predictions_are_scored() -> None:
    stable = window("stable")
    few = window("canary", scored=scored(20, 20))
    held = compare(
        stable, few, COMPARISON, [ESTIMATE_SLO], quality=QUALITY, calibration=CALIBRATION
    )
    assert held.verdict == "insufficient_data" and held.reason.startswith("InsufficientData")
    assert "40 scored predictions, need" in held.reason

    good = window("canary", scored=scored(400, 100))  # 0.9*0.8 + 0.6*0.2 = 84 %
    ok = compare(stable, good, COMPARISON, [ESTIMATE_SLO], quality=QUALITY, calibration=CALIBRATION)
    check = next(c for c in ok.checks if c.name == "slo/estimate")
    assert check.verdict == "ok" and check.candidate == pytest.approx(0.84)

    bad = window("canary", scored=scored(100, 400))  # 0.9*0.2 + 0.6*0.8 = 66 %
    failed = compare(
        stable, bad, COMPARISON, [ESTIMATE_SLO], quality=QUALITY, calibration=CALIBRATION
    )
    assert failed.verdict == "fail" and "estimatedAccuracy 0.66 over 500 scored" in failed.reason

    # Summed over the rollout, two thin intervals are enough together.
    sums = RolloutSums()
    for _ in range(3):
        sums.add("rev-2", {"stable": stable, "canary": window("canary", scored=scored(30, 10))})
    judged = compare(
        stable, few, COMPARISON, [ESTIMATE_SLO], quality=QUALITY, calibration=CALIBRATION,
        labelled=sums.pair(), min_requests=100,
    )  # fmt: skip
    check = next(c for c in judged.checks if c.name == "slo/estimate")
    assert check.verdict == "ok" and check.candidate == pytest.approx(0.825)


def test_without_a_calibration_the_estimate_holds_the_canary() -> None:
    canary = window("canary", scored=scored(400, 100))
    held = compare(window("stable"), canary, COMPARISON, [ESTIMATE_SLO], quality=QUALITY)
    assert held.verdict == "insufficient_data"
    assert "no estimate" in held.reason
