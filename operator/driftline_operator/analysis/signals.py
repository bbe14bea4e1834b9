"""Golden signals of a window: request count, 5xx ratio, latency quantiles.

Pure; the quantiles follow Prometheus' ``histogram_quantile`` so a figure in
status matches the same PromQL over the sidecar's histogram.
"""

from __future__ import annotations

import numpy as np

from driftline_operator.analysis.windows import Window
from driftline_operator.api.status import WindowFigures
from driftline_sidecar.contract.snapshot import Histogram, Snapshot

# Per window: with fewer requests a rate or a p95 is mostly noise, so SLOs and
# canary checks say insufficient data rather than breach.
MIN_REQUESTS = 50


def request_count(counts: Snapshot) -> int:
    return sum(counts.requests.values())


def error_count(counts: Snapshot) -> int:
    """5xx responses: the server's fault (a 4xx is the client's)."""
    return sum(n for code, n in counts.requests.items() if code.startswith("5"))


def histogram_quantile(histogram: Histogram, q: float) -> float | None:
    """Prometheus' ``histogram_quantile`` on per-bucket counts (None when empty).

    As Prometheus does: find the bucket holding rank ``q * count``, then
    interpolate linearly inside it; the first bucket starts at 0 (its bound is
    positive), and a rank in the +Inf bucket gives the largest finite bound.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in 0..1")
    cumulative = np.cumsum(histogram.counts)
    total = int(cumulative[-1]) if cumulative.size else 0
    if total == 0:
        return None
    rank = q * total
    index = int(np.searchsorted(cumulative, rank, side="left"))
    if index >= len(histogram.bounds):
        return float(histogram.bounds[-1])
    upper = float(histogram.bounds[index])
    lower = float(histogram.bounds[index - 1]) if index > 0 else 0.0
    below = float(cumulative[index - 1]) if index > 0 else 0.0
    inside = float(cumulative[index]) - below
    if inside == 0:  # only q == 0 lands in an empty bucket
        return lower
    return lower + (upper - lower) * (rank - below) / inside


def figures(window: Window) -> WindowFigures:
    """The golden signals of one window (facts: no guard on the request count)."""
    counts = window.counts
    n = request_count(counts)

    def ms(q: float) -> float | None:
        value = histogram_quantile(counts.latency, q)
        return None if value is None else round(value * 1000, 3)

    return WindowFigures(
        role=window.role,
        seconds=round(window.seconds, 3),
        requests=n,
        requests_per_second=round(n / window.seconds, 3) if window.seconds > 0 else 0.0,
        error_rate=round(error_count(counts) / n, 6) if n else None,
        p50_ms=ms(0.5),
        p95_ms=ms(0.95),
        p99_ms=ms(0.99),
    )
