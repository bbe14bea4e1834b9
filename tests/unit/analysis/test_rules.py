"""analysis.rules: which rules a monitor gets, their windows, budgets and runbooks.
(promtool runs them on series in tests/component/test_alert_rules.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from driftline_operator.analysis.rules import (
    BURN_WINDOWS,
    RATIO_WINDOWS,
    error_budget,
    latency_bound,
    rule_groups,
)
from driftline_operator.api.spec import ModelMonitorSpec, Slo


def _spec(*slos: dict[str, Any], reference: bool = True) -> ModelMonitorSpec:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "fraud"}},
        "model": {"name": "fraud-model"},
        "slos": list(slos),
    }
    if reference:
        body["reference"] = {"configMapRef": {"name": "ref"}}
    return ModelMonitorSpec.model_validate(body)


def _rules(spec: ModelMonitorSpec) -> list[dict[str, Any]]:
    return [r for g in rule_groups(spec, namespace="ml", monitor="fraud") for r in g["rules"]]


AVAILABILITY = {"name": "availability", "metric": "successRate", "objective": "99.9%"}


def test_the_burn_windows_are_the_sre_workbooks():
    assert [(w.long, w.short, w.factor, w.severity) for w in BURN_WINDOWS] == [
        ("1h", "5m", 14.4, "page"),
        ("6h", "30m", 6.0, "page"),
        ("1d", "2h", 3.0, "ticket"),
        ("3d", "6h", 1.0, "ticket"),
    ]
    needed = {w.long for w in BURN_WINDOWS} | {w.short for w in BURN_WINDOWS}
    assert needed <= set(RATIO_WINDOWS)


@pytest.mark.parametrize(
    ("slo", "budget"),
    [
        (AVAILABILITY, 0.001),
        ({"name": "e", "metric": "errorRate", "max": "2%"}, 0.02),
        ({"name": "p", "metric": "latency", "quantile": 0.99, "max": "300ms"}, 0.01),
        ({"name": "d", "metric": "driftedFeatureShare", "max": 0.3}, None),
    ],
)
def test_error_budgets(slo: dict[str, Any], budget: float | None):
    found = error_budget(Slo.model_validate(slo))
    assert found == pytest.approx(budget) if budget is not None else found is None


def test_latency_is_judged_at_a_histogram_bound():
    assert latency_bound(0.2) == 0.2
    assert latency_bound(0.25) == 0.3  # the next bound up
    assert latency_bound(60.0) == 10.0  # past the largest: the largest


def test_a_budgeted_slo_gets_a_ratio_per_window_and_a_page_and_a_ticket():
    rules = _rules(_spec(AVAILABILITY))
    records = [r["record"] for r in rules if "record" in r]
    assert records == [
        "driftline:monitor:info",
        *(f"driftline:slo_error:ratio_rate{w}" for w in RATIO_WINDOWS),
        "driftline:slo_error_budget:ratio",
        "driftline:slo_error_budget_remaining:ratio",
    ]
    five = next(r for r in rules if r.get("record") == "driftline:slo_error:ratio_rate5m")
    assert five["labels"] == {"namespace": "ml", "monitor": "fraud", "slo": "availability"}
    assert 'code=~"5.."' in five["expr"] and 'model="fraud-model"' in five["expr"]
    assert 'role!="shadow"' in five["expr"]
    burns = [r for r in rules if r.get("alert") == "DriftlineErrorBudgetBurn"]
    assert [b["labels"]["severity"] for b in burns] == ["page", "ticket"]
    page, ticket = burns
    assert "ratio_rate1h" in page["expr"] and "(14.4 * 0.001)" in page["expr"]
    assert "ratio_rate30m" in page["expr"] and "(6 * 0.001)" in page["expr"]
    assert "ratio_rate3d" in ticket["expr"] and "ratio_rate1h" not in ticket["expr"]


def test_a_latency_slo_counts_requests_over_its_bound():
    rules = _rules(_spec({"name": "p95", "metric": "latency", "quantile": 0.95, "max": "200ms"}))
    five = next(r for r in rules if r.get("record") == "driftline:slo_error:ratio_rate5m")
    assert "driftline_request_duration_seconds_bucket{" in five["expr"]
    assert 'le="0.2"' in five["expr"]
    budget = next(r for r in rules if r.get("record") == "driftline:slo_error_budget:ratio")
    assert budget["expr"] == "vector(0.05)"


def test_an_slo_without_a_budget_alerts_on_the_operators_verdict():
    rules = _rules(_spec({"name": "drifted", "metric": "driftedFeatureShare", "max": 0.3}))
    assert [r["record"] for r in rules if "record" in r] == ["driftline:monitor:info"]
    [breach] = [r for r in rules if r.get("alert") == "DriftlineSLOBreached"]
    assert breach["expr"] == (
        'driftline_operator_slo_ok{namespace="ml",monitor="fraud",slo="drifted"} == 0'
    )


def test_drift_alerts_need_a_reference():
    with_reference = {r.get("alert") for r in _rules(_spec())}
    without = {r.get("alert") for r in _rules(_spec(reference=False))}
    assert {"DriftlineDatasetDrift", "DriftlineFeatureDrift"} <= with_reference
    assert not {"DriftlineDatasetDrift", "DriftlineFeatureDrift"} & without
    assert {"DriftlineFeatureMissing", "DriftlineCaptureDropped"} <= without


def test_every_alert_says_what_to_check():
    for rule in _rules(_spec(AVAILABILITY, {"name": "d", "metric": "predictionDrift", "max": 0.2})):
        if "alert" not in rule:
            continue
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, rule["alert"]
        assert "ml/fraud" in annotations["summary"] or "fraud" in annotations["runbook"]
        assert len(annotations["runbook"]) > 80, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket", "info")


def test_the_monitor_info_names_its_model():
    [info] = [r for r in _rules(_spec()) if r.get("record") == "driftline:monitor:info"]
    assert info["labels"] == {"namespace": "ml", "monitor": "fraud", "model": "fraud-model"}


def test_label_values_are_quoted_for_promql():
    spec = ModelMonitorSpec.model_validate(
        {
            "selector": {"matchLabels": {"a": "b"}},
            "model": {"name": 'we"ird\\'},
            "slos": [AVAILABILITY],
        }
    )
    five = next(r for r in _rules(spec) if r.get("record") == "driftline:slo_error:ratio_rate5m")
    assert 'model="we\\"ird\\\\"' in five["expr"]


def test_data_quality_alerts_use_the_specs_bounds():
    spec = ModelMonitorSpec.model_validate(
        {
            "selector": {"matchLabels": {"a": "b"}},
            "model": {"name": "m"},
            "dataQuality": {"maxMissingRate": 0.2, "maxSchemaErrorRate": 0.001},
        }
    )
    alerts = {r["alert"]: r for r in _rules(spec) if "alert" in r}
    assert alerts["DriftlineFeatureMissing"]["expr"].endswith("> 0.2")
    assert "sum by (feature)" in alerts["DriftlineFeatureMissing"]["expr"]
    assert alerts["DriftlineFeatureOutOfRange"]["expr"].endswith("> 0.05")  # the default
    unseen = alerts["DriftlineUnseenCategories"]["expr"]
    assert unseen.startswith("driftline_operator_feature_unseen_category_ratio{")
    assert unseen.endswith("> 0.05")
    schema = alerts["DriftlineSchemaViolations"]
    assert schema["expr"].endswith("> 0.001") and " by (" not in schema["expr"]
    assert "0.10%" in schema["annotations"]["description"]
