"""Start-up errors, the admin config API, the prediction log, graceful shutdown."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from driftline_sidecar.main import build_config, parse_args
from driftline_sidecar.predlog import hash_value
from tests.component.conftest import wait_until

if TYPE_CHECKING:
    from tests.component.conftest import ModelServer, Sidecar


def run_sidecar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "driftline_sidecar.main", *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_invalid_config_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "m"}, "capture": {"queue_size": 0}}))
    result = run_sidecar("--config", str(path))
    assert result.returncode == 2
    assert "capture.queue_size" in result.stderr
    assert "Traceback" not in result.stderr

    result = run_sidecar("--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr and "Traceback" not in result.stderr

    result = run_sidecar("--model-name", "m", "--listen", "nonsense")
    assert result.returncode == 2
    assert "nonsense" in result.stderr and "HOST:PORT" in result.stderr


def test_pod_env_sets_version_and_role(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    env = {"DRIFTLINE_MODEL_VERSION": "2.3", "DRIFTLINE_ROLE": "canary"}
    sidecar = sidecar_factory(model.url, env=env)  # the config says v1, stable
    httpx.post(sidecar.proxy + "/predict", json={"f0": 1}, timeout=10)
    snapshot = sidecar.snapshot()
    assert (snapshot["version"], snapshot["role"]) == ("2.3", "canary")
    assert 'version="2.3"' in sidecar.metrics() and 'role="canary"' in sidecar.metrics()


def test_empty_pod_env_keeps_the_config(tmp_path: Path) -> None:
    # A pod without the labels gets empty values from the downward API.
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "m", "version": "v1", "role": "shadow"}}))
    args = parse_args(["--config", str(path)])
    config = build_config(args, env={"DRIFTLINE_MODEL_VERSION": "", "DRIFTLINE_ROLE": ""})
    assert (config.model.version, config.model.role) == ("v1", "shadow")
    config = build_config(args, env={"DRIFTLINE_ROLE": "stable"})
    assert (config.model.version, config.model.role) == ("v1", "stable")


def test_invalid_pod_role_is_a_config_error_naming_the_label() -> None:
    result = run_sidecar("--model-name", "m", env={"DRIFTLINE_ROLE": "blue"})
    assert result.returncode == 2
    assert "driftline.io/role" in result.stderr and "'blue'" in result.stderr
    assert "canary" in result.stderr and "Traceback" not in result.stderr


def test_absent_profile_file_starts_with_the_fixed_bins(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar], tmp_path: Path
) -> None:
    absent = tmp_path / "profile" / "reference.json"  # the optional ConfigMap key is missing
    features = [{"name": "f0", "bins": [0.0, 10.0]}]
    sidecar = sidecar_factory(
        model.url,
        profile_path=str(absent),
        model={"name": "fraud", "protocol": "json", "features": features},
    )
    assert httpx.get(sidecar.admin + "/readyz", timeout=10).status_code == 200
    httpx.post(sidecar.proxy + "/echo/predict", json={"f0": 5.0}, timeout=10)
    snapshot = sidecar.wait_records(lambda s: s["capture"]["records"] == 1)
    assert snapshot["profile_sha256"] == ""
    assert snapshot["features"]["f0"]["counts"] == [0, 1, 0]
    log = sidecar.log.read_text()
    assert "WARNING" in log and str(absent) in log and "fixed bins" in log


def test_config_api_needs_the_token(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar], tmp_path: Path
) -> None:
    sidecar = sidecar_factory(model.url, admin_token_sha256=hashlib.sha256(b"s3cret").hexdigest())
    url = sidecar.admin + "/v1/config"
    current = httpx.get(url, timeout=5).json()
    assert current["model"]["name"] == "fraud"

    changed = {**current, "routing": {**current["routing"], "canary_weight": 25.0}}
    assert httpx.put(url, json=changed, timeout=5).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert httpx.put(url, json=changed, headers=wrong, timeout=5).status_code == 403
    good = {"authorization": "Bearer s3cret"}
    invalid = {**changed, "routing": {"canary_weight": 250}}
    response = httpx.put(url, json=invalid, headers=good, timeout=5)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "routing.canary_weight"

    # Only routing changes at run time: not where the model is, not the token.
    for field, value in (("upstream", "http://attacker:80"), ("admin_token_sha256", None)):
        response = httpx.put(url, json={**changed, field: value}, headers=good, timeout=5)
        assert response.status_code == 422, field
        assert field in response.json()["error"]

    response = httpx.put(url, json=changed, headers=good, timeout=5)
    assert response.status_code == 200
    assert httpx.get(url, timeout=5).json()["routing"]["canary_weight"] == 25.0


def test_routing_may_name_only_services_of_the_sidecars_namespace(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(
        model.url, namespace="ml", admin_token_sha256=hashlib.sha256(b"s3cret").hexdigest()
    )
    url, good = sidecar.admin + "/v1/config", {"authorization": "Bearer s3cret"}
    current = httpx.get(url, timeout=5).json()
    assert current["namespace"] == "ml"

    def put(**routing: Any) -> httpx.Response:
        changed = {**current, "routing": {**current["routing"], **routing}}
        return httpx.put(url, json=changed, headers=good, timeout=5)

    for field, target in (
        ("canary_url", "http://attacker.example:80"),
        ("canary_url", "http://fraud-v2.payments.svc:80"),
        ("shadow_url", "http://10.0.0.7:8080"),
        ("shadow_url", "http://fraud-v2.ml.svc.attacker.example"),
    ):
        response = put(**{field: target, "canary_weight": 50.0, "shadow_percent": 50.0})
        assert response.status_code == 422, target
        detail = response.json()["detail"]
        assert [d["field"] for d in detail] == [f"routing.{field}"]
        assert target in detail[0]["problem"] and "namespace ml" in detail[0]["problem"]
    # Nor can a write move the sidecar to another namespace first.
    moved = {**current, "namespace": "payments"}
    response = httpx.put(url, json=moved, headers=good, timeout=5)
    assert response.status_code == 422 and "namespace" in response.json()["error"]
    assert httpx.get(url, timeout=5).json() == current  # nothing of the refused writes applied

    response = put(canary_url="http://fraud-v2.ml.svc:80", shadow_url=None)
    assert response.status_code == 200
    assert response.json()["routing"]["canary_url"] == "http://fraud-v2.ml.svc:80"


def test_a_config_routing_out_of_its_namespace_keeps_the_sidecar_from_starting(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sidecar.yaml"
    routing = {"canary_url": "http://attacker.example:80", "canary_weight": 10}
    path.write_text(yaml.safe_dump({"model": {"name": "m"}, "namespace": "ml", "routing": routing}))
    result = run_sidecar("--config", str(path))
    assert result.returncode == 2
    assert "routing.canary_url" in result.stderr and "namespace ml" in result.stderr
    assert "Traceback" not in result.stderr


def test_reads_are_open_and_hold_no_secret(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    """The kubelet, Prometheus and a person read the admin API without a token;
    nothing there gives the write token away (admin.py says who may call what)."""
    token = "s3cret-token-0123456789"
    sidecar = sidecar_factory(
        model.url, admin_token_sha256=hashlib.sha256(token.encode()).hexdigest()
    )
    for path in ("/healthz", "/readyz", "/metrics", "/v1/snapshot", "/v1/config"):
        response = httpx.get(sidecar.admin + path, timeout=5)
        assert response.status_code == 200, path
        assert token not in response.text, path


def test_config_api_is_disabled_without_a_token(sidecar: Sidecar) -> None:
    config = httpx.get(sidecar.admin + "/v1/config", timeout=5).json()
    response = httpx.put(
        sidecar.admin + "/v1/config",
        json=config,
        headers={"authorization": "Bearer x"},
        timeout=5,
    )
    assert response.status_code == 404
    assert "admin_token_sha256" in response.json()["error"]


def test_sigterm_drains_in_flight_requests_and_flushes_the_log(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    features = [{"name": "f0"}, {"name": "f1", "type": "categorical", "pii": "hash"}]
    sidecar = sidecar_factory(
        model.url,
        model={"name": "fraud", "protocol": "json", "features": features},
        env={"DRIFTLINE_PII_SALT": "pepper"},
    )
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        for i in range(5):
            client.post("/echo/predict", json={"f0": i, "f1": f"user{i}@example.com"})
    slow: dict[str, Any] = {}

    def call_slow() -> None:
        slow["response"] = httpx.get(sidecar.proxy + "/sleep?seconds=1.5", timeout=20)

    caller = threading.Thread(target=call_slow)
    caller.start()
    # Wait until the slow request is in flight, then ask the sidecar to stop.
    wait_until(
        lambda: (
            "driftline_requests_in_flight{" in sidecar.metrics()
            and _in_flight(sidecar.metrics()) >= 1
        ),
        what="the slow request in flight",
    )
    sidecar.process.send_signal(signal.SIGTERM)
    caller.join(timeout=30)
    assert slow["response"].status_code == 200
    assert slow["response"].json() == {"slept": True}
    assert sidecar.process.wait(timeout=30) == 0

    log = Path(sidecar.config["prediction_log"]["path"])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 5  # sample_ratio 1.0: every captured row, flushed on exit
    assert {r["features"]["f0"] for r in records} == set(range(5))
    for record in records:
        assert "@example.com" not in json.dumps(record)  # pii hashed, with the salt given
        i = record["features"]["f0"]
        assert record["features"]["f1"] == hash_value(f"user{i}@example.com", b"pepper")
        assert record["model"] == "fraud" and record["request_id"]


def _in_flight(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("driftline_requests_in_flight{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
