"""What ``driftline status`` shows, as plain data, and its two renderings.

``overview`` (one line per monitor) and ``detail`` (one monitor, with its
Events) turn ModelMonitor objects into a ``View``: titled sections of rows.
``plain`` prints a View as kubectl-like aligned text, ``rich_group`` as rich
tables. Pure: no API calls, so the tests read a View directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from rich.console import Group
from rich.table import Table

from driftline_operator.api.status import ModelMonitorStatus, SloStatus

HISTORY = 20  # Events shown for one monitor, the newest


# -- what is shown, independent of how ------------------------------------------


@dataclass
class Section:
    """A titled table: ``rows`` under ``headers``; with no headers, key-value pairs."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class View:
    sections: list[Section] = field(default_factory=list)


def _num(value: float | None, unit: str = "", digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def budget_left(slo: SloStatus) -> float | None:
    """Error budget left over the SLO's window: 1 - burn rate (a burn rate of
    1 spends the budget exactly), for successRate SLOs, which have one."""
    return None if slo.burn_rate is None else max(0.0, 1.0 - slo.burn_rate)


def _parse(body: dict[str, Any]) -> tuple[ModelMonitorStatus | None, str]:
    try:
        return ModelMonitorStatus.model_validate(body.get("status") or {}), ""
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = "status." + ".".join(str(p) for p in first["loc"])
        return None, f"unreadable status ({where}: {first['msg']}): an operator of another version?"


def _drift(status: ModelMonitorStatus) -> str:
    drift = status.drift
    if drift.status in ("no_reference", "insufficient_data"):
        return drift.status.replace("_", " ")
    top = ", ".join(f.name for f in drift.features if f.status == "drift")
    return f"{drift.status} {drift.drifted}" + (f" ({top})" if top else "")


def _slos(status: ModelMonitorStatus) -> str:
    if not status.slos:
        return "-"
    breached = [s.name for s in status.slos if s.verdict == "breach"]
    budgets = [b for s in status.slos if (b := budget_left(s)) is not None]
    text = f"{len(status.slos) - len(breached)}/{len(status.slos)} ok"
    if breached:
        text += f", breach: {', '.join(breached)}"
    if budgets:
        text += f", budget {min(budgets):.0%}"
    return text


def _rollout(status: ModelMonitorStatus) -> str:
    rollout = status.rollout
    if rollout is None or rollout.phase is None:
        return "-"
    return f"{rollout.phase} step {rollout.step} at {rollout.weight:g}%"


def overview(monitors: Sequence[dict[str, Any]], *, namespaces: bool) -> View:
    headers = ["NAME", "PHASE", "REQ/S", "P95", "ERRORS", "DRIFT", "SLOS", "ROLLOUT", "ANALYSED"]
    if namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for body in monitors:
        meta = body["metadata"]
        status, problem = _parse(body)
        if status is None:
            row = [meta["name"], "?", "-", "-", "-", problem, "-", "-", "-"]
        else:
            row = [
                meta["name"],
                status.phase,
                _num(status.requests_per_second),
                _num(status.p95_ms, " ms"),
                _num(status.error_percent, "%"),
                _drift(status),
                _slos(status),
                _rollout(status),
                status.last_analysis_time or "never",
            ]
        rows.append([meta["namespace"], *row] if namespaces else row)
    note = "" if rows else "no ModelMonitors"
    return View([Section("ModelMonitors", headers, rows, note)])


def detail(body: dict[str, Any], events: Sequence[dict[str, Any]]) -> View:
    meta = body["metadata"]
    name = f"{meta['namespace']}/{meta['name']}"
    status, problem = _parse(body)
    if status is None:
        return View([Section(f"ModelMonitor {name}", [], [["status", problem]])])
    pods = status.pods
    sections = [
        Section(
            f"ModelMonitor {name}",
            [],
            [
                ["phase", status.phase],
                [
                    "pods",
                    f"{pods.monitored} monitored of {pods.selected} selected"
                    + (f", unreachable: {', '.join(pods.unreachable)}" if pods.unreachable else ""),
                ],
                ["last analysis", status.last_analysis_time or "never"],
                *[
                    [f"condition {c.type}", f"{c.status} {c.reason}: {c.message}".rstrip(": ")]
                    for c in status.conditions
                ],
            ],
        ),
        Section(
            "Traffic",
            ["ROLE", "REQUESTS", "REQ/S", "ERRORS", "P50", "P95", "P99"],
            [
                [
                    w.role,
                    str(w.requests),
                    _num(w.requests_per_second),
                    _pct(w.error_rate),
                    _num(w.p50_ms, " ms"),
                    _num(w.p95_ms, " ms"),
                    _num(w.p99_ms, " ms"),
                ]
                for w in status.windows
            ],
            note="" if status.windows else "no window yet",
        ),
    ]
    drift = status.drift
    features = [*drift.features, *([drift.prediction] if drift.prediction else [])]
    sections.append(
        Section(
            f"Drift: {drift.status.replace('_', ' ')}, {drift.drifted} drifted"
            + (f" ({_pct(drift.drifted_share)})" if drift.drifted_share is not None else ""),
            ["FEATURE", "STATISTIC", "VALUE", "THRESHOLD", "VERDICT", "VALUES"],
            [
                [
                    f.name,
                    f.method,
                    _num(f.score, digits=4),
                    _num(f.threshold, digits=4),
                    f.status,
                    str(f.samples),
                ]
                for f in features
            ],
        )
    )
    quality = status.data_quality
    if quality is not None:
        sections.append(
            Section(
                f"Data quality: {quality.status.replace('_', ' ')} over {quality.rows} rows",
                [],
                [
                    [
                        "schema errors",
                        f"{quality.schema_errors} ({_pct(quality.schema_error_rate)})",
                    ],
                    ["breaches", ", ".join(quality.breaches) or "none"],
                ],
            )
        )
    labelled = status.quality
    if labelled is not None:
        outcomes = labelled.labels
        sections.append(
            Section(
                f"Model quality: labels {outcomes.joined} joined, {outcomes.unknown} unknown, "
                f"{outcomes.expired} expired, {outcomes.duplicate} duplicate",
                ["ROLE", "SEGMENT", "LABELS", "ACCURACY", "F1", "ROC AUC", "RMSE", "ESTIMATED",
                 "STATUS"],
                [
                    [
                        f.role,
                        f.segment or "all",
                        str(f.labels),
                        _pct(f.accuracy),
                        _num(f.macro_f1),
                        _num(f.roc_auc),
                        _num(f.rmse),
                        _pct(f.estimated_accuracy),
                        f.status.replace("_", " "),
                    ]
                    for f in labelled.figures
                ],
                note="" if labelled.figures else "no labelled predictions yet",
            )
        )  # fmt: skip
    sections.append(
        Section(
            "SLOs",
            ["SLO", "VERDICT", "VALUE", "OBJECTIVE", "BURN RATE", "BUDGET LEFT", "MESSAGE"],
            [
                [
                    s.name,
                    s.verdict,
                    _num(s.value, digits=4),
                    _num(s.objective, digits=4),
                    _num(s.burn_rate),
                    _pct(budget_left(s)),
                    s.message,
                ]
                for s in status.slos
            ],
            note="" if status.slos else "no SLOs in the spec",
        )
    )
    rollout = status.rollout
    if rollout is not None and rollout.phase is not None:
        pending = ", ".join(rollout.pending.actions) if rollout.pending else "none"
        sections.append(
            Section(
                f"Rollout: {rollout.phase}",
                [],
                [
                    ["step", str(rollout.step)],
                    ["weight", f"{rollout.weight:g}%"],
                    ["failed analyses", str(rollout.failures)],
                    ["step started", rollout.step_started_at or "-"],
                    ["last decision", rollout.decision or "-"],
                    ["revision", rollout.revision or "-"],
                    ["pending actions", pending],
                ],
            )
        )
    history = [
        [
            event_time(e),
            e.get("type") or "",
            e.get("reason") or "",
            str(e.get("count") or 1),
            e.get("message") or "",
        ]
        for e in events[-HISTORY:]
    ]
    sections.append(
        Section(
            "History (Events)",
            ["TIME", "TYPE", "REASON", "COUNT", "MESSAGE"],
            history,
            note="" if history else "no Events",
        )
    )
    return View(sections)


def event_time(event: dict[str, Any]) -> str:
    return str(
        event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or ""
    )


# -- rendering -------------------------------------------------------------------


def plain(view: View) -> str:
    """kubectl-like text: a title line, then columns aligned with two spaces."""
    out: list[str] = []
    for section in view.sections:
        out.append(section.title)
        rows = section.rows if not section.headers else [section.headers, *section.rows]
        if rows:
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
            for row in rows:
                cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
                out.append(("  " + "  ".join([*cells, row[-1]])).rstrip())
        if section.note:
            out.append(f"  ({section.note})")
        out.append("")
    return "\n".join(out)


_STYLES = {
    "drift": "red",
    "breach": "red",
    "Degraded": "red",
    "Failed": "red",
    "ok": "green",
    "Healthy": "green",
    "Succeeded": "green",
    "Progressing": "yellow",
}


def rich_group(view: View) -> Group:
    tables = []
    for section in view.sections:
        table = Table(
            title=section.title,
            title_justify="left",
            show_header=bool(section.headers),
            caption=section.note or None,
            expand=False,
        )
        for header in section.headers or ["", ""]:
            table.add_column(header, overflow="fold")
        for row in section.rows:
            table.add_row(*(f"[{_STYLES[c]}]{c}[/]" if c in _STYLES else c for c in row))
        tables.append(table)
    return Group(*tables)
