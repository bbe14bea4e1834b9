"""The Prometheus metrics of the canary split and the shadow mirror.

Like the rest of the sidecar's metrics they are its only store of these
counts: the snapshot's ``shadow`` section is read back from them by
``driftline_sidecar.contract.reader``, the same reader the operator's
Prometheus source uses on the scraped series; the names and label values come
from ``driftline_sidecar.contract.metric_names``.
Every child is bound once, with the sidecar's ``model``/``version``/``role``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

from driftline_sidecar.contract import metric_names as names
from driftline_sidecar.contract.snapshot import LATENCY_BUCKETS

_BASE = names.BASE_LABELS


class RoutingMetrics:
    """Counters for requests sent elsewhere than the local model."""

    def __init__(self, *, registry: CollectorRegistry, base: tuple[str, str, str]) -> None:
        def bind(metric: Counter | Gauge | Histogram | Summary, *extra: str) -> Any:
            return metric.labels(*base, *extra)

        routed = Counter(
            names.ROUTED_REQUESTS,
            "Requests this sidecar sent to another upstream instead of its own model "
            "(counted there, not in this sidecar's request counts).",
            [*_BASE, names.TARGET],
            registry=registry,
        )
        self.routed_canary = bind(routed, names.ROUTED_TO_CANARY)
        self.canary_weight = bind(
            Gauge(
                names.CANARY_WEIGHT,
                "Percent of requests this sidecar sends to the canary now (routing.canary_weight "
                "with a canary URL): its changes are the rollout's steps, promotion and rollback.",
                _BASE,
                registry=registry,
            )
        )
        shadow = Counter(
            names.SHADOW_REQUESTS,
            "Mirrored requests by outcome: mirrored (sent), dropped (the concurrency bound "
            "was reached), compared (both answered with a readable prediction), agreed "
            "(classification: the same predicted class).",
            [*_BASE, names.OUTCOME],
            registry=registry,
        )
        self.shadow: dict[str, Any] = {o: bind(shadow, o) for o in names.ShadowOutcome}
        errors = Counter(
            names.SHADOW_ERRORS,
            "Mirrored requests answered with a 5xx (stable), or a 5xx, failure or timeout "
            "(shadow).",
            [*_BASE, names.SIDE],
            registry=registry,
        )
        self.shadow_errors: dict[str, Any] = {s: bind(errors, s) for s in names.Side}
        duration = Histogram(
            names.SHADOW_DURATION,
            "Time until response headers for mirrored requests, on each side.",
            [*_BASE, names.SIDE],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow_duration: dict[str, Any] = {s: bind(duration, s) for s in names.Side}
        # Summaries: their _sum is the difference summed over compared requests,
        # their _count how many requests went into it.
        self.abs_difference = bind(
            Summary(
                names.SHADOW_ABS_DIFFERENCE,
                "Regression: |stable - shadow| per compared request (mean over its rows).",
                _BASE,
                registry=registry,
            )
        )
        self.rel_difference = bind(
            Summary(
                names.SHADOW_REL_DIFFERENCE,
                "Regression: |stable - shadow| / |stable| per compared request (mean over "
                "its rows with a non-zero stable value).",
                _BASE,
                registry=registry,
            )
        )
        self.shadow_in_flight = bind(
            Gauge(
                names.SHADOW_REQUESTS_IN_FLIGHT,
                "Mirrored requests waiting for the shadow's answer.",
                _BASE,
                registry=registry,
            )
        )
