"""The operator killed (SIGKILL) at every step boundary of a canary, then restarted.

A canary ([50, 100], `replicas` router, two pods in all) crosses twelve step
boundaries (`driftline_operator.faults`): each decision that changes the
cluster is recorded in status, takes its actions one by one, and is
confirmed by the tick's status write. Each test runs the real operator
(kopf's runner, the session's control plane, `_kubelet.FakeKubelet`'s pods)
with ``DRIFTLINE_FAULT_KILL_AT=N``, so that it SIGKILLs itself right after
boundary N, starts a plain operator in its place, and checks the canary ends
as the run without a crash did: promoted, never rolled back, and each
Deployment's replicas going through the same values in the same order (a
step lost with the process shows up as a weight that goes back and forth).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import (
    ApiServer,
    ControlPlane,
    events_for,
    free_port,
    get_monitor,
    running_operator,
    start_canary,
    wait_for,
)
from _kubelet import FakeKubelet
from kubernetes import watch
from kubernetes.client import ApiClient, AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from driftline_operator.api.names import GROUP, PLURAL, VERSION
from driftline_operator.controller.tls import write_self_signed
from driftline_operator.faults import KILL_AT_ENV

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(420)]

ADMIN_PORT = free_port()
STEPS = [50, 100]
# RolloutStarted: recorded, StartCanary, SetWeight, written; StepAdvanced:
# recorded, SetWeight, written; Promoted: recorded, PromoteCanary, SetWeight,
# ScaleCanaryToZero, written.
BOUNDARIES = [
    "RolloutStarted recorded",
    "RolloutStarted StartCanary",
    "RolloutStarted SetWeight",
    "RolloutStarted written",
    "StepAdvanced recorded",
    "StepAdvanced SetWeight",
    "StepAdvanced written",
    "Promoted recorded",
    "Promoted PromoteCanary",
    "Promoted SetWeight",
    "Promoted ScaleCanaryToZero",
    "Promoted written",
]
# What the replicas router does to two pods at 50 %, 100 % and after promotion.
REPLICAS = {"v1": [2, 1, 0, 2], "v2": [0, 1, 2, 0]}
NEVER = 1_000_000  # a boundary never reached: boundaries are logged, nothing is killed


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiClient, ApiServer, Path]]:
    api = apiserver.client()
    tmp = tmp_path_factory.mktemp("operator")
    write_self_signed(tmp / "tls")  # one key across restarts, as the chart's Secret
    with FakeKubelet(api, apiserver.namespace, admin_port=ADMIN_PORT, model="fraud"):
        yield api, apiserver, tmp


class ReplicaLog:
    """Every value each Deployment's spec.replicas takes, from a watch."""

    def __init__(self, api: ApiClient, namespace: str, app: str) -> None:
        self._apps = AppsV1Api(api)
        self._namespace, self._app = namespace, app
        self._watch = watch.Watch()
        self.seen: dict[str, list[int]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = self._watch.stream(self._apps.list_namespaced_deployment, self._namespace)
        # Stopping the watch may cut the response short (urllib3's ProtocolError).
        with contextlib.suppress(ApiException, ProtocolError):
            for event in stream:
                name = event["object"].metadata.name
                if not name.startswith(f"{self._app}-"):
                    continue
                values = self.seen.setdefault(name.removeprefix(f"{self._app}-"), [])
                replicas = event["object"].spec.replicas
                if not values or values[-1] != replicas:
                    values.append(replicas)

    def close(self) -> None:
        self._watch.stop()


def start_rollout(api: ApiClient, namespace: str, app: str) -> None:
    # A short deadline, so that a step lost with the process ends in a
    # rollback within the test rather than in ten minutes.
    rollout = {"steps": STEPS, "progressDeadline": "30s"}
    start_canary(api, namespace, app, admin_port=ADMIN_PORT, rollout=rollout)


def rollout_of(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return ((get_monitor(api, namespace, name) or {}).get("status") or {}).get("rollout") or {}


def finished(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    rollout = rollout_of(api, namespace, name)
    done = rollout.get("phase") in ("Succeeded", "Failed") and not rollout.get("pending")
    return rollout if done else None


def crossed(log: Path) -> list[str]:
    return re.findall(r"driftline fault injection: boundary \d+: (.+)", log.read_text())


def remove(api: ApiClient, namespace: str, app: str) -> None:
    """The monitor (its finalizer needs the operator running) and the Deployments."""
    CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, app)
    wait_for(f"ModelMonitor {app} to go", lambda: get_monitor(api, namespace, app) is None)
    for name in (f"{app}-v1", f"{app}-v2"):
        AppsV1Api(api).delete_namespaced_deployment(name, namespace)


def operator(server: ApiServer, tmp: Path, run: str) -> contextlib.AbstractContextManager[Any]:
    """A fresh operator process; its log is `tmp/run/operator.log`."""
    (tmp / run).mkdir()
    return running_operator(
        server, tmp / run, cert_dir=tmp / "tls", operator_namespace="driftline-system"
    )


def stable_image(api: ApiClient, namespace: str, app: str) -> str:
    found = AppsV1Api(api).read_namespaced_deployment(f"{app}-v1", namespace)
    return str(found.spec.template.spec.containers[0].image)


def test_a_canary_without_a_crash_crosses_every_boundary_once(world, monkeypatch):
    api, server, tmp = world
    ns, app = server.namespace, "uncrashed"
    replicas = ReplicaLog(api, ns, app)
    monkeypatch.setenv(KILL_AT_ENV, str(NEVER))
    with operator(server, tmp, app) as running:
        start_rollout(api, ns, app)
        status = wait_for("the canary to finish", lambda: finished(api, ns, app), deadline=120)
        image = stable_image(api, ns, app)
        remove(api, ns, app)
    replicas.close()

    assert status["phase"] == "Succeeded" and status["decision"].startswith("Promoted")
    assert crossed(running.log) == BOUNDARIES
    assert replicas.seen == REPLICAS and image == "model:2"


@pytest.mark.parametrize("kill_at", range(1, len(BOUNDARIES) + 1), ids=BOUNDARIES)
def test_a_canary_killed_at_a_step_boundary_resumes_and_is_promoted(world, monkeypatch, kill_at):
    api, server, tmp = world
    ns, app = server.namespace, f"killed-{kill_at}"
    replicas = ReplicaLog(api, ns, app)
    monkeypatch.setenv(KILL_AT_ENV, str(kill_at))
    with operator(server, tmp, app) as doomed:
        start_rollout(api, ns, app)
        killed = wait_for("the operator to kill itself", doomed.process.poll, deadline=120)
    assert killed == -signal.SIGKILL
    where = crossed(doomed.log)[-1]
    assert where == BOUNDARIES[kill_at - 1]

    monkeypatch.delenv(KILL_AT_ENV)
    with operator(server, tmp, f"{app}-restarted"):
        status = wait_for("the canary to finish", lambda: finished(api, ns, app), deadline=120)
        image = stable_image(api, ns, app)
        reasons = [e["reason"] for e in events_for(api, ns, app)]
        remove(api, ns, app)
    replicas.close()

    assert status["phase"] == "Succeeded", f"killed after {where}: {status['decision']}"
    assert status["decision"].startswith("Promoted")
    assert "RolledBack" not in reasons and "ProgressDeadlineExceeded" not in reasons
    assert "RolloutRestarted" not in reasons
    # Each value once, in order: no step taken twice, none undone and redone.
    assert replicas.seen == REPLICAS, f"killed after {where}"
    assert image == "model:2"
