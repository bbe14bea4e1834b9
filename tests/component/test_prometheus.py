"""A real Prometheus server scrapes the admin port; PromQL sees the request count."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.component.conftest import needs_prometheus, running_prometheus, wait_until

if TYPE_CHECKING:
    from tests.component.conftest import ModelServer, Sidecar


@pytest.mark.prometheus
@needs_prometheus
def test_prometheus_scrapes_the_request_count(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar], tmp_path: Path
) -> None:
    sidecar = sidecar_factory(model.url)
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        for i in range(7):
            assert client.post("/predict", json={"f0": i}).status_code == 200

    with running_prometheus(tmp_path, [sidecar.config["admin"]]) as url:
        query = 'sum(driftline_requests_total{model="fraud",role="stable",code="200"})'
        result: list[dict] = []

        def answered() -> bool:
            response = httpx.get(url + "/api/v1/query", params={"query": query}, timeout=5)
            if response.status_code != 200:
                return False  # 503 "Service Unavailable" (plain text) while the TSDB starts
            result[:] = response.json()["data"]["result"]
            return bool(result)

        wait_until(answered, timeout=90, what="Prometheus to scrape the sidecar")
        assert float(result[0]["value"][1]) == 7.0
        up = httpx.get(url + "/api/v1/query", params={"query": "up"}, timeout=5).json()
        assert up["data"]["result"][0]["value"][1] == "1"
