"""The chart ships the generated Grafana dashboard as a ConfigMap for Grafana's
sidecar provisioning (grafana_dashboard: "1"), unless turned off."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helm import CHART, HELM, needs_helm

from driftline_operator.cli.dashboards import FILE_NAME, build

pytestmark = [pytest.mark.helm, needs_helm]


def _render(*values: str) -> list[dict[str, Any]]:
    assert HELM is not None
    command = [HELM, "template", "rel", str(CHART), "--namespace", "driftline"]
    for value in values:
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _dashboards(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]


def test_the_dashboard_configmap_is_on_by_default():
    [config_map] = _dashboards(_render())
    assert config_map["metadata"]["name"] == "rel-driftline-model-dashboard"
    assert config_map["metadata"]["namespace"] == "driftline"
    assert json.loads(config_map["data"][FILE_NAME]) == build()


def test_prometheus_rule_labels_reach_the_operator():
    [deployment] = [
        m for m in _render("prometheusRules.labels.release=kps") if m["kind"] == "Deployment"
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DRIFTLINE_PROMETHEUS_RULE_LABELS"] == "release=kps"


def test_labels_and_annotations_are_added_and_the_toggle_removes_it(tmp_path: Path):
    [config_map] = _dashboards(
        _render(
            "grafanaDashboards.labels.team=ml",
            "grafanaDashboards.annotations.grafana_folder=Driftline",
        )
    )
    assert config_map["metadata"]["labels"]["team"] == "ml"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Driftline"}
    assert _dashboards(_render("grafanaDashboards.enabled=false")) == []
