"""The rules of ``driftline rules`` checked and run by promtool (Debian package
``prometheus``) on synthetic series that should and should not fire.

``promtool test rules`` compares alerts' annotations too, and ours carry
rendered values (``$value``); the unit-test copy of the rules has its
annotations taken out (``promtool check rules`` checks their templates on the
file as printed, and ``tests/unit/analysis/test_rules.py`` their text).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMTOOL = shutil.which("promtool")
pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(PROMTOOL is None, reason="no promtool (Debian package prometheus)"),
]

NS, MONITOR, MODEL = "ml", "fraud", "fraud"
MONITOR_YAML = f"""
apiVersion: driftline.io/v1alpha1
kind: ModelMonitor
metadata: {{name: {MONITOR}, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: fraud}}}}
  model: {{name: {MODEL}}}
  reference: {{configMapRef: {{name: fraud-reference}}}}
  drift: {{driftShare: 0.5}}
  slos:
    - {{name: availability, metric: successRate, objective: "99.9%"}}
    - {{name: p95, metric: latency, quantile: 0.95, max: 200ms}}
    - {{name: drifted, metric: driftedFeatureShare, max: 0.3}}
"""
SIDECAR = f'namespace="{NS}",model="{MODEL}",version="v1",role="stable",pod="fraud-0"'
OPERATOR = f'namespace="{NS}",monitor="{MONITOR}"'
RPS = 10  # per second, so 600 per 1m step


def _requests(error_share: float) -> list[dict[str, str]]:
    errors = RPS * 60 * error_share
    return [
        {
            "series": f'driftline_requests_total{{{SIDECAR},code="200"}}',
            "values": f"0+{RPS * 60 - errors:g}x1000",
        },
        {
            "series": f'driftline_requests_total{{{SIDECAR},code="503"}}',
            "values": f"0+{errors:g}x1000",
        },
    ]


def _latency(slow_share: float) -> list[dict[str, str]]:
    total = RPS * 60
    name = "driftline_request_duration_seconds"
    return [
        {"series": f"{name}_count{{{SIDECAR}}}", "values": f"0+{total}x1000"},
        {
            "series": f'{name}_bucket{{{SIDECAR},le="0.2"}}',
            "values": f"0+{total * (1 - slow_share):g}x1000",
        },
    ]


def _records(missing_share: float) -> list[dict[str, str]]:
    total = RPS * 60
    return [
        {"series": f"driftline_capture_records_total{{{SIDECAR}}}", "values": f"0+{total}x1000"},
        {
            "series": f'driftline_feature_missing_total{{{SIDECAR},feature="f0"}}',
            "values": f"0+{total * missing_share:g}x1000",
        },
    ]


def _burn(slo: str, severity: str) -> dict[str, Any]:
    return {"exp_labels": {"namespace": NS, "monitor": MONITOR, "slo": slo, "severity": severity}}


def _alert(name: str, at: str, *expected: dict[str, Any]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": list(expected)}


def _case(
    series: list[dict[str, str]], alerts: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {"interval": "1m", "input_series": series, "alert_rule_test": alerts, **extra}


BURN = "DriftlineErrorBudgetBurn"
CASES = {
    # 10 % errors burn a 0.1 % budget 100x: both pages' pairs fire, and the tickets'.
    "fast burn pages": _case(
        _requests(0.10) + _latency(0.0),
        [
            _alert(BURN, "10m", _burn("availability", "page"), _burn("availability", "ticket")),
            _alert("DriftlineDatasetDrift", "10m"),
        ],
        promql_expr_test=[
            {
                "expr": f'driftline:slo_error:ratio_rate5m{{slo="availability",{OPERATOR}}}',
                "eval_time": "10m",
                "exp_samples": [
                    {
                        "labels": f'driftline:slo_error:ratio_rate5m{{slo="availability",{OPERATOR}}}',
                        "value": 0.1,
                    }
                ],
            },
            {
                "expr": f'driftline:slo_error_budget:ratio{{slo="p95",{OPERATOR}}}',
                "eval_time": "1m",
                "exp_samples": [
                    {
                        "labels": f'driftline:slo_error_budget:ratio{{slo="p95",{OPERATOR}}}',
                        "value": 0.05,
                    }
                ],
            },
        ],
    ),
    # 0.2 % errors burn it 2x: under the pages' 14.4x and 6x and the 1d ticket's
    # 3x, over the 3d one's 1x: a ticket only, once 6h of it has been seen.
    "slow burn tickets": _case(
        _requests(0.002) + _latency(0.0),
        [
            _alert(BURN, "7h", _burn("availability", "ticket")),
        ],
    ),
    # 0.05 % errors (half the budget) and every request fast: nothing fires.
    "healthy fires nothing": _case(
        _requests(0.0005) + _latency(0.0) + _records(0.0),
        [
            _alert(BURN, "10m"),
            _alert(BURN, "7h"),
            _alert("DriftlineFeatureMissing", "1h"),
        ],
    ),
    # 80 % of requests over 200ms spend a 5 % budget 16x: the latency SLO pages.
    "slow answers page the latency SLO": _case(
        _requests(0.0) + _latency(0.8),
        [_alert(BURN, "10m", _burn("p95", "page"), _burn("p95", "ticket"))],
    ),
    # The operator's drift verdicts: the dataset and a feature drifted for
    # 15m; the driftedFeatureShare SLO breached for 5m.
    "drift alerts": _case(
        [
            {
                "series": f"driftline_operator_drifted_feature_share{{{OPERATOR}}}",
                "values": "0.75x40",
            },
            {
                "series": f'driftline_operator_feature_drifted{{{OPERATOR},feature="f0"}}',
                "values": "1x40",
            },
            {
                "series": f'driftline_operator_feature_drifted{{{OPERATOR},feature="f1"}}',
                "values": "0x40",
            },
            {
                "series": f'driftline_operator_slo_ok{{{OPERATOR},slo="drifted"}}',
                "values": "1x5 0x30",
            },
        ],
        [
            _alert("DriftlineDatasetDrift", "10m"),
            _alert(
                "DriftlineDatasetDrift",
                "20m",
                {"exp_labels": {"namespace": NS, "monitor": MONITOR, "severity": "ticket"}},
            ),
            _alert(
                "DriftlineFeatureDrift",
                "20m",
                {
                    "exp_labels": {
                        "namespace": NS,
                        "monitor": MONITOR,
                        "feature": "f0",
                        "severity": "info",
                    }
                },
            ),
            _alert("DriftlineSLOBreached", "8m"),
            _alert(
                "DriftlineSLOBreached",
                "12m",
                {
                    "exp_labels": {
                        "namespace": NS,
                        "monitor": MONITOR,
                        "slo": "drifted",
                        "severity": "ticket",
                    }
                },
            ),
        ],
    ),
    # The operator's data-quality verdict: 20 % of "country"'s values are
    # categories the reference never saw (5 % allowed), "device"'s 1 %.
    "unseen categories": _case(
        [
            {
                "series": f'driftline_operator_feature_unseen_category_ratio{{{OPERATOR},feature="country"}}',
                "values": "0.2x40",
            },
            {
                "series": f'driftline_operator_feature_unseen_category_ratio{{{OPERATOR},feature="device"}}',
                "values": "0.01x40",
            },
        ],
        [
            _alert("DriftlineUnseenCategories", "10m"),
            _alert(
                "DriftlineUnseenCategories",
                "20m",
                {
                    "exp_labels": {
                        "namespace": NS,
                        "monitor": MONITOR,
                        "feature": "country",
                        "severity": "ticket",
                    }
                },
            ),
        ],
    ),
    # 10 % of rows without f0, for longer than 15m.
    "missing values": _case(
        _requests(0.0) + _records(0.10),
        [
            _alert("DriftlineFeatureMissing", "10m"),
            _alert(
                "DriftlineFeatureMissing",
                "40m",
                {
                    "exp_labels": {
                        "namespace": NS,
                        "monitor": MONITOR,
                        "feature": "f0",
                        "severity": "ticket",
                    }
                },
            ),
        ],
    ),
}


def _without_annotations(document: dict[str, Any]) -> dict[str, Any]:
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return document


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rule file exactly as ``driftline rules`` prints it."""
    tmp = tmp_path_factory.mktemp("rules")
    monitor = tmp / "monitor.yaml"
    monitor.write_text(MONITOR_YAML)
    result = subprocess.run(
        [sys.executable, "-m", "driftline_operator.cli.main", "rules", str(monitor)],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp / "rules.yaml"
    path.write_text(result.stdout)
    return path


def test_promtool_checks_the_printed_rules(printed: Path) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(printed)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_runs_the_rules_on_synthetic_series(printed: Path, tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(_without_annotations(yaml.safe_load(printed.read_text()))))
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules)],
                "evaluation_interval": "1m",
                "tests": [{"name": name, **case} for name, case in CASES.items()],
            },
            sort_keys=False,
        )
    )
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120
    )
    (tmp_path / "promtool-test-rules.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
