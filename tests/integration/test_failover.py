"""Two replicas of the operator, run for real against the shared control
plane, coordinated by a coordination.k8s.io Lease (`controller.election`).

One holds the Lease and alone acts (only it ran the acting operator's start-up);
both answer the webhook from a live index. The leader killed with SIGKILL:
the other takes the Lease over once it expires and analyses the monitor from
there on; the webhook never stopped being answered. The leader stopped with
SIGTERM: it releases the Lease and exits 0, and a standby takes over. How
long each takes is measured in bench/failover.py, never asserted here. A
leader that finds the Lease held by another stops acting and exits.

The tests of this module run in order on one pair of replicas.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from _harness import (
    LEASE,
    ApiServer,
    ControlPlane,
    Replicas,
    create_monitor,
    get_monitor,
    injects_sidecar,
    monitor,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import CoordinationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]

MONITOR = "fraud"
# Short timings, so that the tests wait seconds rather than the defaults' 15.
TIMINGS = {
    "DRIFTLINE_LEASE_DURATION_SECONDS": "5",
    "DRIFTLINE_LEASE_RENEW_DEADLINE_SECONDS": "4",
    "DRIFTLINE_LEASE_RETRY_PERIOD_SECONDS": "1",
}


@pytest.fixture(scope="module")
def replicas(
    control_plane: ControlPlane, apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    lease_namespace = f"{apiserver.namespace}-system"
    api = control_plane.client()
    CoreV1Api(api).create_namespace({"metadata": {"name": lease_namespace}})
    pair = Replicas(
        apiserver, tmp_path_factory.mktemp("replicas"), lease_namespace=lease_namespace, env=TIMINGS
    )
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


def test_one_replica_holds_the_lease_and_only_it_acts(replicas: Replicas) -> None:
    leader = replicas.leader()
    (standby,) = set(replicas.running) - {leader}
    assert replicas.acted(leader)
    wait_for_analysis_after(replicas, time.time())
    assert not replicas.acted(standby), "the standby started the acting operator"
    assert replicas.holder() == leader


def test_every_replica_answers_the_webhook_from_a_live_index(replicas: Replicas) -> None:
    for name, operator in replicas.running.items():
        assert injects_sidecar(operator, replicas.server.namespace), f"{name} did not inject"


def test_a_killed_leader_is_replaced_and_the_monitor_still_analysed(replicas: Replicas) -> None:
    leader = replicas.leader()
    (standby,) = set(replicas.running) - {leader}
    killed_at = time.time()
    replicas.running[leader].process.send_signal(signal.SIGKILL)
    replicas.running[leader].process.wait(timeout=30)
    # Before the Lease expires the standby must not act, yet serves the webhook.
    assert injects_sidecar(replicas.running[standby], replicas.server.namespace)
    wait_for(f"{standby} to take the Lease over", lambda: replicas.holder() == standby)
    wait_for(f"{standby} to start acting", lambda: replicas.acted(standby))
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
    wait_for("replica-c to start acting", lambda: replicas.acted("replica-c"))
    wait_for_analysis_after(replicas, stopped_at)
    assert injects_sidecar(replicas.running["replica-c"], replicas.server.namespace)


def test_a_leader_that_finds_another_holder_stops_acting_and_exits(replicas: Replicas) -> None:
    """As after a partition: the Lease now names someone else (here written by
    hand, for an hour); the leader must not act on, so it stops and exits 1."""
    leader = replicas.leader()
    lease = CoordinationV1Api(replicas.api).read_namespaced_lease(LEASE, replicas.lease_namespace)
    lease.spec.holder_identity = "intruder_00000000"
    lease.spec.lease_duration_seconds = 3600
    lease.spec.renew_time = datetime.now(UTC)
    CoordinationV1Api(replicas.api).replace_namespaced_lease(LEASE, replicas.lease_namespace, lease)
    process = replicas.running[leader].process
    assert process.wait(timeout=60) == 1
    log = replicas.running[leader].log.read_text()
    assert "Lost the leadership" in log and "held by intruder_00000000" in log
    assert replicas.holder() == "intruder"  # nobody else took it: it is not expired
