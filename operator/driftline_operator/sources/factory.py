"""The metrics source a monitor's ``spec.metrics`` asks for."""

from __future__ import annotations

from driftline_operator.api.spec import Metrics
from driftline_operator.sources import MetricsSource
from driftline_operator.sources.prometheus import PrometheusSource
from driftline_operator.sources.sidecar import SidecarSource


def make_source(metrics: Metrics, *, timeout: float) -> MetricsSource:
    """The source ``spec.metrics`` asks for; ``timeout`` bounds each request (seconds)."""
    if metrics.source == "prometheus":
        assert metrics.prometheus is not None  # the Metrics model requires it
        return PrometheusSource(metrics.prometheus.url, timeout=timeout)
    return SidecarSource(timeout=timeout)
