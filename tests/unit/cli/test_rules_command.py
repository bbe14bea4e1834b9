"""``driftline rules``: a rule file from a ModelMonitor file, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from driftline_operator.cli.main import main

ROOT = Path(__file__).resolve().parents[3]


def test_prints_the_example_monitors_rules(capsys: pytest.CaptureFixture[str]):
    assert main(["rules", str(ROOT / "examples/fraud/modelmonitor.yaml"), "-n", "ml"]) == 0
    printed = capsys.readouterr().out
    assert "&id" not in printed and "*id" not in printed  # no YAML anchors
    document = yaml.safe_load(printed)
    names = [g["name"] for g in document["groups"]]
    assert names == ["driftline_ml_fraud_recordings", "driftline_ml_fraud_alerts"]
    alerts = {r["alert"] for r in document["groups"][1]["rules"]}
    assert {"DriftlineErrorBudgetBurn", "DriftlineSLOBreached", "DriftlineDatasetDrift"} <= alerts


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "monitor.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("kind: ConfigMap\nmetadata: {name: x}\n", "holds no ModelMonitor"),
        ("kind: ModelMonitor\nmetadata: {name: x}\nspec: {}\n", "no metadata.namespace"),
        (
            "kind: ModelMonitor\nmetadata: {name: x, namespace: ml}\n"
            "spec: {selector: {matchLabels: {a: b}}, model: {name: m},"
            " slos: [{name: p, metric: latency, max: 200ms}]}\n",
            "ModelMonitor ml/x: spec.slos.0: slo 'p': latency needs a quantile",
        ),
        ("kind: [\n", "is not YAML"),
    ],
)
def test_bad_input_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
):
    assert main(["rules", _write(tmp_path, text)]) == 2
    assert says in capsys.readouterr().err


def test_a_missing_file_is_named(capsys: pytest.CaptureFixture[str]):
    assert main(["rules", "/nonexistent/monitor.yaml"]) == 2
    assert "cannot read /nonexistent/monitor.yaml" in capsys.readouterr().err
