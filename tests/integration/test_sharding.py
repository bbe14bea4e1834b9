"""Two shards of the operator, run for real against the shared control plane.

Each shard is its own set of replicas with its own Lease, acting only on the
ModelMonitors of its own namespaces (DRIFTLINE_SHARD_NAMESPACES); every
replica of every shard still serves every namespace's webhook. The chart
deploys shards the same way (values `operator.shards`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from _harness import (
    ApiServer,
    ControlPlane,
    Operator,
    create_monitor,
    get_monitor,
    injects_sidecar,
    monitor,
    running_operator,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import ApiClient, CoordinationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from driftline_operator.controller.tls import write_self_signed

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]

MONITOR = "fraud"


@dataclass
class Shard:
    name: str
    lease: str
    namespace: str  # where its monitors are
    operator: Operator

    def analysed_namespaces(self) -> set[str]:
        """The namespaces of the monitors this shard's analysis reported on
        (its own /metrics, labelled by monitor)."""
        text = httpx.get(self.operator.metrics_url, timeout=10).text
        return {
            line.split('namespace="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if line.startswith("driftline_operator_") and 'namespace="' in line
        }


@dataclass
class Setup:
    api: ApiClient
    lease_namespace: str
    shards: dict[str, Shard]


@pytest.fixture(scope="module")
def setup(
    control_plane: ControlPlane, apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    api = control_plane.client()
    lease_namespace = f"{apiserver.namespace}-system"
    other = f"{apiserver.namespace}-b"
    for name in (lease_namespace, other):
        CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    tmp: Path = tmp_path_factory.mktemp("shards")
    write_self_signed(tmp / "tls")
    served = [apiserver.namespace, other]
    spec = {
        "selector": {"matchLabels": {"app": "fraud"}},
        "model": {"name": "fraud", "port": "http", "protocol": "json",
                  "features": [{"name": "amount"}]},
        "analysis": {"interval": "2s"},
    }  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            shards = {}
            for shard, namespace in (("a", apiserver.namespace), ("b", other)):
                lease = f"driftline-shard-{shard}"
                env = {
                    "DRIFTLINE_LEASE_NAME": lease,
                    "DRIFTLINE_POD_NAME": f"shard-{shard}-0",
                    "DRIFTLINE_SHARD_NAMESPACES": namespace,
                }
                operator = stack.enter_context(
                    running_operator(
                        apiserver, tmp, cert_dir=tmp / "tls", operator_namespace=lease_namespace,
                        extra_env=env, log_name=f"shard-{shard}.log", namespaces=served,
                    )
                )  # fmt: skip
                shards[shard] = Shard(shard, lease, namespace, operator)
            for namespace in served:
                create_monitor(api, namespace, monitor(MONITOR, spec))
            yield Setup(api, lease_namespace, shards)
    finally:
        for name in (lease_namespace, other):
            with contextlib.suppress(ApiException):
                CoreV1Api(api).delete_namespace(name)
        api.close()


def test_each_shard_holds_its_own_lease(setup: Setup) -> None:
    for shard in setup.shards.values():

        def holder(shard: Shard = shard) -> str | None:
            lease = CoordinationV1Api(setup.api).read_namespaced_lease(
                shard.lease, setup.lease_namespace
            )
            return lease.spec.holder_identity  # type: ignore[no-any-return]

        assert wait_for(f"shard {shard.name}'s Lease", holder).startswith(f"shard-{shard.name}-0_")


def test_each_shard_acts_only_on_the_monitors_of_its_namespaces(setup: Setup) -> None:
    for shard in setup.shards.values():
        wait_for_ready(
            setup.api, shard.namespace, MONITOR, status="True", reason="SidecarConfigured"
        )

        def analysed(shard: Shard = shard) -> bool:
            body = get_monitor(setup.api, shard.namespace, MONITOR) or {}
            return bool((body.get("status") or {}).get("lastAnalysisTime"))

        wait_for(f"{shard.namespace}/{MONITOR} analysed", analysed)
    for shard in setup.shards.values():
        namespaces = wait_for(f"shard {shard.name}'s analysis metrics", shard.analysed_namespaces)
        assert namespaces == {shard.namespace}, f"shard {shard.name} analysed {namespaces}"


def test_every_shard_answers_the_webhook_for_every_namespace(setup: Setup) -> None:
    for shard in setup.shards.values():
        for other in setup.shards.values():
            assert injects_sidecar(shard.operator, other.namespace), (
                f"shard {shard.name} did not inject a pod of {other.namespace}"
            )
