"""Labelled quality in the analysis: status per role and segment, quality
SLOs, and the canary's labelled accuracy against stable's."""

from __future__ import annotations

import pytest

from driftline_operator.analysis.judge import analyze
from driftline_operator.analysis.windows import Window
from driftline_operator.api.spec import Comparison, ModelMonitorSpec, Slo
from driftline_operator.rollout.compare import compare, judge_slos
from driftline_sidecar.contract.profile import (
    SCORE_BOUNDS,
    Calibration,
    ReferenceProfile,
    SourceInfo,
)
from driftline_sidecar.contract.snapshot import (
    Histogram,
    LabelCounts,
    ProcessInfo,
    QualityCounts,
    RegressionSums,
    Snapshot,
)

QUALITY = {"classes": ["ok", "fraud"], "minLabels": 100, "segment": "country"}


def spec(**extra: object) -> ModelMonitorSpec:
    return ModelMonitorSpec.model_validate(
        {
            "selector": {"matchLabels": {"app": "fraud"}},
            "model": {"name": "fraud"},
            "quality": QUALITY,
            **extra,
        }
    )


def counts(right: int, wrong: int) -> QualityCounts:
    """``right`` correct and ``wrong`` wrong predictions, half of each class;
    scores in 4 bins, the right ones confident."""
    half_right, half_wrong = right // 2, wrong // 2
    return QualityCounts(
        confusion={
            "ok": {"ok": half_right, "fraud": half_wrong},
            "fraud": {"fraud": right - half_right, "ok": wrong - half_wrong},
        },
        score_bins={
            "fraud": [wrong - half_wrong, 0, 0, right - half_right],
            "ok": [half_right, 0, 0, half_wrong],
        },
    )


def snapshot(role: str, segments: dict[str, QualityCounts], requests: int = 500) -> Snapshot:
    return Snapshot(
        process=ProcessInfo(id=role, pid=1, start_time=0.0),
        taken_at=1000.0,
        model="fraud",
        version="v1",
        role=role,  # type: ignore[arg-type]
        requests={"200": requests},
        labels=LabelCounts(
            joined=sum(
                n for q in segments.values() for r in q.confusion.values() for n in r.values()
            )
        ),
        quality=segments,
    )


def window(role: str, segments: dict[str, QualityCounts]) -> Window:
    return Window(role, snapshot(role, segments), 600.0, 1)


def test_status_has_figures_per_role_and_segment_with_their_counts() -> None:
    stable = window("stable", {"DE": counts(90, 10), "FR": counts(45, 5)})
    canary = window("canary", {"DE": counts(30, 10)})
    result = analyze(
        spec=spec(),
        windows={},
        drift_window=None,
        profile=None,
        previous=None,
        now=1000.0,
        quality_windows={"canary": canary, "stable": stable},
    )
    quality = result.status.quality
    assert quality is not None and quality.labels.joined == 190
    rows = [(f.role, f.segment, f.labels, f.status) for f in quality.figures]
    assert rows == [
        ("stable", None, 150, "ok"),
        ("stable", "DE", 100, "ok"),
        ("stable", "FR", 50, "insufficient_data"),
        ("canary", None, 40, "insufficient_data"),
        ("canary", "DE", 40, "insufficient_data"),
    ]
    overall = quality.figures[0]
    assert overall.accuracy == pytest.approx(135 / 150)
    assert overall.roc_auc is not None and overall.roc_auc_bound is not None
    assert "insufficient data: 50 labelled predictions, need 100" in quality.figures[2].message


@pytest.mark.parametrize(
    ("slo", "right", "verdict"),
    [
        ({"metric": "accuracy", "objective": "85%"}, 90, "ok"),
        ({"metric": "accuracy", "objective": "95%"}, 90, "breach"),
        ({"metric": "f1", "objective": 0.8}, 90, "ok"),
        ({"metric": "auc", "objective": 0.99}, 90, "breach"),
        ({"metric": "accuracy", "objective": "95%"}, 40, "insufficient_data"),
    ],
)
def test_quality_slos_on_the_monitor(slo: dict[str, object], right: int, verdict: str) -> None:
    stable = window("stable", {"": counts(right, 10)})
    result = analyze(
        spec=spec(slos=[{"name": "q", **slo}]),
        windows={},
        drift_window=None,
        profile=None,
        previous=None,
        now=1000.0,
        quality_windows={"stable": stable},
    )
    (status,) = result.status.slos
    assert status.verdict == verdict, status.message


