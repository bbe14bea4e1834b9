"""The labelled figures of status.quality become driftline_operator_quality_*
gauges per monitor and role: only while judged (minLabels reached), the
estimate while there is one, label outcomes per window; gone when the
figures go."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftline_operator.analysis.metrics import OperatorMetrics
from driftline_operator.api.status import LabelStatus, QualityFigures, QualityStatus


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": "ml", "monitor": "fraud", **values}.items()))


def quality() -> QualityStatus:
    return QualityStatus(
        labels=LabelStatus(joined=240, unknown=3, expired=1, duplicate=0),
        figures=[
            QualityFigures(
                role="stable", labels=200, status="ok", accuracy=0.91, macro_f1=0.88,
                roc_auc=0.95, roc_auc_bound=0.02, pr_auc=0.9, ece=0.03, log_loss=0.31,
                estimated_accuracy=0.9, estimated_from=900,
            ),
            QualityFigures(
                role="stable", segment="DE", labels=20, status="insufficient_data", accuracy=0.5
            ),
            QualityFigures(
                role="canary", labels=40, status="insufficient_data", accuracy=0.7,
                estimated_accuracy=0.8, estimated_from=90,
            ),
        ],
    )  # fmt: skip


def test_judged_figures_become_gauges_per_role() -> None:
    metrics = OperatorMetrics()
    metrics.record_quality("ml", "fraud", quality())
    found = samples(metrics)
    stable, canary = labels(role="stable"), labels(role="canary")
    assert found[("driftline_operator_quality_accuracy", stable)] == 0.91
    assert found[("driftline_operator_quality_f1", stable)] == 0.88
    assert found[("driftline_operator_quality_roc_auc", stable)] == 0.95
    assert found[("driftline_operator_quality_pr_auc", stable)] == 0.9
    assert found[("driftline_operator_quality_expected_calibration_error", stable)] == 0.03
    assert found[("driftline_operator_quality_log_loss", stable)] == 0.31
    assert ("driftline_operator_quality_rmse", stable) not in found  # not a regression
    # Below minLabels a role's figures are not exported; its counts and estimate are.
    assert ("driftline_operator_quality_accuracy", canary) not in found
    assert found[("driftline_operator_quality_labels", canary)] == 40
    assert found[("driftline_operator_quality_estimated_accuracy", canary)] == 0.8
    assert found[("driftline_operator_quality_estimated_predictions", canary)] == 90
    assert found[("driftline_operator_quality_estimated_accuracy", stable)] == 0.9
    # Segments stay in status: no segment label on these series.
    assert found[("driftline_operator_quality_labels", stable)] == 200
    assert found[("driftline_operator_window_labels", labels(outcome="joined"))] == 240
    assert found[("driftline_operator_window_labels", labels(outcome="unknown"))] == 3


def test_figures_that_went_away_are_removed() -> None:
    metrics = OperatorMetrics()
    metrics.record_quality("ml", "fraud", quality())
    metrics.record_quality("ml", "other", quality())
    regression = QualityStatus(
        figures=[QualityFigures(role="stable", labels=50, status="ok", mae=1.5, rmse=2.0, r2=0.7)]
    )
    metrics.record_quality("ml", "fraud", regression)
    found = samples(metrics)
    assert ("driftline_operator_quality_accuracy", labels(role="stable")) not in found
    assert ("driftline_operator_quality_labels", labels(role="canary")) not in found
    assert found[("driftline_operator_quality_mae", labels(role="stable"))] == 1.5
    assert found[("driftline_operator_quality_r2", labels(role="stable"))] == 0.7
    metrics.record_quality("ml", "fraud", None)  # spec.quality removed
    assert not any(
        ("monitor", "fraud") in group
        for name, group in samples(metrics)
        if name.startswith(("driftline_operator_quality", "driftline_operator_window_labels"))
    )
    metrics.forget("ml", "other")
    assert not any(("monitor", "other") in group for _, group in samples(metrics))


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="no promtool (Debian package prometheus)"
)
def test_promtool_finds_nothing_to_complain_about_in_quality_series() -> None:
    metrics = OperatorMetrics()
    metrics.record_quality("ml", "fraud", quality())
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=metrics.render(), capture_output=True, check=False
    )
    assert result.returncode == 0 and not result.stdout and not result.stderr, result
