"""A real Prometheus server scrapes the admin port; PromQL sees the request count."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml

from tests.component.conftest import free_port, wait_until

if TYPE_CHECKING:
    from tests.component.conftest import ModelServer, Sidecar

PROMETHEUS = "/usr/bin/prometheus"


@pytest.mark.prometheus
@pytest.mark.skipif(
    shutil.which(PROMETHEUS) is None, reason="no /usr/bin/prometheus (Debian package prometheus)"
)
def test_prometheus_scrapes_the_request_count(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar], tmp_path: Path
) -> None:
    sidecar = sidecar_factory(model.url)
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        for i in range(7):
            assert client.post("/predict", json={"f0": i}).status_code == 200

    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "driftline-sidecar",
                        "static_configs": [{"targets": [sidecar.config["admin"]]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        query = 'sum(driftline_requests_total{model="fraud",role="stable",code="200"})'
        result: list[dict] = []

        def answered() -> bool:
            assert process.poll() is None, log.read_text()
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
            )
            if response.status_code != 200:
                return False  # 503 "Service Unavailable" (plain text) while the TSDB starts
            result[:] = response.json()["data"]["result"]
            return bool(result)

        wait_until(answered, timeout=90, what="Prometheus to scrape the sidecar")
        assert float(result[0]["value"][1]) == 7.0
        up = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"}, timeout=5
        ).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