def test_a_regression_slo_bounds_rmse() -> None:
    sums = RegressionSums(count=200, actual=2000.0, actual_squared=21000.0, squared_error=800.0)
    regression = ModelMonitorSpec.model_validate(
        {
            "selector": {"matchLabels": {"app": "price"}},
            "model": {"name": "price", "prediction": {"task": "regression"}},
            "quality": {"minLabels": 100},
            "slos": [{"name": "rmse", "metric": "rmse", "max": 1.5}],
        }
    )
    stable = window("stable", {"": QualityCounts(regression=sums)})
    result = analyze(
        spec=regression,
        windows={},
        drift_window=None,
        profile=None,
        previous=None,
        now=1000.0,
        quality_windows={"stable": stable},
    )
    (status,) = result.status.slos
    assert status.verdict == "breach" and status.value == pytest.approx(2.0)  # sqrt(800 / 200)
    with pytest.raises(ValueError, match="rmse needs max"):
        Slo.model_validate({"name": "x", "metric": "rmse", "max": "5%"})


def test_the_canary_holds_for_labels_then_fails_on_significantly_worse_accuracy() -> None:
    quality = spec().quality
    stable = snapshot("stable", {"": counts(450, 50)})  # 90 %
    few = snapshot("canary", {"": counts(40, 10)})
    verdict = compare(stable, few, Comparison(), quality=quality)
    assert verdict.verdict == "insufficient_data"
    assert verdict.reason.startswith("InsufficientLabels: accuracy: insufficient labels")

    worse = snapshot("canary", {"": counts(150, 50)})  # 75 %, 200 labels
    verdict = compare(stable, worse, Comparison(), quality=quality)
    assert verdict.verdict == "fail" and "labelled accuracy canary 75.00%" in verdict.reason
    (check,) = [c for c in verdict.checks if c.name == "accuracy"]
    assert check.p_value is not None and check.p_value < 0.05

    alike = snapshot("canary", {"": counts(178, 22)})  # 89 %: within the margin
    assert compare(stable, alike, Comparison(), quality=quality).verdict == "ok"
    # Without spec.quality there is nothing to wait for.
    assert compare(stable, few, Comparison()).verdict == "ok"


def test_a_canary_accuracy_slo_needs_significance() -> None:
    slo = Slo.model_validate({"name": "acc", "metric": "accuracy", "objective": "90%"})
    quality = spec().quality
    (check,) = judge_slos(snapshot("canary", {"": counts(175, 25)}), [slo], quality=quality)
    assert check.verdict == "ok"  # 87.5 % of 200 is not significantly below 90 %
    (check,) = judge_slos(snapshot("canary", {"": counts(700, 300)}), [slo], quality=quality)
    assert check.verdict == "fail"


def test_the_estimate_stands_next_to_the_realized_accuracy() -> None:
    calibration = Calibration(
        positive_class="fraud",
        rows=[10] * 21,
        accuracy=[0.9] * 10 + [0.6] * 11,
        positive_rate=[0.1] * 10 + [0.6] * 11,
    )
    profile = ReferenceProfile(
        created_at="2024-01-01T00:00:00Z",
        source=SourceInfo(path="t.csv", sha256="0" * 64, rows=210),
        features={},
        calibration=calibration,
    )
    live = snapshot("stable", {"": counts(90, 10)}).model_copy(
        update={"score": Histogram(bounds=list(SCORE_BOUNDS), counts=[30] + [0] * 19 + [10])}
    )
    result = analyze(
        spec=spec(slos=[{"name": "est", "metric": "estimatedAccuracy", "objective": "85%"}]),
        windows={},
        drift_window=None,
        profile=profile,
        previous=None,
        now=1000.0,
        quality_windows={"stable": Window("stable", live, 600.0, 1)},
    )
    assert result.status.quality is not None
    stable = result.status.quality.figures[0]
    assert stable.estimated_from == 40
    assert stable.estimated_accuracy == pytest.approx((30 * 0.9 + 10 * 0.6) / 40)
    assert stable.estimate_error == pytest.approx(0.9 - (30 * 0.9 + 10 * 0.6) / 40)
    (slo,) = result.status.slos
    assert slo.verdict == "insufficient_data" and "40 scored predictions, need 50" in slo.message
