"""The operator's own Prometheus metrics: what it concluded, per monitor.

One registry, separate from prometheus_client's global one, so nothing else
in the process (kopf, the kubernetes client) leaks series into it. Labels are
bounded: ``namespace`` and ``monitor`` name a ModelMonitor, ``feature`` is a
profiled feature, ``slo`` a name in its spec, ``role`` stable/canary/shadow,
``method`` one of the drift statistics. Every series of a monitor is
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

from driftline_operator.api.status import SloStatus
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
        self._replace(
            self.window_requests, key, {(role,): float(n) for role, n in requests.items()}
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
