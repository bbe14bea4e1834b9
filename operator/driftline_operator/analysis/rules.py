"""Prometheus rules for one ModelMonitor: SLO burn-rate alerts, drift and
data-quality alerts, each with a runbook that says what to check. Pure.

The SLOs follow the SRE workbook's "Alerting on SLOs" (multiwindow,
multi-burn-rate), as Sloth and Pyrra generate them: recording rules give each
SLO's error ratio over every window the alerts need, and each alert fires when
the budget burns at least ``factor`` times too fast over a long window AND its
short window (the long one proves the budget really goes, the short one that
it still does, so an alert resolves soon after the burn stops). A burn rate of
1 spends the budget exactly over the period (``SLO_PERIOD``).

Which SLOs burn a budget:
- successRate: errors are 5xx answers; the budget is ``1 - objective``;
- errorRate: the same errors; the budget is ``max``;
- latency: errors are requests slower than ``max`` (read off the sidecar's
  latency histogram at the bucket bound ``max`` falls on, or the next one up:
  ``latency_bound``); the budget is ``1 - quantile`` (p95 under 200ms means
  at most 5 % of requests over 200ms).
driftedFeatureShare, predictionDrift and attributionDrift have no budget: they alert on the
operator's own verdict (``driftline_operator_slo_ok``).

Series are selected by the labels Prometheus' Kubernetes discovery gives
them: the sidecars' by ``namespace`` and ``model`` (shadow sidecars left out:
their answers reach no client), the operator's by ``namespace`` and
``monitor`` (its ServiceMonitor keeps the operator's labels: honorLabels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.utils import floatToGoString

from driftline_operator.analysis.metrics import PREFIX as OPERATOR_PREFIX
from driftline_operator.api.spec import ModelMonitorSpec, Slo
from driftline_sidecar.contract import metric_names as names
from driftline_sidecar.contract.snapshot import LATENCY_BUCKETS

Rule = dict[str, Any]
Group = dict[str, Any]

RULE_PREFIX: Final = "driftline:"
SLO_ERROR_RATIO: Final = RULE_PREFIX + "slo_error:ratio_rate"  # + window, e.g. 5m
SLO_ERROR_BUDGET: Final = RULE_PREFIX + "slo_error_budget:ratio"
SLO_BUDGET_REMAINING: Final = RULE_PREFIX + "slo_error_budget_remaining:ratio"
# 1 per monitor, naming its model: dashboards go from a monitor to its sidecars' series.
MONITOR_INFO: Final = RULE_PREFIX + "monitor:info"
SLO_PERIOD: Final = "30d"
SLO_LABEL: Final = "slo"
MONITOR_LABEL: Final = "monitor"
NAMESPACE_LABEL: Final = "namespace"

# A data-quality rate over spec.dataQuality's bound alerts when it lasts this long.
DATA_QUALITY_FOR: Final = "15m"
DRIFT_FOR: Final = "15m"
SLO_VERDICT_FOR: Final = "5m"


@dataclass(frozen=True)
class BurnWindow:
    """An alert window pair: burn ``factor`` times too fast over both."""

    long: str
    short: str
    factor: float
    severity: str  # page | ticket


# The SRE workbook's table 5-8 (for a 30-day SLO), as Sloth's defaults.
BURN_WINDOWS: Final = (
    BurnWindow("1h", "5m", 14.4, "page"),
    BurnWindow("6h", "30m", 6.0, "page"),
    BurnWindow("1d", "2h", 3.0, "ticket"),
    BurnWindow("3d", "6h", 1.0, "ticket"),
)
RATIO_WINDOWS: Final = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _matchers(labels: dict[str, str], *extra: str) -> str:
    return "{" + ",".join([*(f"{k}={_quote(v)}" for k, v in labels.items()), *extra]) + "}"


@dataclass(frozen=True)
class MonitorSeries:
    """How one monitor's series are selected."""

    namespace: str
    monitor: str
    model: str

    @property
    def identity(self) -> dict[str, str]:
        """The labels every rule of the monitor carries."""
        return {NAMESPACE_LABEL: self.namespace, MONITOR_LABEL: self.monitor}

    def sidecar(self, *extra: str) -> str:
        """Matchers for the monitor's serving sidecars' series."""
        labels = {NAMESPACE_LABEL: self.namespace, names.MODEL: self.model}
        return _matchers(labels, f'{names.ROLE}!="shadow"', *extra)

    def operator(self, *extra: str) -> str:
        return _matchers(self.identity, *extra)


def latency_bound(seconds: float) -> float:
    """The latency histogram's bucket bound a latency SLO is judged at: ``seconds``
    when it is a bound, else the next bound up (the largest for longer ones)."""
    return next((b for b in LATENCY_BUCKETS if b >= seconds - 1e-12), LATENCY_BUCKETS[-1])


