"""Every Prometheus metric the sidecar exports, defined once (their names and
label values come from ``driftline_sidecar.contract.metric_names``, which the
snapshot reader shares).

The canary split's and shadow mirror's metrics are defined in
``driftline_sidecar.routing_metrics`` and bound here (``SidecarMetrics.routing``).

The metrics are also the sidecar's only store of counts: ``/v1/snapshot`` is
read back from this registry (``driftline_sidecar.contract.reader``), so the
two views can never disagree.

Labels ``model``, ``version`` and ``role`` are bound once, and every child the
hot path touches is looked up once and cached (``.labels()`` costs ~2 µs, an
``inc()`` ~0.5 µs). All other label values are bounded: status codes, the
configured features and their bin indexes (``bin="0"`` is the lowest bin, in
the layout of ``driftline_sidecar.counts``), and at most ``MAX_CLASSES``
predicted classes before the rest count as ``__other__``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from driftline_sidecar.contract import metric_names as names
from driftline_sidecar.contract.profile import SCORE_BOUNDS
from driftline_sidecar.contract.snapshot import LATENCY_BUCKETS
from driftline_sidecar.routing_metrics import RoutingMetrics

MAX_CLASSES = 50
OTHER_CLASS = "__other__"
# The sidecar's own time per request is well under a millisecond when healthy.
OVERHEAD_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
# Classification scores are probabilities: 20 buckets of 0.05.
SCORE_BUCKETS: tuple[float, ...] = SCORE_BOUNDS  # the calibration map's buckets too
_BASE = names.BASE_LABELS


class SidecarMetrics:
    """The sidecar's metrics with their children bound for one model/version/role.

    ``features`` maps each binned feature to its number of bins; every bin
    series exists from the start (at zero), so the snapshot always has the
    full layout and Prometheus sees no series appear late.
    """

    def __init__(
        self,
        *,
        model: str,
        version: str,
        role: str,
        features: Mapping[str, int],
        prediction_bins: int,
        score_buckets: Sequence[float] = SCORE_BUCKETS,
        profile_sha256: str = "",
        registry: CollectorRegistry | None = None,
    ) -> None:
        # `_created` series double the scrape size and nothing here reads them.
        prometheus_client.disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._base = (model, version, role)
        r = self.registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, [*_BASE, *labels], registry=r)

        # Which reference profile the bins come from, for a Prometheus-only
        # operator that must not compare counts binned against another one.
        info = Gauge(
            names.SIDECAR_INFO,
            "The sidecar's identity (always 1).",
            [*_BASE, names.PROFILE_SHA256],
            registry=r,
        )
        info.labels(*self._base, profile_sha256).set(1)
        self.routing = RoutingMetrics(registry=r, base=self._base)

        self._requests = counter(
            names.REQUESTS, "Requests answered, by HTTP status code.", names.CODE
        )
        self._code_children: dict[int, Counter] = {}
        self.request_duration = self._bind(
            Histogram(
                names.REQUEST_DURATION,
                "Time from request received to response sent, as the client sees it.",
                _BASE,
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.upstream_duration = self._bind(
            Histogram(
                names.UPSTREAM_DURATION,
                "Time the model took to answer (until response headers).",
                _BASE,
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.model_duration = self._bind(
            Histogram(
                names.MODEL_DURATION,
                "Time from the request sent to the model to the end of its answer.",
                _BASE,
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.overhead = self._bind(
            Histogram(
                names.SIDECAR_OVERHEAD,
                "The sidecar's own time per request: the request's duration less the model's.",
                _BASE,
                buckets=OVERHEAD_BUCKETS,
                registry=r,
            )
        )
        self._stages = Histogram(
            names.MODEL_STAGE_DURATION,
            "The model's own stages, from its Server-Timing header (at most "
            f"{names.MAX_STAGES} stage names, the rest as {names.OTHER_STAGE}).",
            [*_BASE, names.STAGE],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._stage_children: dict[str, Any] = {}
        self.server_timing_malformed = self._bind(
            counter(
                names.SERVER_TIMING_MALFORMED,
                "Model answers whose Server-Timing header was malformed (ignored).",
            )
        )
        self.in_flight = self._bind(
            Gauge(names.REQUESTS_IN_FLIGHT, "Requests being proxied now.", _BASE, registry=r)
        )
        self.request_bytes = self._bind(
            counter(names.REQUEST_BYTES, "Request body bytes received from clients.")
        )
        self.response_bytes = self._bind(
            counter(names.RESPONSE_BYTES, "Response body bytes sent to clients.")
        )
        self.records = self._bind(
            counter(names.CAPTURE_RECORDS, "Rows extracted (a batched request gives one per row).")
        )
        self.bodies_parsed = self._bind(
            counter(names.CAPTURE_BODIES_PARSED, "Exchanges whose request was parsed and counted.")
        )
        skipped = counter(
            names.CAPTURE_SKIPPED, "Exchanges forwarded but not captured.", names.REASON
        )
        self.skipped: dict[str, Any] = {r: self._bind(skipped, r) for r in names.SkipReason}
        unread = counter(
            names.CAPTURE_RESPONSES_UNREAD,
            "Exchanges whose request was captured but whose response could not be read.",
            names.REASON,
        )
        self.responses_unread: dict[str, Any] = {
            r: self._bind(unread, r) for r in names.ResponseUnread
        }
        dropped = counter(names.CAPTURE_DROPPED, "Samples dropped: a queue was full.", names.QUEUE)
        self.dropped: dict[str, Any] = {q: self._bind(dropped, q) for q in names.DropQueue}
        schema = counter(names.SCHEMA_VIOLATIONS, "Fields not in the expected schema.", names.KIND)
        self.schema: dict[str, Any] = {k: self._bind(schema, k) for k in names.SchemaViolation}

        feature_bin = counter(
            names.FEATURE_BIN, "Feature values per reference bin.", names.FEATURE, names.BIN
        )
        missing = counter(names.FEATURE_MISSING, "Feature values missing or null.", names.FEATURE)
        out_of_range = counter(
            names.FEATURE_OUT_OF_RANGE, "Numeric values outside the reference range.", names.FEATURE
        )
        self.feature_bins = {
            name: [self._bind(feature_bin, name, str(i)) for i in range(n_bins)]
            for name, n_bins in features.items()
        }
        self.feature_missing = {name: self._bind(missing, name) for name in features}
        self.feature_out_of_range = {name: self._bind(out_of_range, name) for name in features}

        self._classes = counter(names.PREDICTION_CLASS, "Predicted class labels.", names.CLASS)
        self._class_children: dict[str, Counter] = {}
        prediction_bin = counter(
            names.PREDICTION_BIN, "Prediction scores per reference bin.", names.BIN
        )
        self.prediction_bins = [self._bind(prediction_bin, str(i)) for i in range(prediction_bins)]
        self.prediction_missing = self._bind(
            counter(names.PREDICTION_MISSING, "Rows without a score to bin.")
        )
        self.prediction_out_of_range = self._bind(
            counter(names.PREDICTION_OUT_OF_RANGE, "Scores outside the reference range.")
        )
        self.score = self._bind(
            Histogram(
                names.PREDICTION_SCORE,
                "Prediction scores (probability, or the value of a regression).",
                _BASE,
                buckets=tuple(score_buckets),
                registry=r,
            )
        )

    def _bind(self, metric: Counter | Gauge | Histogram, *extra: str) -> Any:
        # A child has its parent's type; Any keeps call sites free of casts.
        return metric.labels(*self._base, *extra)

    def observe_request(
        self,
        *,
        code: int,
        seconds: float,
        upstream_seconds: float | None,
        request_bytes: int,
        response_bytes: int,
        model_seconds: float | None = None,
    ) -> None:
        """Count one finished request (the hot path: cached children only)."""
        child = self._code_children.get(code)
        if child is None:
            child = self._code_children[code] = self._bind(self._requests, str(code))
        child.inc()
        self.request_duration.observe(seconds)
        if upstream_seconds is not None:
            self.upstream_duration.observe(upstream_seconds)
        if model_seconds is not None:
            self.model_duration.observe(model_seconds)
            self.overhead.observe(max(seconds - model_seconds, 0.0))
        if request_bytes:
            self.request_bytes.inc(request_bytes)
        if response_bytes:
            self.response_bytes.inc(response_bytes)

    def stage(self, name: str) -> Any:
        """The stage's histogram child; past ``MAX_STAGES`` names, the shared other one."""
        child = self._stage_children.get(name)
        if child is None:
            if len(self._stage_children) >= names.MAX_STAGES:
                name = names.OTHER_STAGE
                child = self._stage_children.get(name)
            if child is None:
                child = self._stage_children[name] = self._bind(self._stages, name)
        return child

    def count_class(self, label: str, n: int = 1) -> None:
        child = self._class_children.get(label)
        if child is None:
            if len(self._class_children) >= MAX_CLASSES:
                label = OTHER_CLASS
                child = self._class_children.get(label)
            if child is None:
                child = self._class_children[label] = self._bind(self._classes, label)
        child.inc(n)


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return prometheus_client.generate_latest(registry)
