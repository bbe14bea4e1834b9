"""Deleting a ModelMonitor mid-canary puts all traffic back on stable first.

On the session's control plane, with the operator run by kopf's own runner:
the Deployment controller makes the pods, and a stand-in kubelet
(`_kubelet.py`) runs each stable pod as a real `driftline-sidecar` process on
a loopback address of its own, with the config the operator wrote (the
ConfigMap a real pod mounts, with the hash of the admin token). The sidecar
router pushes the canary weight to that process's admin API; deleting the
monitor must bring it back to 0, scale the canary to zero, and only then let
the ModelMonitor go.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _harness import (
    ApiServer,
    ControlPlane,
    Operator,
    create_monitor,
    deployment,
    events_for,
    free_port,
    get_monitor,
    monitor,
    read_config_map,
    wait_for,
    wait_for_ready,
)
from _kubelet import FakeKubelet
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi

from driftline_operator.api.names import (
    GROUP,
    PLURAL,
    VERSION,
    config_map_name,
)

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(120)]

ADMIN_PORT = free_port()  # every pod's admin port, on an address of its own
SIDECAR_START_SECONDS = 30.0


class SidecarProcess:
    """A real `driftline-sidecar` serving one pod's address; stoppable and
    restartable with the same config, as a container would be."""

    def __init__(self, command: list[str], admin: str, log: Path) -> None:
        self.command, self.admin, self.log = command, admin, log
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as out:
            process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        self.process = process
        end = time.monotonic() + SIDECAR_START_SECONDS
        while time.monotonic() < end:
            if process.poll() is not None:
                raise OSError(f"driftline-sidecar exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.admin}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.shutdown()
        raise OSError(f"driftline-sidecar did not answer at {self.admin}:\n{self.log.read_text()}")

    def routing(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.admin}/v1/config", timeout=5) as response:
            return dict(yaml.safe_load(response.read())["routing"])

    def shutdown(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def server_close(self) -> None:
        pass


class SidecarKubelet(FakeKubelet):
    """Stable pods run a real sidecar with the monitor's mounted config and
    token; other pods get the stand-in snapshot server."""

    def __init__(self, api: ApiClient, namespace: str, tmp: Path) -> None:
        super().__init__(api, namespace, admin_port=ADMIN_PORT, model="fraud")
        self._api, self._tmp = api, tmp
        self.sidecars: dict[str, SidecarProcess] = {}  # pod name: its sidecar

    def serve(self, pod: Any, ip: str) -> Any:
        labels = pod.metadata.labels or {}
        if labels.get("driftline.io/role") == "canary":
            return super().serve(pod, ip)
        monitor_name = labels["app"]  # each test's monitor is named like its app
        config_map = read_config_map(self._api, self._namespace, config_map_name(monitor_name))
        if config_map is None:
            raise OSError(f"pod {pod.metadata.name}: its ConfigMap is not there yet")
        here = self._tmp / pod.metadata.name
        here.mkdir(exist_ok=True)
        config = yaml.safe_load(config_map["data"]["sidecar.yaml"])
        config["prediction_log"]["path"] = str(here / "predictions.jsonl")
        (here / "sidecar.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "driftline_sidecar.main", "--config"]
        command += [str(here / "sidecar.yaml"), "--upstream", "http://127.0.0.1:9"]
        command += ["--listen", f"{ip}:{free_port()}", "--admin", f"{ip}:{ADMIN_PORT}"]
        sidecar = SidecarProcess(command, f"http://{ip}:{ADMIN_PORT}", here / "sidecar.log")
        self.sidecars[pod.metadata.name] = sidecar
        return sidecar

    def sidecar_of(self, app: str) -> SidecarProcess:
        """The one stable pod's sidecar of `app`, once it runs."""
        return wait_for(
            f"the stable sidecar of {app}",
            lambda: next((s for n, s in self.sidecars.items() if n.startswith(f"{app}-v1-")), None),
        )


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    apiserver: ApiServer,
    operator: Operator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ApiClient, str, SidecarKubelet]]:
    api = apiserver.client()
    kubelet = SidecarKubelet(api, apiserver.namespace, tmp_path_factory.mktemp("pods"))
    with kubelet:
        yield api, apiserver.namespace, kubelet
    api.close()