def error_budget(slo: Slo) -> float | None:
    """The share of requests the SLO lets fail, or None when it has no budget."""
    if slo.metric == "successRate":
        assert slo.objective_value is not None  # the Slo model checks it
        return 1.0 - slo.objective_value
    if slo.metric == "errorRate":
        return slo.max_value
    if slo.metric == "latency":
        assert slo.quantile is not None
        return 1.0 - slo.quantile
    return None


def _errors_and_total(slo: Slo, series: MonitorSeries, window: str) -> tuple[str, str]:
    if slo.metric == "latency":
        assert slo.max_value is not None
        le = floatToGoString(latency_bound(slo.max_value))
        count = f"sum(rate({names.REQUEST_DURATION}_count{series.sidecar()}[{window}]))"
        fast = (
            f"sum(rate({names.REQUEST_DURATION}_bucket{series.sidecar(f'le={_quote(le)}')}"
            f"[{window}]))"
        )
        return f"({count} - {fast})", count
    server_errors = series.sidecar(f"{names.CODE}=~{_quote('5..')}")
    errors = f"sum(rate({names.REQUESTS}{server_errors}[{window}]))"
    total = f"sum(rate({names.REQUESTS}{series.sidecar()}[{window}]))"
    return errors, total


def _what(slo: Slo) -> str:
    if slo.metric == "latency":
        assert slo.max_value is not None and slo.quantile is not None
        bound = latency_bound(slo.max_value)
        return f"requests slower than {bound * 1000:g}ms (p{slo.quantile * 100:g} objective)"
    return "5xx answers"


def _slo_recordings(slo: Slo, series: MonitorSeries, budget: float) -> list[Rule]:
    labels = {**series.identity, SLO_LABEL: slo.name}
    rules: list[Rule] = []
    for window in RATIO_WINDOWS:
        errors, total = _errors_and_total(slo, series, window)
        rules.append(
            {"record": SLO_ERROR_RATIO + window, "expr": f"{errors} / {total}", "labels": labels}
        )
    rules.append({"record": SLO_ERROR_BUDGET, "expr": f"vector({budget:.6g})", "labels": labels})
    selector = _matchers(labels)
    rules.append(
        {
            # Over the SLO period from the 5m ratios, as Sloth does: one
            # 30-day rate() over raw series would be costly on each evaluation.
            "record": SLO_BUDGET_REMAINING,
            "expr": (
                f"1 - avg_over_time({SLO_ERROR_RATIO}5m{selector}[{SLO_PERIOD}]) "
                f"/ on({NAMESPACE_LABEL}, {MONITOR_LABEL}, {SLO_LABEL}) {SLO_ERROR_BUDGET}{selector}"
            ),
            "labels": labels,
        }
    )
    return rules


def _burn_alerts(slo: Slo, series: MonitorSeries, budget: float) -> list[Rule]:
    selector = _matchers({**series.identity, SLO_LABEL: slo.name})
    alerts: list[Rule] = []
    for severity in ("page", "ticket"):
        pairs = [w for w in BURN_WINDOWS if w.severity == severity]
        expr = "\nor\n".join(
            f"({SLO_ERROR_RATIO}{w.long}{selector} > ({w.factor:g} * {budget:.6g})\n"
            f" and {SLO_ERROR_RATIO}{w.short}{selector} > ({w.factor:g} * {budget:.6g}))"
            for w in pairs
        )
        windows = " or ".join(f"{w.factor:g}x over {w.long} and {w.short}" for w in pairs)
        alerts.append(
            {
                "alert": "DriftlineErrorBudgetBurn",
                "expr": expr,
                "labels": {**series.identity, SLO_LABEL: slo.name, "severity": severity},
                "annotations": {
                    "summary": (
                        f"ModelMonitor {series.namespace}/{series.monitor}: SLO {slo.name} "
                        f"burns its error budget too fast ({severity})"
                    ),
                    "description": (
                        f"{_what(slo)} spend the {SLO_PERIOD} budget of {budget:.4g} "
                        f"({windows}); error ratio over the long window: "
                        "{{ $value | humanizePercentage }}."
                    ),
                    "runbook": (
                        f"kubectl -n {series.namespace} get mm {series.monitor} -o yaml: "
                        "status.windows per role and status.rollout (a canary or a new "
                        "revision rolling out is the usual cause: pause or abort it with the "
                        "driftline.io/rollout annotation). Then the model pods' logs and "
                        "restarts, the sidecar's upstream time against its own "
                        f"({names.UPSTREAM_DURATION} vs {names.REQUEST_DURATION}) and the "
                        "'Driftline' dashboard's golden signals for when it started."
                    ),
                },
            }
        )
    return alerts


