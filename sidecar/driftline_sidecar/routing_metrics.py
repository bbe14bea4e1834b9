"""The Prometheus metrics of the canary split and the shadow mirror.

Like the rest of the sidecar's metrics they are its only store of these
counts: the snapshot's ``shadow`` section is read back from them
(``shadow_counts``), so ``/metrics`` and ``/v1/snapshot`` cannot disagree.
The operator's Prometheus source reads the scraped series with the same
function (``shadow_counts_from_samples``), so the names are mapped here only.
Every child is bound once, with the sidecar's ``model``/``version``/``role``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.metrics_core import Metric

from driftline_sidecar.contract.reader import shadow_counts_from_samples
from driftline_sidecar.contract.snapshot import LATENCY_BUCKETS, ShadowCounts

PREFIX = "driftline_"
BASE_LABELS = ("model", "version", "role")
OUTCOMES = ("mirrored", "dropped", "compared", "agreed")
SIDES = ("stable", "shadow")


class RoutingMetrics:
    """Counters for requests sent elsewhere than the local model."""

    def __init__(self, *, registry: CollectorRegistry, base: tuple[str, str, str]) -> None:
        self._registry = registry

        def bind(metric: Counter | Gauge | Histogram | Summary, *extra: str) -> Any:
            return metric.labels(*base, *extra)

        routed = Counter(
            PREFIX + "routed_requests_total",
            "Requests this sidecar sent to another upstream instead of its own model "
            "(counted there, not in this sidecar's request counts).",
            [*BASE_LABELS, "target"],
            registry=registry,
        )
        self.routed_canary = bind(routed, "canary")
        shadow = Counter(
            PREFIX + "shadow_requests_total",
            "Mirrored requests by outcome: mirrored (sent), dropped (the concurrency bound "
            "was reached), compared (both answered with a readable prediction), agreed "
            "(classification: the same predicted class).",
            [*BASE_LABELS, "outcome"],
            registry=registry,
        )
        self.shadow = {outcome: bind(shadow, outcome) for outcome in OUTCOMES}
        errors = Counter(
            PREFIX + "shadow_errors_total",
            "Mirrored requests answered with a 5xx (stable), or a 5xx, failure or timeout "
            "(shadow).",
            [*BASE_LABELS, "side"],
            registry=registry,
        )
        self.shadow_errors = {side: bind(errors, side) for side in SIDES}
        duration = Histogram(
            PREFIX + "shadow_duration_seconds",
            "Time until response headers for mirrored requests, on each side.",
            [*BASE_LABELS, "side"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow_duration = {side: bind(duration, side) for side in SIDES}
        # Summaries: their _sum is the difference summed over compared requests,
        # their _count how many requests went into it.
        self.abs_difference = bind(
            Summary(
                PREFIX + "shadow_abs_difference",
                "Regression: |stable - shadow| per compared request (mean over its rows).",
                BASE_LABELS,
                registry=registry,
            )
        )
        self.rel_difference = bind(
            Summary(
                PREFIX + "shadow_rel_difference",
                "Regression: |stable - shadow| / |stable| per compared request (mean over "
                "its rows with a non-zero stable value).",
                BASE_LABELS,
                registry=registry,
            )
        )
        self.shadow_in_flight = bind(
            Gauge(
                PREFIX + "shadow_requests_in_flight",
                "Mirrored requests waiting for the shadow's answer.",
                BASE_LABELS,
                registry=registry,
            )
        )

    def shadow_counts(self) -> ShadowCounts:
        """The snapshot's ``shadow`` section, read from this registry."""
        return shadow_counts(self._registry.collect())


def shadow_counts(families: Iterable[Metric]) -> ShadowCounts:
    """Read ``ShadowCounts`` from collected metric families (``registry.collect()``)."""
    return shadow_counts_from_samples(s for family in families for s in family.samples)
