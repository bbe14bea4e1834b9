"""Snapshots read back from Prometheus samples (the sidecar's own registry or a
Prometheus server's scrape of it)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from prometheus_client.samples import Sample

from driftline_sidecar.contract.snapshot import LATENCY_BUCKETS, ShadowCounts
from driftline_sidecar.contract.snapshot import Histogram as HistogramCounts

PREFIX = "driftline_"
_BOUNDS = [*LATENCY_BUCKETS, math.inf]


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