def _verdict_alert(slo: Slo, series: MonitorSeries) -> Rule:
    selector = series.operator(f"{SLO_LABEL}={_quote(slo.name)}")
    return {
        "alert": "DriftlineSLOBreached",
        "expr": f"{OPERATOR_PREFIX}slo_ok{selector} == 0",
        "for": SLO_VERDICT_FOR,
        "labels": {**series.identity, SLO_LABEL: slo.name, "severity": "ticket"},
        "annotations": {
            "summary": f"ModelMonitor {series.namespace}/{series.monitor}: SLO {slo.name} breached",
            "description": (
                f"The operator judged {slo.metric} over its drift window as breaching "
                f"{slo.name} for {SLO_VERDICT_FOR}."
            ),
            "runbook": (
                f"kubectl -n {series.namespace} get mm {series.monitor} -o yaml: status.slos "
                "gives the figure and status.drift the drifted features; compare the current "
                "traffic with the reference (driftline report) and check what changed upstream "
                "of the model (a data pipeline, a client release, a new population)."
            ),
        },
    }


def _drift_alerts(spec: ModelMonitorSpec, series: MonitorSeries) -> list[Rule]:
    share = spec.drift.drift_share
    where = f"ModelMonitor {series.namespace}/{series.monitor}"
    check = (
        f"kubectl -n {series.namespace} get mm {series.monitor} -o yaml (status.drift lists "
        "the most drifted features with their statistic and threshold); compare the current "
        "traffic with the reference profile (driftline report), then ask what changed "
        "upstream: a feature pipeline, units or encoding, a client release, a new population. "
        "If the world changed, retrain and rebuild the reference profile."
    )
    return [
        {
            "alert": "DriftlineDatasetDrift",
            "expr": f"{OPERATOR_PREFIX}drifted_feature_share{series.operator()} >= {share:g}",
            "for": DRIFT_FOR,
            "labels": {**series.identity, "severity": "ticket"},
            "annotations": {
                "summary": f"{where}: the model's input drifted",
                "description": (
                    "{{ $value | humanizePercentage }} of the features drifted from the "
                    f"reference (dataset drift from {share:.0%})."
                ),
                "runbook": check,
            },
        },
        {
            "alert": "DriftlineFeatureDrift",
            "expr": f"{OPERATOR_PREFIX}feature_drifted{series.operator()} == 1",
            "for": DRIFT_FOR,
            "labels": {**series.identity, "severity": "info"},
            "annotations": {
                "summary": "{{ $labels.feature }} drifted" + f" ({where})",
                "description": f"Feature {{{{ $labels.feature }}}} drifted for {DRIFT_FOR}.",
                "runbook": check,
            },
        },
    ]


def _ratio_alert(
    alert: str,
    counter: str,
    series: MonitorSeries,
    *,
    by: str | None,
    bound: float,
    what: str,
    runbook: str,
) -> Rule:
    window = DATA_QUALITY_FOR
    grouping = f" by ({by})" if by else ""
    expr = (
        f"sum{grouping} (rate({counter}{series.sidecar()}[{window}]))\n"
        f"/ on() group_left sum(rate({names.CAPTURE_RECORDS}{series.sidecar()}[{window}]))\n"
        f"> {bound:g}"
    )
    which = f" ({{{{ $labels.{by} }}}})" if by else ""
    return {
        "alert": alert,
        "expr": expr,
        "for": DATA_QUALITY_FOR,
        "labels": {**series.identity, "severity": "ticket"},
        "annotations": {
            "summary": f"ModelMonitor {series.namespace}/{series.monitor}: {what}{which}",
            "description": (
                f"{{{{ $value | humanizePercentage }}}} of the captured rows over {window} "
                f"(spec.dataQuality allows {bound:.2%})."
            ),
            "runbook": runbook,
        },
    }


