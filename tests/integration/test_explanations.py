"""spec.explain through the running operator: a real sidecar's reservoir, a
real scikit-learn model on loopback, shap in the operator's worker processes.

The pods exist only in the API server, marked running at 127.0.0.1; each
carries an injected sidecar container whose ``--upstream`` says where the
model listens (the operator asks the model there, never through the proxy).
The sidecars run with the config the operator rendered, a 1 s reservoir
window from ``spec.explain.reservoirWindow`` among it (the default 60 s would
make the test wait minutes for the first closed window).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from _harness import (
    ApiServer,
    Operator,
    _stop,
    create_monitor,
    free_port,
    get_monitor,
    monitor,
    run_injected_sidecar,
    serve,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import CoreV1Api
from sklearn.ensemble import GradientBoostingRegressor

from driftline_operator.api.names import SIDECAR_NAME
from driftline_operator.cli.main import main

pytestmark = pytest.mark.timeout(300)

FEATURES = [f"f{i}" for i in range(4)]


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gradient-boosted model that leans on f0 most, served with --sklearn;
    and the reference profile (with its SHAP background) of its training data."""
    tmp = tmp_path_factory.mktemp("explained-model")
    x = rows(1500, 0)
    y = 3 * x[:, 0] + x[:, 1] - 0.5 * x[:, 3]
    estimator = GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0)
    estimator.fit(x, y)
    joblib.dump(estimator, tmp / "gbr.joblib")
    pd.DataFrame(x, columns=FEATURES).to_csv(tmp / "train.csv", index=False)
    built = ["profile", "build", str(tmp / "train.csv"), "-o", str(tmp / "profile.json")]
    assert main([*built, "--background-size", "10"]) == 0
    port = free_port()
    command = [sys.executable, "-m", "driftline_operator.cli.demo.model_server"]
    command += ["--port", str(port), "--sklearn", str(tmp / "gbr.joblib")]
    url = f"http://127.0.0.1:{port}"
    process = serve(command, url + "/healthz", tmp / "model.log")
    try:
        yield url, (tmp / "profile.json").read_text()
    finally:
        _stop(process)


def explained_monitor(api: Any, ns: str, name: str, profile: str, admin_port: int) -> None:
    CoreV1Api(api).create_namespaced_config_map(
        ns, {"metadata": {"name": f"{name}-reference"}, "data": {"profile.json": profile}}
    )
    spec = {
        "selector": {"matchLabels": {"app": name}},
        "model": {
            "name": name,
            "protocol": "json",
            "features": [{"name": f} for f in FEATURES],
            "prediction": {"path": "prediction", "score": "probability", "task": "regression"},
        },
        "reference": {"configMapRef": {"name": f"{name}-reference"}},
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": admin_port},
        "explain": {
            "enabled": True,
            "minExplanations": 5,
            "explanationsPerMinute": 600,
            "reservoirWindow": "1s",
        },
        "slos": [{"name": "reliance", "metric": "attributionDrift", "max": 0.9}],
    }
    create_monitor(api, ns, monitor(name, spec))
    wait_for_ready(api, ns, name, status="True", reason="SidecarConfigured")


def run_sidecar(
    api: Any, ns: str, name: str, model: str, profile: str, workdir: Path, admin_port: int
) -> tuple[subprocess.Popen[bytes], str]:
    def mount_profile(config: dict[str, Any]) -> None:
        # spec.explain's reservoir, as rendered by the operator: a window closes every second.
        assert config["reservoir"] == {"enabled": True, "size": 128, "window_seconds": 1.0}
        # In a pod the profile is mounted from its ConfigMap; here it is a file alike.
        (workdir / "profile.json").write_text(profile)
        config["profile_path"] = str(workdir / "profile.json")

    return run_injected_sidecar(
        api, ns, name, model, workdir, admin_port=admin_port, adjust=mount_profile
    )


def start_pod(api: Any, ns: str, name: str, app: str, upstream: str) -> None:
    """An injected pod at 127.0.0.1 whose sidecar proxies to ``upstream``."""
    core = CoreV1Api(api)
    sidecar = {"name": SIDECAR_NAME, "image": "sidecar:dev", "args": ["--upstream", upstream]}
    core.create_namespaced_pod(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {"app": app},
                "annotations": {"driftline.io/injected": "true"},
            },
            "spec": {"containers": [{"name": "model", "image": "models/gbr:1"}, sidecar]},
        },
    )
    running = {
        "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}
    }
    core.patch_namespaced_pod_status(name, ns, running)


