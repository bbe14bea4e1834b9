"""Driftline's Grafana dashboard, generated with Grafana's own dashboards-as-code
library (grafana-foundation-sdk), and written into the Helm chart:

    python -m driftline_operator.cli.dashboards            # write charts/driftline/dashboards/
    python -m driftline_operator.cli.dashboards --check    # exit 1 if the chart's copy differs

Every panel's PromQL is in the ``ROWS`` table below and nowhere else; the
metric names come from the sidecar contract, the operator's metrics and the
recording rules of ``analysis.rules`` (``driftline rules``), which must be
loaded for the SLO panels and the monitor variable. Variables: the
Prometheus data source, ``namespace``, ``monitor`` (from the rules'
``driftline:monitor:info``), the monitor's ``model`` (hidden: what the
sidecars' series are labelled with) and ``version``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import heatmap, stat, timeseries
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.builders.common import ReduceDataOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableHide, VariableRefresh

from driftline_operator.analysis.metrics import PREFIX as OP
from driftline_operator.analysis.rules import (
    MONITOR_INFO,
    SLO_BUDGET_REMAINING,
    SLO_ERROR_BUDGET,
    SLO_ERROR_RATIO,
)
from driftline_sidecar.contract import metric_names as names

UID: Final = "driftline-model"
CHART_DIR: Final = Path(__file__).resolve().parents[3] / "charts" / "driftline" / "dashboards"
FILE_NAME: Final = "driftline-model.json"
DATASOURCE: Final = DataSourceRef(type_val="prometheus", uid="${datasource}")

# The sidecars of the monitor's model (shadow ones too: the role tells them
# apart), and the operator's series of the monitor.
S: Final = 'namespace="$namespace",model="$model",version=~"$version"'
M: Final = 'namespace="$namespace",monitor="$monitor"'
RATE: Final = "$__rate_interval"


def _rate(metric: str, *, by: str = "", extra: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    selector = S + ("," + extra if extra else "")
    return f"sum{grouping} (rate({metric}{{{selector}}}[{RATE}]))"


def _quantile(q: float, histogram: str, *, by: str) -> str:
    return f"histogram_quantile({q:g}, {_rate(histogram + '_bucket', by='le, ' + by)})"


def _mean(histogram: str, *, by: str) -> str:
    return f"{_rate(histogram + '_sum', by=by)} / {_rate(histogram + '_count', by=by)}"


def _share(counter: str, *, by: str, of: str = names.CAPTURE_RECORDS) -> str:
    """``counter`` per row of ``of``; the counters exist at zero from the start."""
    return f"{_rate(counter, by=by)} / on() group_left {_rate(of)}"


_ERRORS: Final = _rate(names.REQUESTS, by="role", extra='code=~"5.."')
_ALL: Final = _rate(names.REQUESTS, by="role")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | heatmap
    description: str = ""
    width: int = 12


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


ROWS: Final = (
    Row(
        "Golden signals",
        (
            Panel(
                "Requests by role",
                (Query(_ALL, "{{role}}"),),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Error ratio (5xx) by role",
                # No 5xx yet is a ratio of 0, not an empty panel.
                (Query(f"({_ERRORS} or 0 * {_ALL}) / {_ALL}", "{{role}}"),),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Latency quantiles",
                tuple(
                    Query(
                        _quantile(q, names.REQUEST_DURATION, by="role"),
                        f"p{q * 100:g} {{{{role}}}}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ),
                unit="s",
                width=8,
            ),
        ),
    ),
    Row(
        "Where the time goes",
        (
            Panel(
                "Model time vs sidecar overhead (mean)",
                (
                    Query(_mean(names.MODEL_DURATION, by="role"), "model {{role}}"),
                    Query(_mean(names.SIDECAR_OVERHEAD, by="role"), "sidecar {{role}}"),
                ),
                unit="s",
                description="Each request's time split: the model's (until the end of its "
                "answer) and the sidecar's own.",
            ),
            Panel(
                "Model stages (Server-Timing, p95)",
                (
                    Query(_quantile(0.95, names.MODEL_STAGE_DURATION, by="stage"), "{{stage}}"),
                    Query(_mean(names.MODEL_STAGE_DURATION, by="stage"), "mean {{stage}}"),
                ),
                unit="s",
                description="The stages the model reports in its Server-Timing header.",
            ),
        ),
    ),
    Row(
        "Drift",
        (
            Panel(
                "Drift score per feature",
                (Query(f"max by (feature) ({OP}feature_drift_score{{{M}}})", "{{feature}}"),),
                kind="heatmap",
                description="Each feature's drift statistic over the drift window, over time.",
                width=16,
            ),
            Panel(
                "Drifted feature share",
                (
                    Query(f"{OP}drifted_feature_share{{{M}}}", "drifted share"),
                    Query(f"{OP}prediction_drift_score{{{M}}}", "prediction {{method}}"),
                ),
                unit="percentunit",
                width=8,
            ),
        ),
    ),
    Row(
        "Data quality",
        (
            Panel(
                "Missing values per feature",
                (Query(_share(names.FEATURE_MISSING, by="feature"), "{{feature}}"),),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Out of the reference range per feature",
                (Query(_share(names.FEATURE_OUT_OF_RANGE, by="feature"), "{{feature}}"),),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Schema violations, unread and dropped captures",
                (
                    Query(_share(names.SCHEMA_VIOLATIONS, by="kind"), "schema {{kind}}"),
                    Query(
                        _share(names.CAPTURE_SKIPPED, by="reason", of=names.REQUESTS),
                        "not captured: {{reason}}",
                    ),
                    Query(
                        _share(names.CAPTURE_DROPPED, by="queue", of=names.REQUESTS),
                        "dropped: {{queue}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
        ),
    ),
    Row(
        "SLOs",
        (
            Panel(
                "Error budget left (30 days)",
                (Query(f"{SLO_BUDGET_REMAINING}{{{M}}}", "{{slo}}"),),
                unit="percentunit",
                kind="stat",
                width=8,
            ),
            Panel(
                "Burn rate",
                tuple(
                    Query(
                        f"{SLO_ERROR_RATIO}{w}{{{M}}} / on(namespace, monitor, slo) "
                        f"{SLO_ERROR_BUDGET}{{{M}}}",
                        f"{{{{slo}}}} {w}",
                    )
                    for w in ("5m", "1h", "6h", "3d")
                ),
                description="1 spends the budget exactly over 30 days; pages fire at 14.4 "
                "(1h and 5m) and 6 (6h and 30m).",
                width=8,
            ),
            Panel(
                "SLO verdicts (1 met, 0 breached)",
                (Query(f"{OP}slo_ok{{{M}}}", "{{slo}}"),),
                width=8,
            ),
        ),
    ),
    Row(
        "Canary vs stable",
        (
            Panel(
                "p95 latency by role",
                (Query(_quantile(0.95, names.REQUEST_DURATION, by="role"), "{{role}}"),),
                unit="s",
                width=8,
            ),
            Panel(
                "Traffic share by role",
                (Query(f"{_ALL} / on() group_left {_rate(names.REQUESTS)}", "{{role}}"),),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Requests per analysis window by role",
                (Query(f"{OP}window_requests{{{M}}}", "{{role}}"),),
                width=8,
            ),
        ),
    ),
)

# The sidecar router's canary weight changes: steps, promotion (100), rollback (0).
ROLLOUT_ANNOTATION: Final = Query(
    f"{names.CANARY_WEIGHT}{{{S}}} and changes({names.CANARY_WEIGHT}{{{S}}}[1m]) > 0",
    "canary weight {{value}}%",
)


def _variables() -> list[Any]:
    def query(name: str, label: str, promql: str) -> gd.QueryVariable:
        return (
            gd.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(promql)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )

    return [
        gd.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query("namespace", "Namespace", f"label_values({MONITOR_INFO}, namespace)"),
        query(
            "monitor",
            "ModelMonitor",
            f'label_values({MONITOR_INFO}{{namespace="$namespace"}}, monitor)',
        ),
        query("model", "Model", f"label_values({MONITOR_INFO}{{{M}}}, model)").hide(
            VariableHide.HIDE_VARIABLE
        ),
        query(
            "version",
            "Version",
            f'label_values({names.REQUESTS}{{namespace="$namespace",model="$model"}}, version)',
        )
        .multi(True)
        .include_all(True)
        .all_value(".*"),
    ]


def _panel(spec: Panel) -> Any:
    builder: Any
    if spec.kind == "heatmap":
        builder = heatmap.Panel().calculate(False)
    elif spec.kind == "stat":
        builder = stat.Panel().reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
    else:
        builder = timeseries.Panel()
    builder = builder.title(spec.title).datasource(DATASOURCE).span(spec.width).height(8)
    if spec.kind != "heatmap":
        builder = builder.unit(spec.unit)
    if spec.description:
        builder = builder.description(spec.description)
    for i, q in enumerate(spec.queries):
        builder = builder.with_target(
            gp.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(ord("A") + i))
        )
    return builder


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    board = (
        gd.Dashboard("Driftline / Model")
        .uid(UID)
        .tags(["driftline", "generated"])
        .description("Generated by driftline_operator.cli.dashboards: edit the generator.")
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
    )
    for variable in _variables():
        board = board.with_variable(variable)
    board = board.annotation(
        gd.AnnotationQuery()
        .name("Canary weight")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("orange")
        .expr(ROLLOUT_ANNOTATION.expr)
    )
    for row in ROWS:
        board = board.with_row(gd.Row(row.title))
        for panel in row.panels:
            board = board.with_panel(_panel(panel))
    document: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for panel in document["panels"]:
        if panel.get("options") is None:
            panel["options"] = {}  # the SDK leaves it null; Grafana's own JSON has an object
    for annotation in document["annotations"]["list"]:
        if annotation.get("expr") == ROLLOUT_ANNOTATION.expr:
            annotation["titleFormat"] = ROLLOUT_ANNOTATION.legend  # not in the SDK's model
    return document


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--output-dir", type=Path, default=CHART_DIR)
    args = parser.parse_args(argv)
    path = args.output_dir / FILE_NAME
    text = render()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(
                f"{path} is not what the generator makes: run it without --check", file=sys.stderr
            )
            return 1
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