def canary_at_half(api: ApiClient, ns: str, app: str, kubelet: SidecarKubelet) -> SidecarProcess:
    """A canary rollout of `app` that the operator has taken to 50 % and holds there."""
    spec = {
        "selector": {"matchLabels": {"app": app}},
        "model": {"name": "fraud", "protocol": "json"},
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": ADMIN_PORT},
        "rollout": {
            "strategy": "canary",
            "stableRef": {"name": f"{app}-v1"},
            "canaryRef": {"name": f"{app}-v2"},
            "canaryService": {"name": f"{app}-v2", "port": "http"},
            "router": "sidecar",
            "steps": [50],
            "interval": "1h",  # the step is held for the whole test
            "progressDeadline": "1h",
        },
    }
    create_monitor(api, ns, monitor(app, spec))
    wait_for_ready(api, ns, app, status="True", reason="SidecarConfigured")
    CoreV1Api(api).create_namespaced_service(
        ns,
        {
            "metadata": {"name": f"{app}-v2"},
            "spec": {
                "selector": {"app": app, "track": "canary"},
                "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
            },
        },
    )
    apps = AppsV1Api(api)
    apps.create_namespaced_deployment(
        ns, deployment(f"{app}-v1", app, image="model:1", replicas=1, canary=False)
    )
    apps.create_namespaced_deployment(
        ns, deployment(f"{app}-v2", app, image="model:2", replicas=0, canary=True)
    )
    # The first push may find the stable pod not yet Running; the weight is
    # reasserted every tick, so its sidecar gets it at the next one.
    sidecar = kubelet.sidecar_of(app)
    wait_for(
        f"{app}: status.rollout.weight 50", lambda: rollout_of(api, ns, app).get("weight") == 50
    )
    wait_for(f"{app}: the stable sidecar at 50 %", lambda: sidecar.routing()["canary_weight"] == 50)
    assert replicas(api, ns, f"{app}-v2") == 1  # StartCanary gave it stable's count
    return sidecar


def rollout_of(api: ApiClient, ns: str, name: str) -> dict[str, Any]:
    return ((get_monitor(api, ns, name) or {}).get("status") or {}).get("rollout") or {}


def replicas(api: ApiClient, ns: str, name: str) -> int:
    return int(AppsV1Api(api).read_namespaced_deployment(name, ns).spec.replicas)


def delete_monitor(api: ApiClient, ns: str, name: str) -> None:
    CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def test_deleting_a_monitor_mid_canary_puts_all_traffic_back_on_stable(world):
    api, ns, kubelet = world
    sidecar = canary_at_half(api, ns, "half", kubelet)

    delete_monitor(api, ns, "half")

    wait_for("ModelMonitor half gone", lambda: get_monitor(api, ns, "half") is None)
    assert sidecar.routing()["canary_weight"] == 0  # the running stable sidecar, not just its file
    assert replicas(api, ns, "half-v2") == 0
    assert read_config_map(api, ns, config_map_name("half")) is None  # cleanup ran after it


def test_a_monitor_whose_config_map_went_first_still_finalizes(world):
    # Deleting the namespace deletes the ConfigMap and the ModelMonitor in no
    # particular order; the running sidecars still hold the canary weight.
    api, ns, kubelet = world
    sidecar = canary_at_half(api, ns, "orphan", kubelet)
    CoreV1Api(api).delete_namespaced_config_map(config_map_name("orphan"), ns)

    delete_monitor(api, ns, "orphan")

    wait_for("ModelMonitor orphan gone", lambda: get_monitor(api, ns, "orphan") is None)
    assert sidecar.routing()["canary_weight"] == 0
    assert replicas(api, ns, "orphan-v2") == 0
    reasons = [e["reason"] for e in events_for(api, ns, "orphan")]
    assert "RolloutNotFinalized" not in reasons, reasons


def test_a_monitor_whose_canary_deployment_went_first_still_finalizes(world):
    api, ns, kubelet = world
    sidecar = canary_at_half(api, ns, "nocanary", kubelet)
    AppsV1Api(api).delete_namespaced_deployment("nocanary-v2", ns)

    delete_monitor(api, ns, "nocanary")

    wait_for("ModelMonitor nocanary gone", lambda: get_monitor(api, ns, "nocanary") is None)
    assert sidecar.routing()["canary_weight"] == 0
    reasons = [e["reason"] for e in events_for(api, ns, "nocanary")]
    assert "RolloutNotFinalized" not in reasons, reasons


def test_the_monitor_stays_until_traffic_is_back_on_stable(world):
    api, ns, kubelet = world
    sidecar = canary_at_half(api, ns, "stuck", kubelet)
    sidecar.shutdown()  # the pod still says Running: its sidecar is unreachable

    delete_monitor(api, ns, "stuck")

    def warned() -> dict[str, Any] | None:
        events = events_for(api, ns, "stuck")
        return next((e for e in events if e["reason"] == "RolloutNotFinalized"), None)

    event = wait_for("a RolloutNotFinalized Warning", warned)
    assert event["type"] == "Warning"
    assert "did not reach 1 of 1 stable pods" in event["message"], event["message"]
    body = get_monitor(api, ns, "stuck")
    assert body is not None and body["metadata"].get("deletionTimestamp")
    assert f"{GROUP}/finalizer" in body["metadata"]["finalizers"]

    sidecar.start()  # the container restarts, with the weight it had

    wait_for("ModelMonitor stuck gone", lambda: get_monitor(api, ns, "stuck") is None)
    assert sidecar.routing()["canary_weight"] == 0
    assert replicas(api, ns, "stuck-v2") == 0
