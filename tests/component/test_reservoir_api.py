"""``GET /v1/reservoir`` on a real sidecar in front of the demo model server."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx

from tests.component.conftest import ModelServer, Sidecar, wait_until

TOKEN = "reservoir-token"
FEATURES = [
    {"name": "f0", "bins": [0.0]},
    {"name": "f1", "bins": [0.0]},
    {"name": "f2", "bins": [0.0]},
    {"name": "f3", "type": "categorical", "pii": "hash"},
]


def test_the_reservoir_holds_a_bounded_sample_behind_the_token(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(
        model.url,
        model={"name": "fraud", "version": "v1", "protocol": "auto", "features": FEATURES},
        reservoir={"size": 8, "window_seconds": 3600},
        admin_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
    )
    sent = []
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        for i in range(40):
            row = [float(i), -float(i), 0.5, 777.0 + i]
            sent.append(row)
            response = client.post("/v1/models/fraud:predict", json={"instances": [row]})
            assert response.status_code == 200

    url = sidecar.admin + "/v1/reservoir"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}, timeout=10).status_code == 403
    good = {"authorization": f"Bearer {TOKEN}"}
    seen: dict[str, Any] = {}

    def all_captured() -> bool:
        seen.update(httpx.get(url, headers=good, timeout=10).json())
        return bool(seen["current"]["seen"] == 40)

    wait_until(all_captured, timeout=30, what="40 rows in the reservoir")
    window = seen["current"]
    assert seen["size"] == 8
    assert window["features"] == ["f0", "f1", "f2"]  # f3 is PII: never held
    assert window["protocol"] == "kserve-v1"
    assert len(window["rows"]) == 8
    assert all(row in [r[:3] for r in sent] for row in window["rows"])
    assert "777" not in httpx.get(url, headers=good, timeout=10).text


def test_without_a_token_hash_the_reservoir_is_not_served(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url)
    response = httpx.get(
        sidecar.admin + "/v1/reservoir", headers={"authorization": "Bearer x"}, timeout=10
    )
    assert response.status_code == 404
    assert "admin_token_sha256" in response.json()["error"]


def test_a_reservoir_turned_off_samples_nothing_and_says_why(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    # What the operator renders while spec.explain.enabled is false.
    sidecar = sidecar_factory(
        model.url,
        model={"name": "fraud", "version": "v1", "protocol": "auto", "features": FEATURES},
        reservoir={"enabled": False},
        admin_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
    )
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        response = client.post("/v1/models/fraud:predict", json={"instances": [[1, 2, 3, 4]]})
        assert response.status_code == 200  # the model's traffic goes on
    response = httpx.get(
        sidecar.admin + "/v1/reservoir", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert "reservoir.enabled is false" in error
    assert "spec.explain.enabled" in error
