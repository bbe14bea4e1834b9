"""``driftline report --monitor``: a ModelMonitor on the session's real API
server, its profile in a ConfigMap, a pod whose real sidecar (in front of the
demo model, on loopback) counted real requests; the report reads them the way
the operator does and shows the monitor's SLOs, rollout and Events."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from _harness import ControlPlane, create_monitor, monitor, namespace_on
from kubernetes.client import CoreV1Api

from driftline_operator import kube
from driftline_operator.cli.main import main
from tests.component.conftest import (
    _stop,
    free_port,
    running_model,
    sidecar_config,
    start_sidecar,
)

BIN = Path(sys.executable).parent
FEATURES = [f"f{i}" for i in range(4)]
REQUESTS = 300


class Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.features: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section" and found.get("data-feature"):
            self.features[found["data-feature"] or ""] = found.get("data-verdict") or ""


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("report-monitor")
    rng = np.random.default_rng(5)
    pd.DataFrame({f: rng.uniform(-1, 1, 2_000) for f in FEATURES}).to_csv(
        tmp / "train.csv", index=False
    )
    assert main(["profile", "build", str(tmp / "train.csv"), "-o", str(tmp / "profile.json")]) == 0
    profile = (tmp / "profile.json").read_text()
    admin_port = free_port()
    with namespace_on(control_plane, "it-report-monitor") as server, running_model(tmp) as model:
        api, ns = server.client(), server.namespace
        core = CoreV1Api(api)
        core.create_namespaced_config_map(
            ns, {"metadata": {"name": "fraud-reference"}, "data": {"profile.json": profile}}
        )
        spec = {
            "selector": {"matchLabels": {"app": "fraud"}},
            "model": {
                "name": "fraud",
                "protocol": "json",
                "features": [{"name": f} for f in FEATURES],
            },
            "reference": {"configMapRef": {"name": "fraud-reference"}},
            "drift": {"method": "psi"},
            "slos": [{"name": "availability", "metric": "successRate", "objective": "99.9%"}],
            "sidecar": {"adminPort": admin_port},
        }
        create_monitor(api, ns, monitor("fraud", spec))
        create_monitor(
            api, ns, monitor("unprofiled", {k: v for k, v in spec.items() if k != "reference"})
        )
        config = sidecar_config(
            model.url,
            tmp,
            model={
                "name": "fraud",
                "version": "v1",
                "protocol": "json",
                "features": [{"name": f} for f in FEATURES],
                "prediction": {"path": "prediction", "score": "probability"},
            },
            profile_path=str(tmp / "profile.json"),
            admin=f"127.0.0.1:{admin_port}",
        )
        sidecar = start_sidecar(tmp / "sidecar", config)
        try:
            core.create_namespaced_pod(
                ns,
                {
                    "metadata": {
                        "name": "fraud-0",
                        "labels": {"app": "fraud"},
                        "annotations": {"driftline.io/injected": "true"},
                    },
                    "spec": {"containers": [{"name": "model", "image": "registry.local/fraud:1"}]},
                },
            )
            running = {
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "podIPs": [{"ip": "127.0.0.1"}],
                }
            }
            core.patch_namespaced_pod_status("fraud-0", ns, running)
            rows = np.random.default_rng(6)
            with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
                for _ in range(REQUESTS):
                    row = {f: float(rows.uniform(-1, 1)) for f in FEATURES}
                    row["f0"] = float(rows.normal(0.8, 0.2))
                    assert client.post("/predict", json=[row]).status_code == 200
            sidecar.wait_records(lambda s: s["capture"]["records"] >= REQUESTS)
            kube.patch_status(
                api,
                kube.MONITORS,
                ns,
                "fraud",
                {
                    "phase": "Progressing",
                    "slos": [
                        {
                            "name": "availability",
                            "verdict": "ok",
                            "value": 1.0,
                            "objective": 0.999,
                            "burnRate": 0.0,
                            "message": "no errors",
                        }
                    ],
                    "rollout": {
                        "phase": "Progressing",
                        "step": 1,
                        "weight": 25,
                        "decision": "StepAdvanced: weight 10 -> 25",
                    },
                },
            )
            body = kube.get(api, kube.MONITORS, ns, "fraud")
            core.create_namespaced_event(
                ns,
                {
                    "metadata": {"generateName": "fraud.", "namespace": ns},
                    "involvedObject": {
                        "apiVersion": body["apiVersion"],
                        "kind": "ModelMonitor",
                        "name": "fraud",
                        "namespace": ns,
                        "uid": body["metadata"]["uid"],
                    },
                    "reason": "StepAdvanced",
                    "message": "canary healthy; weight 10 -> 25",
                    "type": "Normal",
                    "firstTimestamp": "2026-12-01T22:00:00Z",
                    "lastTimestamp": "2026-12-01T22:00:00Z",
                    "count": 1,
                },
            )
            yield ns, server.kubeconfig
        finally:
            _stop(sidecar.process)
            api.close()


def report(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "driftline"), "report", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )


def test_the_report_of_a_live_monitor(world, tmp_path):
    ns, kubeconfig = world
    output = tmp_path / "fraud.html"
    result = report(kubeconfig, "--monitor", "fraud", "-n", ns, "-o", str(output))
    assert result.returncode == 0, result.stderr
    html = output.read_text()
    page = Sections()
    page.feed(html)
    assert page.features == {"f0": "drift", "f1": "ok", "f2": "ok", "f3": "ok"}
    assert f"ConfigMap {ns}/fraud-reference key &#39;profile.json&#39;" in html
    assert f"1 stable pod(s) of ModelMonitor {ns}/fraud" in html
    assert f"{REQUESTS} rows" in html
    assert 'id="slos"' in html and "availability" in html
    assert "StepAdvanced: weight 10 -&gt; 25" in html  # the rollout's last decision
    assert "canary healthy; weight 10 -&gt; 25" in html  # its Events, on the timeline


def test_a_monitor_without_a_reference_is_refused_by_name(world, tmp_path):
    ns, kubeconfig = world
    result = report(kubeconfig, "--monitor", "unprofiled", "-n", ns, "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2
    assert f"ModelMonitor {ns}/unprofiled has no spec.reference" in result.stderr
    assert not (tmp_path / "r.html").exists()
