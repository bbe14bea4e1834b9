"""Canary rollouts on real Deployments, with the operator in-cluster: a
healthy version is promoted and a failing one rolled back, through the
sidecar router (the stable pods' sidecars split the traffic) and the replicas
router (a Service over both Deployments); deleting the ModelMonitor in the
middle of a canary puts all traffic back on stable."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from _cluster import Cluster, wait_for
from _fraud import example, model, monitor, service, start_traffic

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

STABLE, CANARY = "fraud-v1", "fraud-v2"
FAILING = {"DEMO_ERROR_RATE": "0.3"}  # the demo model answers 30 % of requests with 500


def rollout(router: str, **overrides: Any) -> dict[str, Any]:
    return {
        "strategy": "canary",
        "stableRef": {"name": STABLE},
        "canaryRef": {"name": CANARY},
        "canaryService": {"name": CANARY, "port": "http"},
        "router": router,
        "steps": [50],
        "interval": "15s",
        "failureLimit": 2,
        "progressDeadline": "4m",
        **overrides,
    }


class Rollout:
    """One namespace: stable v1 and a canary v2 of the example's model, a
    ModelMonitor with a rollout, and a client pod sending traffic throughout."""

    def __init__(self, cluster: Cluster, namespace: str, router: str, **overrides: Any) -> None:
        self.cluster, self.ns = cluster, namespace
        # The sidecar router splits at the stable pods, so the model's Service
        # selects only them; with the replicas router it selects both tracks.
        stable_only = {"track": "stable"} if router == "sidecar" else {}
        cluster.kubectl("create", "namespace", namespace)
        cluster.apply(
            namespace,
            example("reference-configmap.yaml"),
            monitor("fraud", "fraud", rollout=rollout(router, **overrides)),
        )
        cluster.kubectl(
            "-n", namespace, "wait", "--for=condition=Ready", "mm/fraud", "--timeout=120s"
        )
        cluster.apply(
            namespace,
            service("fraud", {"app": "fraud", **stable_only}),
            service(CANARY, {"app": "fraud", "track": "canary"}),
            model(STABLE, "fraud", version="v1", replicas=1 if router == "sidecar" else 2),
            model(CANARY, "fraud", version="v2", replicas=0, canary=True),
        )
        start_traffic(cluster, namespace, "client", "http://fraud/predict", rate=30, seconds=600)

    def close(self) -> None:
        self.cluster.kubectl("delete", "namespace", self.ns, "--timeout=180s")

    def status(self) -> dict[str, Any]:
        body = self.cluster.kubectl_json("-n", self.ns, "get", "mm", "fraud")
        return dict((body.get("status") or {}).get("rollout") or {})

    def wait_for_phase(self, phase: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status()
            return status if status.get("phase") == phase else None

        return wait_for(f"{self.ns}: rollout phase {phase}", reached, deadline=300)

    def deployment(self, name: str) -> dict[str, Any]:
        return dict(self.cluster.kubectl_json("-n", self.ns, "get", "deployment", name))

    def version(self, name: str) -> str:
        labels = self.deployment(name)["spec"]["template"]["metadata"]["labels"]
        return str(labels["app.kubernetes.io/version"])

    def replicas(self, name: str) -> int:
        return int(self.deployment(name)["spec"]["replicas"])

    def reasons(self) -> list[str]:
        events = self.cluster.kubectl_json(
            "-n", self.ns, "get", "events", "--field-selector", "involvedObject.name=fraud"
        )["items"]
        return [e["reason"] for e in sorted(events, key=lambda e: e["firstTimestamp"] or "")]

    def stable_weights(self) -> list[float]:
        """The canary weight each running stable pod's sidecar routes with now
        (its admin API, straight from this host to the pod's address)."""
        pods = self.cluster.kubectl_json("-n", self.ns, "get", "pods", "-l", "track=stable")[
            "items"
        ]
        weights = []
        for pod in pods:
            if pod["status"].get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
                continue
            url = f"http://{pod['status']['podIP']}:9090/v1/config"
            with urllib.request.urlopen(url, timeout=5) as response:
                weights.append(float(json.load(response)["routing"]["canary_weight"]))
        return weights

    def release(self, version: str, env: dict[str, str] | None = None) -> None:
        """A new canary version: the canary Deployment's template changes."""
        canary = model(CANARY, "fraud", version=version, replicas=0, canary=True, env=env)
        patch = {"spec": {"template": canary["spec"]["template"]}}
        self.cluster.kubectl("-n", self.ns, "patch", "deployment", CANARY, "--type=merge",
                             "-p", json.dumps(patch))  # fmt: skip


@pytest.fixture(params=["sidecar", "replicas"])
def canary(request: pytest.FixtureRequest, driftline: Cluster) -> Iterator[Rollout]:
    world = Rollout(driftline, f"e2e-{request.param}", request.param)
    yield world
    world.close()


def test_a_healthy_canary_is_promoted_and_a_failing_one_rolled_back(canary: Rollout):
    promoted = canary.wait_for_phase("Succeeded")
    assert promoted["weight"] == 0
    assert canary.version(STABLE) == "v2"  # stable now runs the canary's template
    assert canary.replicas(CANARY) == 0
    assert "Promoted" in canary.reasons()

    canary.release("v3", env=FAILING)
    rolled_back = canary.wait_for_phase("Failed")
    assert rolled_back["weight"] == 0
    assert "RolledBack" in canary.reasons(), canary.reasons()
    assert "errorRate" in rolled_back["decision"], rolled_back["decision"]
    assert canary.version(STABLE) == "v2"  # the failing version never reached stable
    wait_for("the canary scaled to zero", lambda: canary.replicas(CANARY) == 0)
    if canary.ns.endswith("sidecar"):
        assert set(canary.stable_weights()) == {0.0}


def test_deleting_the_monitor_mid_canary_puts_all_traffic_back_on_stable(driftline: Cluster):
    world = Rollout(driftline, "e2e-delete", "sidecar", interval="1h")  # the step is held
    try:
        wait_for("status weight 50", lambda: world.status().get("weight") == 50)
        wait_for("the stable sidecars at 50 %", lambda: set(world.stable_weights()) == {50.0})
        assert world.replicas(CANARY) == 1

        driftline.kubectl("-n", world.ns, "delete", "mm", "fraud", "--timeout=120s")

        assert set(world.stable_weights()) == {0.0}
        assert world.replicas(CANARY) == 0
    finally:
        world.close()
