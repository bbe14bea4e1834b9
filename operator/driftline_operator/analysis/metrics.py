"""The operator's own Prometheus metrics: what it concluded, per monitor.

One registry, separate from prometheus_client's global one, so nothing else
in the process (kopf, the kubernetes client) leaks series into it. Labels are
bounded: ``namespace`` and ``monitor`` name a ModelMonitor, ``feature`` is a
profiled feature, ``slo`` a name in its spec, ``role`` stable/canary/shadow,
``method`` one of the drift statistics, ``outcome`` what became of a label. Every series of a monitor is
replaced on each analysis (a feature or an SLO that went away stops being
exported) and removed by ``forget`` when the monitor is deleted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from threading import Lock
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftline_operator.analysis.data_quality import (
    MISSING,
    OUT_OF_RANGE,
    UNSEEN,
    DataQualityFigures,
)
from driftline_operator.api.status import QualityStatus, SloStatus
from driftline_operator.stats.attribution import AttributionDrift
from driftline_operator.stats.verdict import DatasetDrift

PREFIX = "driftline_operator_"
_MONITOR = ("namespace", "monitor")
# An analysis of one monitor takes milliseconds; a slow one is hundreds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prometheus_client.disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.feature_drift_score = Gauge(
            PREFIX + "feature_drift_score",
            "Drift statistic of each feature over the drift window (a p-value for ks, "
            "chisquare and z: lower is more drift; a distance otherwise).",
            [*_MONITOR, "feature", "method"],
            registry=r,
        )
        self.feature_drifted = Gauge(
            PREFIX + "feature_drifted",
            "1 when the feature drifted, 0 when not (absent without enough data).",
            [*_MONITOR, "feature"],
            registry=r,
        )
        self.prediction_drift_score = Gauge(
            PREFIX + "prediction_drift_score",
            "Drift statistic of the prediction score over the drift window.",
            [*_MONITOR, "method"],
            registry=r,
        )
        self.drifted_feature_share = Gauge(
            PREFIX + "drifted_feature_share",
            "Share of the features with enough data that drifted.",
            list(_MONITOR),
            registry=r,
        )
        self.feature_rates = {
            metric: Gauge(
                PREFIX + name,
                f"{what} over the drift window (absent without values).",
                [*_MONITOR, "feature"],
                registry=r,
            )
            for metric, name, what in (
                (MISSING, "feature_missing_ratio", "Share of rows where the feature is absent, "
                 "null or of the wrong type"),
                (OUT_OF_RANGE, "feature_out_of_range_ratio", "Numeric features: share of values "
                 "outside the reference [min, max]"),
                (UNSEEN, "feature_unseen_category_ratio", "Categorical features: share of values "
                 "the reference never saw"),
            )
        }  # fmt: skip
        self.schema_error_ratio = Gauge(
            PREFIX + "schema_error_ratio",
            "Schema violations (unknown fields, wrong types, absent features) per captured row "
            "over the drift window.",
            list(_MONITOR),
            registry=r,
        )
        self.slo_ok = Gauge(
            PREFIX + "slo_ok",
            "1 when the SLO is met, 0 when breached (absent without enough data).",
            [*_MONITOR, "slo"],
            registry=r,
        )
        self.slo_burn_rate = Gauge(
            PREFIX + "slo_burn_rate",
            "successRate SLOs: error budget burn rate over the last interval.",
            [*_MONITOR, "slo"],
            registry=r,
        )
        self.attribution_drift = Gauge(
            PREFIX + "attribution_drift",
            "Total variation distance between the normalised mean |SHAP| per feature of the "
            "drift window and of the reference (absent without enough explained rows).",
            list(_MONITOR),
            registry=r,
        )
        self.attribution_share = Gauge(
            PREFIX + "attribution_share",
            "Each feature's share of the summed mean |SHAP| over the drift window.",
            [*_MONITOR, "feature"],
            registry=r,
        )
        # The labelled figures of each role (all segments together), as in
        # status.quality: absent below spec.quality.minLabels or where undefined.
        self.quality = {
            field: Gauge(
                PREFIX + name,
                f"{what} over the labels of the quality window (absent below minLabels).",
                [*_MONITOR, "role"],
                registry=r,
            )
            for field, name, what in (
                ("accuracy", "quality_accuracy", "Share of correct predictions"),
                ("macro_f1", "quality_f1", "Macro F1 over the classes"),
                ("roc_auc", "quality_roc_auc", "ROC AUC of the binned scores (multiclass: macro "
                 "one-vs-rest)"),
                ("pr_auc", "quality_pr_auc", "Average precision (multiclass: macro one-vs-rest)"),
                ("ece", "quality_expected_calibration_error", "Expected calibration error"),
                ("log_loss", "quality_log_loss", "Log loss"),
                ("mae", "quality_mae", "Regression: mean absolute error"),
                ("rmse", "quality_rmse", "Regression: root mean squared error"),
                ("bias", "quality_bias", "Regression: mean (predicted - actual)"),
                ("r2", "quality_r2", "Regression: coefficient of determination"),
            )
        }  # fmt: skip
        self.quality_labels = Gauge(
            PREFIX + "quality_labels",
            "Labelled predictions in the quality window.",
            [*_MONITOR, "role"],
            registry=r,
        )
        self.estimated_accuracy = Gauge(
            PREFIX + "quality_estimated_accuracy",
            "Accuracy estimated from the scores of every prediction in the quality window, "
            "labelled or not (CBPE; absent without a calibrated profile or scored predictions).",
            [*_MONITOR, "role"],
            registry=r,
        )
        self.estimated_from = Gauge(
            PREFIX + "quality_estimated_predictions",
            "Scored predictions the accuracy estimate is over.",
            [*_MONITOR, "role"],
            registry=r,
        )
        self.window_labels = Gauge(
            PREFIX + "window_labels",
            "Labels posted in the quality window, by outcome (unknown: no replica served the id).",
            [*_MONITOR, "outcome"],
            registry=r,
        )
        self.window_requests = Gauge(
            PREFIX + "window_requests",
            "Requests in the last analysis window.",
            [*_MONITOR, "role"],
            registry=r,
        )
        self.collection_errors = Counter(
            PREFIX + "collection_errors",
            "Pods whose counts could not be collected, summed over collections.",
            list(_MONITOR),
            registry=r,
        )
        self.alerts = Counter(
            PREFIX + "alerts",
            "Phase-change notifications POSTed to spec.alerting.webhook, by outcome.",
            [*_MONITOR, "outcome"],
            registry=r,
        )
        self.notifications = Counter(
            PREFIX + "notifications",
            "Notifications POSTed to the receivers of chart value notifications.receivers, by outcome.",
            [*_MONITOR, "receiver", "outcome"],
            registry=r,
        )
        self.analysis_duration = Histogram(
            PREFIX + "analysis_duration_seconds",
            "Wall time of one analysis interval: collection, windows, statistics, verdicts.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._lock = Lock()
        # (namespace, monitor) -> metric -> label values exported for it
        self._exported: dict[tuple[str, str], dict[Any, set[tuple[str, ...]]]] = {}

    def record_analysis(
        self,
        namespace: str,
        monitor: str,
        *,
        drift: DatasetDrift | None,
        slos: Sequence[SloStatus],
        requests: Mapping[str, int],
        data_quality: DataQualityFigures | None = None,
    ) -> None:
        """Replace the monitor's series with one analysis' conclusions."""
        key = (namespace, monitor)
        judged = [] if drift is None else [f for f in drift.features if f.score is not None]
        prediction = drift.prediction if drift is not None else None
        self._replace(
            self.feature_drift_score,
            key,
            {(f.feature, f.method): f.score for f in judged},
        )
        self._replace(
            self.feature_drifted,
            key,
            {(f.feature,): float(f.drift) for f in judged},
        )
        self._replace(
            self.prediction_drift_score,
            key,
            {}
            if prediction is None or prediction.score is None
            else {(prediction.method,): prediction.score},
        )
        self._replace(
            self.drifted_feature_share,
            key,
            {(): drift.drifted_share} if drift is not None and judged else {},
        )
        self._replace(
            self.slo_ok,
            key,
            {(s.name,): float(s.verdict == "ok") for s in slos if s.verdict != "insufficient_data"},
        )
        self._replace(
            self.slo_burn_rate,
            key,
            {(s.name,): s.burn_rate for s in slos if s.burn_rate is not None},
        )
        features = data_quality.features if data_quality is not None else ()
        for metric, gauge in self.feature_rates.items():
            self._replace(
                gauge,
                key,
                {(f.name,): rate.value for f in features if (rate := f.rate(metric)) is not None},
            )
        self._replace(
            self.schema_error_ratio,
            key,
            {(): data_quality.schema.value} if data_quality is not None else {},
        )
        self._replace(
            self.window_requests, key, {(role,): float(n) for role, n in requests.items()}
        )

    def record_quality(self, namespace: str, monitor: str, quality: QualityStatus | None) -> None:
        """Replace the monitor's quality series (none without spec.quality)."""
        key = (namespace, monitor)
        whole = [f for f in (quality.figures if quality else ()) if f.segment is None]
        judged = [f for f in whole if f.status == "ok"]
        for field, gauge in self.quality.items():
            self._replace(gauge, key, {(f.role,): getattr(f, field) for f in judged})
        self._replace(self.quality_labels, key, {(f.role,): float(f.labels) for f in whole})
        self._replace(
            self.estimated_accuracy, key, {(f.role,): f.estimated_accuracy for f in whole}
        )
        self._replace(
            self.estimated_from,
            key,
            {(f.role,): float(f.estimated_from) for f in whole if f.estimated_accuracy is not None},
        )
        self._replace(
            self.window_labels,
            key,
            {}
            if quality is None
            else {
                (o,): float(getattr(quality.labels, o)) for o in type(quality.labels).model_fields
            },
        )

    def record_attributions(
        self, namespace: str, monitor: str, drift: AttributionDrift | None
    ) -> None:
        """Replace the monitor's attribution series (none without explanations)."""
        key = (namespace, monitor)
        judged = drift is not None and drift.distance is not None
        self._replace(self.attribution_drift, key, {(): drift.distance} if judged and drift else {})
        self._replace(
            self.attribution_share,
            key,
            {(name,): f.current_share for name, f in drift.features.items()}
            if judged and drift
            else {},
        )

    def count_collection_errors(self, namespace: str, monitor: str, errors: int) -> None:
        child = self.collection_errors.labels(namespace, monitor)
        child.inc(errors)  # creates the series at 0 too, so rate() works from the start
        with self._lock:
            exported = self._exported.setdefault((namespace, monitor), {})
            exported.setdefault(self.collection_errors, set()).add(())

    def count_alert(self, namespace: str, monitor: str, *, delivered: bool) -> None:
        outcome = "delivered" if delivered else "failed"
        self.alerts.labels(namespace, monitor, outcome).inc()
        with self._lock:
            exported = self._exported.setdefault((namespace, monitor), {})
            exported.setdefault(self.alerts, set()).add((outcome,))

    def count_notification(
        self, namespace: str, monitor: str, receiver: str, *, delivered: bool
    ) -> None:
        outcome = "delivered" if delivered else "failed"
        self.notifications.labels(namespace, monitor, receiver, outcome).inc()
        with self._lock:
            exported = self._exported.setdefault((namespace, monitor), {})
            exported.setdefault(self.notifications, set()).add((receiver, outcome))

    def forget(self, namespace: str, monitor: str) -> None:
        """Remove every series of a deleted monitor."""
        with self._lock:
            exported = self._exported.pop((namespace, monitor), {})
        for metric, label_sets in exported.items():
            for labels in label_sets:
                _remove(metric, (namespace, monitor, *labels))

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)

    def _replace(
        self,
        metric: Gauge,
        key: tuple[str, str],
        values: Mapping[tuple[str, ...], float | None],
    ) -> None:
        current = {labels: v for labels, v in values.items() if v is not None and _finite(v)}
        with self._lock:
            exported = self._exported.setdefault(key, {})
            before = exported.get(metric, set())
            exported[metric] = set(current)
        for labels in before - set(current):
            _remove(metric, (*key, *labels))
        for labels, value in current.items():
            metric.labels(*key, *labels).set(value)


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _remove(metric: Any, labels: Iterable[str]) -> None:
    with contextlib.suppress(KeyError):  # never set, or removed already
        metric.remove(*labels)


# The operator process' metrics; tests make their own instances.
OPERATOR_METRICS = OperatorMetrics()


def serve(port: int, *, addr: str = "0.0.0.0", metrics: OperatorMetrics = OPERATOR_METRICS) -> Any:
    """Serve ``/metrics`` on ``port`` in a background thread; returns the server."""
    server, _thread = prometheus_client.start_http_server(
        port, addr=addr, registry=metrics.registry
    )
    return server