def _data_quality_alerts(spec: ModelMonitorSpec, series: MonitorSeries) -> list[Rule]:
    bounds = spec.data_quality
    where = f"ModelMonitor {series.namespace}/{series.monitor}"
    pipeline = (
        "Check the client or feature pipeline that builds the requests (a renamed or dropped "
        "field, a null default, a unit change), and that spec.model.features' paths still "
        "match the request shape."
    )
    return [
        _ratio_alert(
            "DriftlineFeatureMissing",
            names.FEATURE_MISSING,
            series,
            by=names.FEATURE,
            bound=bounds.max_missing_rate,
            what="feature values missing",
            runbook=pipeline,
        ),
        _ratio_alert(
            "DriftlineFeatureOutOfRange",
            names.FEATURE_OUT_OF_RANGE,
            series,
            by=names.FEATURE,
            bound=bounds.max_out_of_range_rate,
            what="feature values outside the reference range",
            runbook=pipeline + " Values past the training range also mean the model extrapolates.",
        ),
        {
            # From the operator's verdict: a sidecar counts an unseen category
            # as out of range, it cannot tell one from the other.
            "alert": "DriftlineUnseenCategories",
            "expr": (
                f"{OPERATOR_PREFIX}feature_unseen_category_ratio{series.operator()}"
                f" > {bounds.max_unseen_category_rate:g}"
            ),
            "for": DATA_QUALITY_FOR,
            "labels": {**series.identity, "severity": "ticket"},
            "annotations": {
                "summary": f"{where}: categories the reference never saw ({{{{ $labels.feature }}}})",
                "description": (
                    "{{ $value | humanizePercentage }} of the feature's values over the drift "
                    f"window (spec.dataQuality allows {bounds.max_unseen_category_rate:.2%})."
                ),
                "runbook": pipeline
                + " A new category can also be a new population: if it is real, rebuild the "
                "reference profile so the model's owners see it.",
            },
        },
        _ratio_alert(
            "DriftlineSchemaViolations",
            names.SCHEMA_VIOLATIONS,
            series,
            by=None,
            bound=bounds.max_schema_error_rate,
            what="requests break the expected schema",
            runbook=pipeline,
        ),
        {
            "alert": "DriftlineCaptureDropped",
            "expr": f"sum(rate({names.CAPTURE_DROPPED}{series.sidecar()}[10m])) > 0",
            "for": "10m",
            "labels": {**series.identity, "severity": "ticket"},
            "annotations": {
                "summary": f"{where}: sidecars drop captured requests",
                "description": (
                    "A sidecar's capture or log queue is full, so drift and data quality are "
                    "judged on part of the traffic ({{ $value | humanize }}/s dropped)."
                ),
                "runbook": (
                    "The sidecar lacks CPU for its off-path work: check its CPU requests and "
                    "throttling (container_cpu_cfs_throttled_seconds_total), the request "
                    f"rate per pod, and {names.CAPTURE_DROPPED} by queue; lower "
                    "spec.sidecar.predictionLogSampleRatio or add replicas."
                ),
            },
        },
        {
            "alert": "DriftlineCollectionFailing",
            "expr": f"rate({OPERATOR_PREFIX}collection_errors_total{series.operator()}[10m]) > 0",
            "for": "10m",
            "labels": {**series.identity, "severity": "ticket"},
            "annotations": {
                "summary": f"{where}: the operator cannot collect some sidecars' counts",
                "description": "Analyses run on part of the pods.",
                "runbook": (
                    f"kubectl -n {series.namespace} get mm {series.monitor} -o yaml: "
                    "status.pods.unreachable names the pods; check they are Running, that a "
                    "NetworkPolicy admits the operator to the driftline-admin port, and the "
                    "sidecar container's logs."
                ),
            },
        },
    ]


def group_name(namespace: str, monitor: str, part: str) -> str:
    return _NAME.sub("_", f"driftline_{namespace}_{monitor}_{part}")


def rule_groups(spec: ModelMonitorSpec, *, namespace: str, monitor: str) -> list[Group]:
    """Every rule group of the monitor: recordings (the monitor's info, the SLOs'
    error ratios and budgets), then alerts."""
    series = MonitorSeries(namespace=namespace, monitor=monitor, model=spec.model.name)
    recordings: list[Rule] = [
        {
            "record": MONITOR_INFO,
            "expr": "vector(1)",
            "labels": {**series.identity, names.MODEL: series.model},
        }
    ]
    alerts: list[Rule] = []
    for slo in spec.slos:
        budget = error_budget(slo)
        if budget is None:
            alerts.append(_verdict_alert(slo, series))
            continue
        recordings += _slo_recordings(slo, series, budget)
        alerts += _burn_alerts(slo, series, budget)
    if spec.reference is not None:
        alerts += _drift_alerts(spec, series)
    alerts += _data_quality_alerts(spec, series)
    return [
        {"name": group_name(namespace, monitor, "recordings"), "rules": recordings},
        {"name": group_name(namespace, monitor, "alerts"), "rules": alerts},
    ]


def rule_file(spec: ModelMonitorSpec, *, namespace: str, monitor: str) -> dict[str, Any]:
    """A plain Prometheus rule file (``rule_files:``), as promtool checks it."""
    return {"groups": rule_groups(spec, namespace=namespace, monitor=monitor)}
