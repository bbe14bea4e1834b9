"""``driftline explain`` on a request a real sidecar logged, against the real model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from driftline_operator.cli.main import main
from driftline_operator.cli.profiles import ProfileOptions, build_profile_from_file
from tests.component.conftest import N_FEATURES, ModelServer, Sidecar, wait_until

ADDITIVITY = 1e-9
FEATURES = [{"name": f"f{i}"} for i in range(N_FEATURES)]


@pytest.fixture
def setup(
    tmp_path: Path, model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> tuple[Path, Path, Sidecar]:
    rng = np.random.default_rng(5)
    data = tmp_path / "train.csv"
    pd.DataFrame(
        rng.normal(size=(500, N_FEATURES)), columns=[f"f{i}" for i in range(N_FEATURES)]
    ).to_csv(data, index=False)
    profile = tmp_path / "profile.json"
    built = build_profile_from_file(data, ProfileOptions(background_size=8))
    profile.write_text(built.model_dump_json())
    sidecar = sidecar_factory(
        model.url,
        model={"name": "fraud", "protocol": "kserve-v1", "features": FEATURES,
               "prediction": {"score": "1"}},
    )  # fmt: skip
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump(sidecar.config))
    return config, profile, sidecar


def test_a_logged_request_is_explained_and_adds_up(
    setup: tuple[Path, Path, Sidecar], model: ModelServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config, profile, sidecar = setup
    row = [1.5, -0.7, 0.2, 2.0]
    answer = httpx.post(
        sidecar.proxy + "/v1/models/fraud:predict",
        json={"instances": [row]},
        headers={"x-request-id": "req-42"},
        timeout=10,
    )
    score = answer.json()["predictions"][0][1]
    log = Path(sidecar.config["prediction_log"]["path"])
    wait_until(lambda: log.exists() and "req-42" in log.read_text(), timeout=30, what="the log")
    url = model.url + "/v1/models/fraud:predict"
    base = ["explain", "--model", url, "--config", str(config), "--profile", str(profile)]

    assert (
        main([*base, "--request-id", "req-42", "--json", "--png", str(config.parent / "w.png")])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["prediction"] == pytest.approx(score, abs=ADDITIVITY)
    total = result["base_value"] + sum(c["contribution"] for c in result["contributions"])
    assert total == pytest.approx(score, abs=ADDITIVITY)
    assert result["additivity_error"] <= ADDITIVITY
    sizes = [abs(c["contribution"]) for c in result["contributions"]]
    assert sizes == sorted(sizes, reverse=True)
    assert {c["feature"]: c["value"] for c in result["contributions"]} == {
        f"f{i}": v for i, v in enumerate(row)
    }
    assert (config.parent / "w.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main([*base, "--row", json.dumps({"f0": 1.5, "f1": -0.7, "f2": 0.2, "f3": 2.0})]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"prediction   {score:.6g}")
    assert "f0 = 1.5" in text and "█" in text


def test_bad_input_names_the_problem(
    setup: tuple[Path, Path, Sidecar], model: ModelServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config, profile, _ = setup
    url = model.url + "/v1/models/fraud:predict"
    base = ["explain", "--model", url, "--config", str(config), "--profile", str(profile)]
    assert main([*base, "--request-id", "nope"]) == 2
    assert "request nope is not in" in capsys.readouterr().err
    assert main([*base, "--row", '{"amount": 1}']) == 2
    assert "amount, which" in capsys.readouterr().err
    assert main([*base, "--row", "[1, 2]"]) == 2
    assert "JSON object" in capsys.readouterr().err
    down = ["explain", "--model", "http://127.0.0.1:9/predict", "--config", str(config),
            "--profile", str(profile), "--row", "{}"]  # fmt: skip
    assert main(down) == 2
    assert "ModelUnreachable" in capsys.readouterr().err