def send(proxy: str, seed: int) -> None:
    with httpx.Client(base_url=f"http://{proxy}", timeout=10) as client:
        for row in rows(20, seed).tolist():
            answer = client.post("/predict", json=dict(zip(FEATURES, row, strict=True)))
            assert answer.status_code == 200


def explanations_condition(body: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "ExplanationsAvailable"), None)


def test_status_shows_what_the_model_relies_on(
    apiserver: ApiServer, operator: Operator, trained: tuple[str, str], tmp_path: Path
) -> None:
    api, ns = apiserver.client(), apiserver.namespace
    model, profile = trained
    admin_port = free_port()
    explained_monitor(api, ns, "why", profile, admin_port)
    sidecar, proxy = run_sidecar(api, ns, "why", model, profile, tmp_path, admin_port)
    try:
        start_pod(api, ns, "why-0", "why", model)
        seed = iter(range(1, 10_000))

        def explained() -> dict[str, Any] | None:
            send(proxy, next(seed))
            body = get_monitor(api, ns, "why") or {}
            figures = (body.get("status") or {}).get("explanations") or {}
            return body if figures.get("explained", 0) >= 5 else None

        body = wait_for("explained rows in status", explained, deadline=180)
    finally:
        _stop(sidecar)
    figures = body["status"]["explanations"]
    assert figures["status"] in ("ok", "drift")
    assert figures["distance"] is not None and 0 <= figures["distance"] <= 1
    assert figures["topFeatures"][0]["name"] == "f0"  # y = 3 f0 + f1 - 0.5 f3
    assert figures["referenceTop"][0] == "f0"
    assert abs(sum(f["share"] for f in figures["topFeatures"]) - 1) < 1e-6
    condition = explanations_condition(body)
    assert condition is not None and condition["status"] == "True", condition
    assert condition["reason"] == "Explained"
    metrics = httpx.get(operator.metrics_url, timeout=10).text
    gauge = next(
        line
        for line in metrics.splitlines()
        if line.startswith("driftline_operator_attribution_drift{") and 'monitor="why"' in line
    )
    assert 0 <= float(gauge.rsplit(" ", 1)[1]) <= 1
    slo = next(s for s in body["status"]["slos"] if s["name"] == "reliance")
    assert slo["verdict"] == "ok" and "attribution distance" in slo["message"], slo


def test_a_model_that_is_down_says_so_while_the_rest_goes_on(
    apiserver: ApiServer, operator: Operator, trained: tuple[str, str], tmp_path: Path
) -> None:
    """The pod's model port has nothing listening (the sidecar under test still
    proxies to the real model, so traffic and drift go on)."""
    api, ns = apiserver.client(), apiserver.namespace
    model, profile = trained
    admin_port = free_port()
    explained_monitor(api, ns, "down", profile, admin_port)
    sidecar, proxy = run_sidecar(api, ns, "down", model, profile, tmp_path, admin_port)
    try:
        start_pod(api, ns, "down-0", "down", f"http://127.0.0.1:{free_port()}")
        seed = iter(range(1, 10_000))

        def unavailable() -> dict[str, Any] | None:
            send(proxy, next(seed))
            body = get_monitor(api, ns, "down") or {}
            condition = explanations_condition(body)
            windows = (body.get("status") or {}).get("windows") or []
            stable = next((w for w in windows if w.get("role") == "stable"), {})
            # NoModelPods until the pod is there; then the model's own failure.
            down = condition and condition["reason"] == "ModelUnreachable"
            if down and condition["status"] == "False" and stable.get("requests", 0) > 0:
                return body
            return None

        body = wait_for(
            "ExplanationsAvailable=False beside a live window", unavailable, deadline=180
        )
    finally:
        _stop(sidecar)
    condition = explanations_condition(body)
    assert condition is not None
    assert condition["reason"] == "ModelUnreachable", condition
    assert "model at http://127.0.0.1:" in condition["message"]
    assert body["status"]["drift"]["status"] in ("ok", "drift", "insufficient_data")
    assert "explanations" not in body["status"]  # nothing explained, nothing made up
    slo = next(s for s in body["status"]["slos"] if s["name"] == "reliance")
    assert slo["verdict"] == "insufficient_data", slo
