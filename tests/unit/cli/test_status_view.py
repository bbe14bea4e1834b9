"""What ``driftline status`` shows, from ModelMonitor bodies (no API server:
tests/integration/test_status_command.py runs the command against one)."""

from typing import Any

from rich.console import Console

from driftline_operator.api.status import SloStatus
from driftline_operator.cli.status_view import (
    HISTORY,
    budget_left,
    detail,
    overview,
    plain,
    rich_group,
)


def body(name: str, status: dict[str, Any] | None = None, namespace: str = "ml") -> dict[str, Any]:
    return {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "ModelMonitor",
        "metadata": {"name": name, "namespace": namespace, "uid": "u-" + name},
        "status": status or {},
    }


HEALTHY = {
    "phase": "Healthy",
    "requestsPerSecond": 12.5,
    "p95Ms": 88.0,
    "errorPercent": 0.5,
    "drift": {"status": "ok", "driftedShare": 0.0, "drifted": 0},
    "slos": [
        {"name": "availability", "verdict": "ok", "burnRate": 0.25},
        {"name": "p95", "verdict": "breach", "value": 0.3, "objective": 0.2},
    ],
}


def test_budget_left_is_one_minus_the_burn_rate_floored_at_zero():
    assert budget_left(SloStatus(name="a", verdict="ok", burn_rate=0.25)) == 0.75
    assert budget_left(SloStatus(name="a", verdict="breach", burn_rate=14.4)) == 0.0
    assert budget_left(SloStatus(name="p95", verdict="ok", value=0.1)) is None


def test_overview_rows_and_plain_columns_line_up():
    text = plain(overview([body("fraud", HEALTHY), body("new")], namespaces=False))
    lines = text.splitlines()
    assert lines[0] == "ModelMonitors"
    header, fraud, new = lines[1], lines[2], lines[3]
    for column in ("PHASE", "REQ/S", "P95", "SLOS"):
        at = header.index(column)
        assert fraud[at - 1] == " " and new[at - 1] == " "  # every cell starts under its header
    assert "Healthy" in fraud and "12.5" in fraud and "88 ms" in fraud and "0.5%" in fraud
    assert "1/2 ok, breach: p95, budget 75%" in fraud
    assert "Pending" in new and "no reference" in new and "never" in new


def test_an_unreadable_status_is_named_not_fatal():
    text = plain(overview([body("odd", {"phase": "Healthy", "bogus": 1})], namespaces=True))
    assert "unreadable status (status.bogus: Extra inputs are not permitted)" in text
    assert text.splitlines()[1].split()[:2] == ["NAMESPACE", "NAME"]


def test_no_monitors_says_so():
    assert "(no ModelMonitors)" in plain(overview([], namespaces=False))


def test_detail_shows_the_newest_events_oldest_first():
    events = [
        {
            "type": "Normal",
            "reason": f"Step{i}",
            "message": f"m{i}",
            "lastTimestamp": f"2026-12-01T10:{i:02d}:00Z",
        }
        for i in range(HISTORY + 5)
    ]
    text = plain(detail(body("fraud", HEALTHY), events))
    history = text[text.index("History (Events)") :].splitlines()
    reasons = [line.split()[2] for line in history[2 : 2 + HISTORY]]
    assert reasons == [f"Step{i}" for i in range(5, HISTORY + 5)]
    assert "availability  ok" in text and "75.00%" in text  # budget left


def test_rich_rendering_draws_tables_with_the_same_cells():
    console = Console(record=True, width=200, force_terminal=True)
    console.print(rich_group(overview([body("fraud", HEALTHY)], namespaces=False)))
    text = console.export_text()
    assert "━" in text or "─" in text
    assert "fraud" in text and "Healthy" in text and "1/2 ok, breach: p95, budget 75%" in text


def test_detail_shows_model_quality_per_role():
    labelled = {
        **HEALTHY,
        "quality": {
            "labels": {"joined": 240, "unknown": 1, "expired": 0, "duplicate": 2},
            "figures": [
                {"role": "stable", "labels": 200, "status": "ok", "accuracy": 0.91,
                 "macroF1": 0.88, "rocAuc": 0.951, "estimatedAccuracy": 0.9},
                {"role": "canary", "labels": 40, "status": "insufficient_data",
                 "accuracy": 0.7},
            ],
        },
    }  # fmt: skip
    text = plain(detail(body("fraud", labelled), []))
    assert "Model quality: labels 240 joined, 1 unknown, 0 expired, 2 duplicate" in text
    stable = next(line for line in text.splitlines() if line.strip().startswith("stable "))
    assert stable.split() == [
        "stable",
        "all",
        "200",
        "91.00%",
        "0.88",
        "0.951",
        "-",
        "90.00%",
        "ok",
    ]
    assert "insufficient data" in text
