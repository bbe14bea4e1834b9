"""Where a monitor's counts come from: one module per backend, one interface
(``driftline_operator.collect.MetricsSource``), as Flagger's metrics providers.

- ``sidecar``: each pod's ``GET /v1/snapshot`` on the admin port (the default:
  nothing else to install);
- ``prometheus``: the same counters, as a Prometheus server scraped them.
"""

from __future__ import annotations

from driftline_operator.collect import MetricsSource
from driftline_operator.crd import Metrics
from driftline_operator.sources.prometheus import PrometheusSource
from driftline_operator.sources.sidecar import SidecarSource

__all__ = ["PrometheusSource", "SidecarSource", "make_source"]


def make_source(metrics: Metrics, *, timeout: float) -> MetricsSource:
    """The source ``spec.metrics`` asks for; ``timeout`` bounds each request (seconds)."""
    if metrics.source == "prometheus":
        assert metrics.prometheus is not None  # the Metrics model requires it
        return PrometheusSource(metrics.prometheus.url, timeout=timeout)
    return SidecarSource(timeout=timeout)
