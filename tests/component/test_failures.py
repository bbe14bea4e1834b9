"""The model down or slow: clear JSON errors from the sidecar, counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from tests.component.conftest import free_port

if TYPE_CHECKING:
    from tests.component.conftest import ModelServer, Sidecar


def test_model_down_gives_502_json_and_is_counted(sidecar_factory: Callable[..., Sidecar]) -> None:
    upstream = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sidecar = sidecar_factory(upstream)
    response = httpx.post(
        sidecar.proxy + "/predict", json={"f0": 1}, headers={"x-request-id": "r1"}, timeout=10
    )
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "r1"
    body = response.json()
    assert body["upstream"] == upstream
    assert "unreachable" in body["error"]
    assert sidecar.snapshot()["requests"] == {"502": 1}
    assert httpx.get(sidecar.admin + "/readyz", timeout=5).status_code == 503


def test_slow_model_gives_504_json_and_is_counted(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url, upstream_timeout_seconds=0.5)
    response = httpx.get(sidecar.proxy + "/sleep?seconds=5", timeout=10)
    assert response.status_code == 504
    assert response.json() == {"error": "model timed out", "upstream": model.url}
    # A fast request right after is unaffected.
    assert httpx.get(sidecar.proxy + "/sleep?seconds=0", timeout=10).status_code == 200
    snapshot = sidecar.snapshot()
    assert snapshot["requests"] == {"504": 1, "200": 1}
    assert sum(snapshot["upstream_latency"]["counts"]) == 1  # the 504 never got an answer
