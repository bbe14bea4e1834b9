"""The Prometheus metrics of the canary split and the shadow mirror.

Like the rest of the sidecar's metrics they are its only store of these
counts: the snapshot's ``shadow`` section is read back from them
(``shadow_counts``), so ``/metrics`` and ``/v1/snapshot`` cannot disagree.
The operator's Prometheus source reads the scraped series with the same
function (``shadow_counts_from_samples``), so the names are mapped here only.
Every child is bound once, with the sidecar's ``model``/``version``/``role``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from driftline_sidecar.snapshot import LATENCY_BUCKETS, ShadowCounts
from driftline_sidecar.snapshot import Histogram as HistogramCounts

PREFIX = "driftline_"
BASE_LABELS = ("model", "version", "role")
OUTCOMES = ("mirrored", "dropped", "compared", "agreed")
SIDES = ("stable", "shadow")
_BOUNDS = [*LATENCY_BUCKETS, math.inf]


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


def shadow_counts_from_samples(samples: Iterable[Sample]) -> ShadowCounts:
    """Read ``ShadowCounts`` from samples as the registry has them or as
    Prometheus scraped them (one sidecar's; other labels are ignored).

    Bucket bounds are matched as numbers, not as ``le`` strings, since a
    scraper may spell them differently ("1" or "1.0")."""
    # (name, outcome or side, bucket bound) -> value
    values: dict[tuple[str, str, float | None], float] = defaultdict(float)
    for sample in samples:
        if not sample.name.startswith(PREFIX + "shadow_"):
            continue
        key = sample.labels.get("outcome") or sample.labels.get("side", "")
        le = float(sample.labels["le"]) if "le" in sample.labels else None
        values[(sample.name, key, le)] += sample.value

    def get(name: str, key: str = "", le: float | None = None) -> float:
        return values.get((PREFIX + name, key, le), 0.0)

    def count(name: str, key: str = "", le: float | None = None) -> int:
        return round(get(name, key, le))

    def histogram(side: str) -> HistogramCounts:
        cumulative = [count("shadow_duration_seconds_bucket", side, le) for le in _BOUNDS]
        counts = [b - a for a, b in zip([0, *cumulative], cumulative, strict=False)]
        return HistogramCounts(counts=counts, sum=get("shadow_duration_seconds_sum", side))

    return ShadowCounts(
        mirrored=count("shadow_requests_total", "mirrored"),
        dropped=count("shadow_requests_total", "dropped"),
        compared=count("shadow_requests_total", "compared"),
        agreed=count("shadow_requests_total", "agreed"),
        abs_difference_sum=get("shadow_abs_difference_sum"),
        rel_difference_sum=get("shadow_rel_difference_sum"),
        stable_errors=count("shadow_errors_total", "stable"),
        shadow_errors=count("shadow_errors_total", "shadow"),
        stable_latency=histogram("stable"),
        shadow_latency=histogram("shadow"),
    )
