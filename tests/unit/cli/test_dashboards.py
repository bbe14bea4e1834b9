"""The chart's Grafana dashboard is what the generator makes, and every panel
queries something (tests/integration/test_dashboard_queries.py runs them all)."""

from __future__ import annotations

import json

from driftline_operator.cli.dashboards import CHART_DIR, FILE_NAME, ROWS, build, main, render


def test_the_committed_dashboard_is_the_generators():
    assert (CHART_DIR / FILE_NAME).read_text(encoding="utf-8") == render()
    assert main(["--check"]) == 0


def test_check_fails_on_a_stale_copy(tmp_path):
    (tmp_path / FILE_NAME).write_text("{}\n")
    assert main(["--check", "--output-dir", str(tmp_path)]) == 1
    assert main(["--output-dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / FILE_NAME).read_text()) == build()


def test_every_panel_has_its_queries_and_one_source_for_each():
    dashboard = build()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert [p["title"] for p in panels] == [p.title for row in ROWS for p in row.panels]
    assert [p["title"] for p in dashboard["panels"] if p["type"] == "row"] == [
        r.title for r in ROWS
    ]
    for panel, spec in zip(panels, [p for row in ROWS for p in row.panels], strict=True):
        assert [t["expr"] for t in panel["targets"]] == [q.expr for q in spec.queries]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    kinds = {p["type"] for p in panels}
    assert {"timeseries", "heatmap", "stat"} <= kinds


def test_variables_and_the_rollout_annotation():
    dashboard = build()
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace", "monitor", "model", "version"]
    version = dashboard["templating"]["list"][-1]
    assert version["multi"] and version["includeAll"] and version["allValue"] == ".*"
    [annotation] = dashboard["annotations"]["list"]
    assert "driftline_canary_weight_percent" in annotation["expr"]
    assert annotation["titleFormat"] == "canary weight {{value}}%"
