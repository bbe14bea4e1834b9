"""The operator's analysis daemon against a real sidecar in front of a real model.

The pod exists only in the API emulator, but its status points at loopback,
where the sidecar runs with the very config the operator rendered into the
ConfigMap. A second injected pod points at an address where nothing listens.
The daemon must collect the first, report the second as unreachable, and
write the window into `.status`. On the shared control plane (conftest.py)
the pod is a real API object, marked running as a kubelet would.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _harness import (
    ApiServer,
    Operator,
    _stop,
    create_monitor,
    free_port,
    get_monitor,
    monitor,
    read_config_map,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import CoreV1Api

pytestmark = pytest.mark.timeout(300)

ADMIN_PORT = free_port()  # the sidecar's admin port, as spec.sidecar.adminPort says


def _serve(command: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{command[2]} exited:\n{log.read_text()}")
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200

    try:
        wait_for(url, up)
    except BaseException:
        _stop(process)
        raise
    return process


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "driftline_operator.cli.demo.model_server",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    process = _serve(command, url + "/healthz", tmp_path_factory.mktemp("model") / "model.log")
    try:
        yield url
    finally:
        _stop(process)


def live_pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "live"},
            "annotations": {"driftline.io/injected": "true"},
        },
        "spec": {"containers": [{"name": "model", "image": "registry.local/models/live:1"}]},
    }


def start_pod(core: CoreV1Api, namespace: str, name: str, ip: str) -> None:
    """Create the pod and mark it running at `ip`, as a kubelet would (kwok-style:
    a bare control plane has no kubelet, and the emulator none either)."""
    core.create_namespaced_pod(namespace, live_pod(name, ip))
    running = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    core.patch_namespaced_pod_status(name, namespace, running)


def test_the_daemon_collects_real_sidecars_into_status(
    apiserver: ApiServer, operator: Operator, model: str, tmp_path: Path
):
    api, ns = apiserver.client(), apiserver.namespace
    spec = {
        "selector": {"matchLabels": {"app": "live"}},
        "model": {"name": "live", "protocol": "json"},
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": ADMIN_PORT},
    }
    create_monitor(api, ns, monitor("live", spec))
    wait_for_ready(api, ns, "live", status="True", reason="SidecarConfigured")

    # Run the sidecar exactly as injected: with the config the operator rendered.
    config_map = read_config_map(api, ns, "driftline-live-sidecar")
    assert config_map is not None
    config = yaml.safe_load(config_map["data"]["sidecar.yaml"])
    config["prediction_log"]["path"] = str(tmp_path / "predictions.jsonl")
    (tmp_path / "sidecar.yaml").write_text(yaml.safe_dump(config))
    proxy = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "driftline_sidecar.main", "--config"]
    command += [str(tmp_path / "sidecar.yaml"), "--upstream", model, "--listen", proxy]
    command += ["--admin", f"127.0.0.1:{ADMIN_PORT}"]
    sidecar = _serve(command, f"http://127.0.0.1:{ADMIN_PORT}/healthz", tmp_path / "sidecar.log")
    try:
        core = CoreV1Api(api)
        start_pod(core, ns, "live-0", "127.0.0.1")
        start_pod(core, ns, "live-1", "127.0.0.2")  # nothing listens there

        def requests_seen() -> dict[str, Any] | None:
            with httpx.Client(base_url=f"http://{proxy}", timeout=10) as client:
                for i in range(10):
                    row = {"f0": i / 10, "f1": 0.5, "f2": -0.2, "f3": 1.0}
                    assert client.post("/predict", json=row).status_code == 200
            body = get_monitor(api, ns, "live") or {}
            windows = (body.get("status") or {}).get("windows") or []
            stable = next((w for w in windows if w.get("role") == "stable"), None)
            return body if stable and stable.get("requests", 0) > 0 else None

        body = wait_for("a window with requests in status", requests_seen)
    finally:
        _stop(sidecar)

    status = body["status"]
    assert status["pods"] == {
        "selected": 2,
        "monitored": 2,
        "notInjected": 0,
        "unreachable": ["live-1"],
    }
    assert status["lastAnalysisTime"]
    assert status["phase"] not in ("Pending", "Invalid")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"  # the analysis' conditions did not replace Ready

    # The operator's own /metrics carry the monitor's window and its collection errors.
    metrics = httpx.get(operator.metrics_url, timeout=10).text
    series = [line for line in metrics.splitlines() if 'monitor="live"' in line]
    assert any(line.startswith("driftline_operator_window_requests") for line in series)
    errors = [line for line in series if line.startswith("driftline_operator_collection_errors")]
    assert errors and float(errors[0].rsplit(" ", 1)[1]) >= 1  # live-1 never answers
