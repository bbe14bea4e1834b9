"""Two replicas of the operator, run for real against the shared control
plane, coordinated by a coordination.k8s.io Lease (`controller.election`).

One holds the Lease and alone acts (only it ran the acting operator's start-up);
both answer the webhook from a live index. The leader killed with SIGKILL:
the other takes the Lease over once it expires and analyses the monitor from
there on; the webhook never stopped being answered. The leader stopped with
SIGTERM: it releases the Lease and exits 0, and a standby takes over. How
long each takes is measured in bench/failover.py, never asserted here.

The tests of this module run in order on one pair of replicas.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from _harness import (
    ApiServer,
    ControlPlane,
    Operator,
    create_monitor,
    get_monitor,
    monitor,
    running_operator,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import CoordinationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from driftline_operator.api.names import SIDECAR_NAME
from driftline_operator.controller.handlers import WEBHOOK_PATH
from driftline_operator.controller.tls import write_self_signed

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]

LEASE = "driftline-operator"
MONITOR = "fraud"
# Short timings, so that the tests wait seconds rather than the defaults' 15.
TIMINGS = {
    "DRIFTLINE_LEASE_DURATION_SECONDS": "5",
    "DRIFTLINE_LEASE_RENEW_DEADLINE_SECONDS": "4",
    "DRIFTLINE_LEASE_RETRY_PERIOD_SECONDS": "1",
}
ACTING_STARTED = "Activity 'configure_acting' succeeded"


class Replicas:
    """Operator processes started and stopped at will, each named
    `replica-<letter>`, that name being the start of its Lease identity."""

    def __init__(self, server: ApiServer, tmp: Path, *, lease_namespace: str) -> None:
        self.server = server
        self.api = server.client()
        self.tmp = tmp
        self.lease_namespace = lease_namespace
        self.running: dict[str, Operator] = {}
        self._stack = contextlib.ExitStack()
        write_self_signed(tmp / "tls")

    def start(self, name: str) -> Operator:
        env = {
            "DRIFTLINE_LEASE_NAME": LEASE,
            "DRIFTLINE_POD_NAME": name,
            **TIMINGS,
        }
        operator = self._stack.enter_context(
            running_operator(
                self.server, self.tmp, cert_dir=self.tmp / "tls",
                operator_namespace=self.lease_namespace, extra_env=env,
                log_name=f"{name}.log",
            )
        )  # fmt: skip
        self.running[name] = operator
        return operator

    def holder(self) -> str | None:
        """The replica holding the Lease (None: nobody, or released)."""
        try:
            lease = CoordinationV1Api(self.api).read_namespaced_lease(LEASE, self.lease_namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        identity = lease.spec.holder_identity
        return identity.split("_", 1)[0] if identity else None

    def leader(self) -> str:
        return wait_for("a replica holding the Lease", self.holder)

    def acted(self, name: str) -> bool:
        return ACTING_STARTED in self.running[name].log.read_text()

    def close(self) -> None:
        self._stack.close()
        self.api.close()


@pytest.fixture(scope="module")
def replicas(
    control_plane: ControlPlane, apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    lease_namespace = f"{apiserver.namespace}-system"
    api = control_plane.client()
    CoreV1Api(api).create_namespace({"metadata": {"name": lease_namespace}})
    pair = Replicas(apiserver, tmp_path_factory.mktemp("replicas"), lease_namespace=lease_namespace)
    try:
        for name in ("replica-a", "replica-b"):
            pair.start(name)
        spec = {
            "selector": {"matchLabels": {"app": "fraud"}},
            "model": {"name": "fraud", "port": "http", "protocol": "json",
                      "features": [{"name": "amount"}]},
            "analysis": {"interval": "2s"},
        }  # fmt: skip
        create_monitor(pair.api, apiserver.namespace, monitor(MONITOR, spec))
        wait_for_ready(
            pair.api, apiserver.namespace, MONITOR, status="True", reason="SidecarConfigured"
        )
        yield pair
    finally:
        pair.close()
        with contextlib.suppress(ApiException):
            CoreV1Api(api).delete_namespace(lease_namespace)
        api.close()


def analysed_at(replicas: Replicas) -> datetime | None:
    body = get_monitor(replicas.api, replicas.server.namespace, MONITOR) or {}
    stamp = (body.get("status") or {}).get("lastAnalysisTime")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def wait_for_analysis_after(replicas: Replicas, moment: float) -> datetime:
    def later() -> datetime | None:
        stamp = analysed_at(replicas)
        return stamp if stamp is not None and stamp.timestamp() > moment else None

    return wait_for(f"ModelMonitor {MONITOR} analysed after {moment:.1f}", later)


def injects(operator: Operator, namespace: str) -> bool:
    """POST an AdmissionReview for a selected pod; whether the answer adds the sidecar."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "fraud-", "namespace": namespace, "labels": {"app": "fraud"}},
        "spec": {"containers": [{"name": "model", "image": "registry.local/fraud:1",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    }  # fmt: skip
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk,
            "requestResource": gvr, "name": "", "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": None, "dryRun": False,
        },
    }  # fmt: skip
    context = ssl.create_default_context(cafile=str(operator.cafile))
    request = urllib.request.Request(
        operator.webhook_url + WEBHOOK_PATH,
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())["response"]
    assert answer["allowed"] is True
    ops = json.loads(base64.b64decode(answer["patch"])) if answer.get("patch") else []
    return any(
        isinstance(op.get("value"), dict) and op["value"].get("name") == SIDECAR_NAME for op in ops
    )


def test_one_replica_holds_the_lease_and_only_it_acts(replicas: Replicas) -> None:
    leader = replicas.leader()
    (standby,) = set(replicas.running) - {leader}
    assert replicas.acted(leader)
    wait_for_analysis_after(replicas, time.time())
    assert not replicas.acted(standby), "the standby started the acting operator"
    assert replicas.holder() == leader


def test_every_replica_answers_the_webhook_from_a_live_index(replicas: Replicas) -> None:
    for name, operator in replicas.running.items():
        assert injects(operator, replicas.server.namespace), f"{name} did not inject"


def test_a_killed_leader_is_replaced_and_the_monitor_still_analysed(replicas: Replicas) -> None:
    leader = replicas.leader()
    (standby,) = set(replicas.running) - {leader}
    killed_at = time.time()
    replicas.running[leader].process.send_signal(signal.SIGKILL)
    replicas.running[leader].process.wait(timeout=30)
    # Before the Lease expires the standby must not act, yet serves the webhook.
    assert injects(replicas.running[standby], replicas.server.namespace)
    wait_for(f"{standby} to take the Lease over", lambda: replicas.holder() == standby)
    assert replicas.acted(standby)
    wait_for_analysis_after(replicas, killed_at)
    del replicas.running[leader]


def test_a_stopped_leader_releases_the_lease_and_a_standby_takes_over(
    replicas: Replicas,
) -> None:
    leader = replicas.leader()
    replicas.start("replica-c")
    assert not replicas.acted("replica-c")
    stopped_at = time.time()
    process = replicas.running[leader].process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, replicas.running[leader].log.read_text()[-3000:]
    wait_for("replica-c to take the Lease over", lambda: replicas.holder() == "replica-c")
    assert "released Lease" in replicas.running[leader].log.read_text()
    assert replicas.acted("replica-c")
    wait_for_analysis_after(replicas, stopped_at)
    assert injects(replicas.running["replica-c"], replicas.server.namespace)
