"""The operator's own metrics: per-monitor series, replaced and forgotten; promtool-clean."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftline_operator.analysis.metrics import OperatorMetrics, serve
from driftline_operator.api.status import SloStatus
from driftline_operator.stats.attribution import AttributionReference, attribution_drift
from driftline_operator.stats.verdict import DatasetDrift, FeatureDrift


def feature(name: str, score: float | None, status: str = "ok") -> FeatureDrift:
    return FeatureDrift(
        feature=name,
        kind="numeric",
        status=status,  # type: ignore[arg-type]
        method="wasserstein",
        score=score,
        threshold=0.1,
        samples=0 if score is None else 500,
    )


def drift(*features: FeatureDrift) -> DatasetDrift:
    judged = [f for f in features if f.score is not None]
    drifted = [f.feature for f in judged if f.drift]
    return DatasetDrift(
        features=list(features),
        drifted=drifted,
        drifted_share=len(drifted) / len(judged) if judged else 0.0,
        drift=False,
        insufficient=[f.feature for f in features if f.score is None],
        prediction=feature("prediction", 0.02),
    )


SLOS = [
    SloStatus(name="p95", verdict="breach", value=0.3, objective=0.2),
    SloStatus(name="availability", verdict="ok", value=0.999, objective=0.99, burn_rate=0.1),
    SloStatus(name="drift", verdict="insufficient_data"),
]


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": "ml", "monitor": "fraud", **values}.items()))


def record(metrics: OperatorMetrics, monitor: str = "fraud", **overrides: object) -> None:
    arguments: dict = {
        "drift": drift(feature("amount", 0.31, "drift"), feature("age", 0.02), feature("x", None)),
        "slos": SLOS,
        "requests": {"stable": 1200, "canary": 60},
        **overrides,
    }
    metrics.record_analysis("ml", monitor, **arguments)


def test_one_analysis_becomes_labelled_series() -> None:
    metrics = OperatorMetrics()
    record(metrics)
    metrics.count_collection_errors("ml", "fraud", 2)
    found = samples(metrics)
    score = "driftline_operator_feature_drift_score"
    assert found[(score, labels(feature="amount", method="wasserstein"))] == 0.31
    assert found[(score, labels(feature="age", method="wasserstein"))] == 0.02
    assert not any(key[0] == score and ("feature", "x") in key[1] for key in found)  # no data
    assert found[("driftline_operator_feature_drifted", labels(feature="amount"))] == 1.0
    assert found[("driftline_operator_drifted_feature_share", labels())] == 0.5
    assert (
        found[("driftline_operator_prediction_drift_score", labels(method="wasserstein"))] == 0.02
    )
    assert found[("driftline_operator_slo_ok", labels(slo="p95"))] == 0.0
    assert found[("driftline_operator_slo_ok", labels(slo="availability"))] == 1.0
    assert ("driftline_operator_slo_ok", labels(slo="drift")) not in found
    assert found[("driftline_operator_slo_burn_rate", labels(slo="availability"))] == 0.1
    assert found[("driftline_operator_window_requests", labels(role="canary"))] == 60
    assert found[("driftline_operator_collection_errors_total", labels())] == 2


def test_series_that_went_away_are_removed_and_forget_removes_the_rest() -> None:
    metrics = OperatorMetrics()
    record(metrics)
    record(metrics, monitor="other")
    record(metrics, drift=drift(feature("age", 0.05)), slos=SLOS[:1], requests={"stable": 5})
    found = samples(metrics)
    assert ("driftline_operator_feature_drifted", labels(feature="amount")) not in found
    assert ("driftline_operator_slo_ok", labels(slo="availability")) not in found
    assert ("driftline_operator_window_requests", labels(role="canary")) not in found
    assert found[("driftline_operator_window_requests", labels(role="stable"))] == 5

    metrics.count_collection_errors("ml", "fraud", 0)
    metrics.forget("ml", "fraud")
    left = {labels_ for _, labels_ in samples(metrics)}
    assert all(("monitor", "fraud") not in group for group in left)
    assert any(("monitor", "other") in group for group in left)


def test_attribution_drift_is_a_gauge_only_while_judged() -> None:
    metrics = OperatorMetrics()
    reference = AttributionReference.from_values(["a", "b"], np.array([[1.0, 0.1], [2.0, 0.2]]))
    window = reference.empty()
    window.add(np.array([[0.1, 1.0]] * 10))
    judged = attribution_drift(reference, window, threshold=0.15, min_explanations=5)
    metrics.record_attributions("ml", "fraud", judged)
    found = samples(metrics)
    assert found[("driftline_operator_attribution_drift", labels())] == judged.distance
    assert judged.distance is not None and judged.distance > 0.5
    assert found[("driftline_operator_attribution_share", labels(feature="b"))] > 0.9
    too_few = attribution_drift(reference, window, threshold=0.15, min_explanations=50)
    metrics.record_attributions("ml", "fraud", too_few)
    assert not any(
        name.startswith("driftline_operator_attribution") for name, _ in samples(metrics)
    )


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="no promtool (Debian package prometheus)"
)
def test_promtool_finds_nothing_to_complain_about() -> None:
    metrics = OperatorMetrics()
    record(metrics)
    metrics.count_collection_errors("ml", "fraud", 1)
    metrics.analysis_duration.observe(0.02)
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=metrics.render(), capture_output=True, check=False
    )
    assert result.returncode == 0 and not result.stdout and not result.stderr, result


def test_serve_exposes_the_registry_over_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = OperatorMetrics()
    record(metrics)
    server = serve(port, addr="127.0.0.1", metrics=metrics)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'driftline_operator_slo_ok{monitor="fraud",namespace="ml",slo="p95"} 0.0' in text
    finally:
        server.shutdown()
        server.server_close()
