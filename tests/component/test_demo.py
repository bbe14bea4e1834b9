"""`driftline demo --serve` starts a model server and a sidecar, sends traffic and
says where to look; the demo model server serves trained weights and takes
fault changes while it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.component.conftest import running_model


def test_demo_serve_runs_and_prints_where_to_look() -> None:
    code = "import sys; from driftline_operator.cli.demo import main; "
    code += "sys.exit(main(['--serve', '--no-wait', '--requests', '5', '--port', '0', "
    code += "'--admin-port', '0', '--model-port', '0']))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/v1/snapshot" in result.stdout and "/metrics" in result.stdout
    assert "Sent 5 requests" in result.stdout


def test_model_server_serves_weights_from_a_file(tmp_path: Path) -> None:
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"weights": [2.0, 0.0, 0.0, 0.0], "bias": 0.0}))
    with running_model(tmp_path, "--weights", str(weights)) as server:
        rows = [{"f0": 1.0}, {"f0": -1.0}]
        answers = httpx.post(f"{server.url}/predict", json=rows, timeout=10).json()
        assert [round(a["probability"], 6) for a in answers] == [0.880797, 0.119203]


def test_model_server_rejects_weights_of_the_wrong_size(tmp_path: Path) -> None:
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"weights": [1.0, 2.0], "bias": 0.0}))
    command = [sys.executable, "-m", "driftline_operator.cli.demo.model_server"]
    command += ["--port", "0", "--features", "4", "--weights", str(weights)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "has 2 weights but --features is 4" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_server_faults_change_while_it_runs(tmp_path: Path) -> None:
    with running_model(tmp_path) as server:
        row = {"f0": 0.5}
        assert httpx.post(f"{server.url}/predict", json=row, timeout=10).status_code == 200
        changed = httpx.post(f"{server.url}/control", json={"error_rate": 1.0}, timeout=10)
        assert changed.json() == {"latency_ms": 0.0, "error_rate": 1.0, "predict_requests": 1}
        assert httpx.post(f"{server.url}/predict", json=row, timeout=10).status_code == 500
        assert httpx.get(f"{server.url}/control", timeout=10).json()["error_rate"] == 1.0
        bad = httpx.post(f"{server.url}/control", json={"error_rate": 2}, timeout=10)
        assert bad.status_code == 400 and "error_rate in 0..1" in bad.json()["error"]
        httpx.post(f"{server.url}/control", json={"error_rate": 0.0}, timeout=10)
        assert httpx.post(f"{server.url}/predict", json=row, timeout=10).status_code == 200
