"""The canary split end to end: a stable sidecar sends routing.canary_weight % of
requests to a canary (a second model version behind its own sidecar), live
weight changes through PUT /v1/config, and canary traffic counted only once."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from driftline_operator.cli.demo.model_server import Classifier
from tests.component.conftest import N_FEATURES, OTHER_SEED, STABLE_SEED, ModelServer, free_port

if TYPE_CHECKING:
    from tests.component.conftest import Sidecar

CANARY_SEED = OTHER_SEED
TOKEN = "canary-token"


class Identify:
    """Which model version answered, recomputed here from the demo's own weights."""

    def __init__(self) -> None:
        self.models = {
            "stable": Classifier(n_features=N_FEATURES, seed=STABLE_SEED),
            "canary": Classifier(n_features=N_FEATURES, seed=CANARY_SEED),
        }

    def __call__(self, row: list[float], answer: dict[str, Any]) -> str:
        matches = [
            name
            for name, model in self.models.items()
            if math.isclose(float(model.probability(np.array([row]))[0]), answer["probability"])
        ]
        assert len(matches) == 1, (row, answer, matches)
        return matches[0]


def send(sidecar: Sidecar, n: int, *, seed: int = 0) -> Counter[str]:
    """POST n random rows through the sidecar; which version answered how often."""
    identify = Identify()
    rows = np.random.default_rng(seed).normal(0.0, 1.0, (n, N_FEATURES)).tolist()
    answered: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        for row in rows:
            body = {f"f{i}": v for i, v in enumerate(row)}
            response = client.post(sidecar.proxy + "/predict", json=body)
            assert response.status_code == 200, response.text
            answered[identify(row, response.json())] += 1
    return answered


def routed(sidecar: Sidecar) -> float:
    for line in sidecar.metrics().splitlines():
        if line.startswith("driftline_routed_requests_total{") and 'target="canary"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("driftline_routed_requests_total{target=canary} is not exported")


def put_routing(sidecar: Sidecar, **routing: Any) -> dict[str, Any]:
    url = sidecar.admin + "/v1/config"
    config = httpx.get(url, timeout=10).json()
    config["routing"] = {**config["routing"], **routing}
    headers = {"authorization": f"Bearer {TOKEN}"}
    response = httpx.put(url, json=config, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return httpx.get(url, timeout=10).json()["routing"]


@pytest.fixture
def pair(
    model: ModelServer,
    other_model: ModelServer,
    sidecar_factory: Callable[..., Sidecar],
    tmp_path: Path,
) -> Callable[..., tuple[Sidecar, Sidecar]]:
    """A canary sidecar (role canary) and a stable sidecar splitting to it."""

    def start(**routing: Any) -> tuple[Sidecar, Sidecar]:
        canary = sidecar_factory(other_model.url, model={"role": "canary", "version": "v2"})
        stable = sidecar_factory(
            model.url,
            admin_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
            routing={"canary_url": canary.proxy, **routing},
        )
        return stable, canary

    return start


def total(snapshot: dict[str, Any]) -> int:
    return sum(snapshot["requests"].values())


def test_weight_100_from_the_config_file_then_0_through_the_admin_api(
    pair: Callable[..., tuple[Sidecar, Sidecar]],
) -> None:
    # A (re)started sidecar reads the weight from its config file.
    stable, canary = pair(canary_weight=100)
    assert send(stable, 30) == {"canary": 30}
    assert total(stable.snapshot()) == 0  # counted by the canary's sidecar only
    assert total(canary.snapshot()) == 30
    assert routed(stable) == 30

    assert put_routing(stable, canary_weight=0)["canary_weight"] == 0
    assert send(stable, 20, seed=1) == {"stable": 20}
    assert total(stable.snapshot()) == 20
    assert total(canary.snapshot()) == 30
    assert routed(stable) == 30


def test_weight_30_sends_about_30_percent_and_counts_each_request_once(
    pair: Callable[..., tuple[Sidecar, Sidecar]],
) -> None:
    stable, canary = pair(canary_weight=0)
    assert put_routing(stable, canary_weight=30)["canary_weight"] == 30
    n = 400
    answered = send(stable, n)
    # Binomial(400, 0.3): mean 120, sigma 9.2; 5 sigma never flakes on a correct split.
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert abs(answered["canary"] - 0.3 * n) < 5 * sigma, answered
    assert answered["stable"] + answered["canary"] == n

    assert total(stable.snapshot()) == answered["stable"]
    assert total(canary.snapshot()) == answered["canary"]
    assert routed(stable) == answered["canary"]
    # Capture (features, predictions) saw only the stable model's requests.
    snapshot = stable.wait_records(lambda s: s["capture"]["bodies_parsed"] >= answered["stable"])
    assert snapshot["capture"]["bodies_parsed"] == answered["stable"]
    assert sum(snapshot["classes"].values()) == answered["stable"]


def test_a_canary_that_is_down_gives_502_naming_it_and_stable_counts_nothing(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    stable = sidecar_factory(model.url, routing={"canary_url": down, "canary_weight": 100})
    response = httpx.post(stable.proxy + "/predict", json={"f0": 1.0}, timeout=10)
    assert response.status_code == 502
    assert response.json()["upstream"] == down
    assert total(stable.snapshot()) == 0
    assert routed(stable) == 1


def test_canary_requests_are_not_mirrored_to_the_shadow(
    pair: Callable[..., tuple[Sidecar, Sidecar]], model: ModelServer
) -> None:
    stable, _ = pair(canary_weight=100, shadow_url=model.url, shadow_percent=100)
    assert send(stable, 10) == {"canary": 10}
    assert stable.snapshot()["shadow"]["mirrored"] == 0
    put_routing(stable, canary_weight=0)
    assert send(stable, 10, seed=1) == {"stable": 10}
    stable.wait_records(lambda s: s["shadow"]["compared"] == 10)
