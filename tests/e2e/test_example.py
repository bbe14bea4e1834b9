"""examples/fraud on real pods: the chart's operator and webhook inject the
sidecar, the pods get Ready through it, and traffic sent through the model's
Service from another pod shows up in `kubectl get mm`."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from _cluster import RELEASE, RELEASE_NAMESPACE, Cluster, wait_for
from _fraud import example, start_traffic, traffic_result

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

NS = "e2e-fraud"
NOT_ROOT = "65532"


@pytest.fixture(scope="module")
def fraud(driftline: Cluster) -> Iterator[Cluster]:
    """The example applied as its README says: monitor first, then the model."""
    cluster = driftline
    cluster.kubectl("create", "namespace", NS)
    # Analysed every 5 s instead of 30 s, so the test waits seconds, not minutes.
    monitor = example("modelmonitor.yaml")
    monitor["spec"]["analysis"]["interval"] = "5s"
    cluster.apply(NS, example("reference-configmap.yaml"), monitor)
    cluster.kubectl("-n", NS, "wait", "--for=condition=Ready", "mm/fraud", "--timeout=120s")
    cluster.apply(NS, example("service.yaml"), example("deployment.yaml"))
    cluster.kubectl("-n", NS, "rollout", "status", "deployment/fraud-v1", "--timeout=180s")
    yield cluster
    cluster.kubectl("delete", "namespace", NS, "--timeout=180s")


def uid(cluster: Cluster, namespace: str, target: str, container: str) -> str:
    command = ["python", "-c", "import os; print(os.getuid())"]
    return cluster.kubectl("-n", namespace, "exec", target, "-c", container, "--", *command).strip()


def read_only_root(cluster: Cluster, namespace: str, target: str, container: str) -> bool:
    probe = "import sys\ntry: open('/probe', 'w')\nexcept OSError: sys.exit(0)\nsys.exit(1)"
    cluster.kubectl("-n", namespace, "exec", target, "-c", container, "--", "python", "-c", probe)
    return True  # kubectl raised if the write worked


def test_the_operator_runs_with_the_charts_service_account_as_non_root(driftline: Cluster):
    pods = driftline.kubectl_json("-n", RELEASE_NAMESPACE, "get", "pods")["items"]
    assert len(pods) == 2, "the chart's default: two replicas, one holding the Lease"
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == RELEASE
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    target = f"pod/{pod['metadata']['name']}"
    assert uid(driftline, RELEASE_NAMESPACE, target, container["name"]) == NOT_ROOT
    assert read_only_root(driftline, RELEASE_NAMESPACE, target, container["name"])


def test_the_webhook_injects_the_sidecar_and_the_probes_still_work(fraud: Cluster):
    pods = fraud.kubectl_json("-n", NS, "get", "pods", "-l", "app=fraud")["items"]
    assert len(pods) == 2
    for pod in pods:
        containers = {c["name"]: c for c in pod["spec"]["containers"]}
        assert set(containers) == {"model", "driftline-sidecar"}, pod["metadata"]["name"]
        sidecar, model = containers["driftline-sidecar"], containers["model"]
        # The Service's named port now belongs to the sidecar; the model's
        # probes follow the model's port, renamed.
        assert "http" in {p["name"] for p in sidecar["ports"]}
        (model_port,) = model["ports"]
        assert model_port["containerPort"] == 8081 and model_port["name"] != "http"
        for probe in ("readinessProbe", "livenessProbe"):
            assert model[probe]["httpGet"]["port"] in (model_port["name"], 8081)
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True", pod["status"]
        assert all(s["restartCount"] == 0 for s in pod["status"]["containerStatuses"])
        assert sidecar["securityContext"]["runAsNonRoot"] is True
        assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
        target = f"pod/{pod['metadata']['name']}"
        assert uid(fraud, NS, target, "driftline-sidecar") == NOT_ROOT
        assert read_only_root(fraud, NS, target, "driftline-sidecar")


def get_mm(cluster: Cluster) -> dict[str, str]:
    """`kubectl get mm fraud` as {column: value}, cut at the header's columns."""
    header, row = cluster.kubectl("-n", NS, "get", "mm", "fraud").splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [*starts[1:], None]
    return {header[s:e].strip(): row[s:e].strip() for s, e in zip(starts, ends, strict=True)}


def test_traffic_through_the_service_shows_in_kubectl_get_mm(fraud: Cluster):
    # Features drawn 2.5 standard deviations off the reference: drift.
    start_traffic(fraud, NS, "client", "http://fraud/predict", rate=50, seconds=40, shift=2.5)

    def measured() -> dict[str, str] | None:
        row = get_mm(fraud)
        busy = float(row["REQ/S"] or 0) > 0 and row["P95 MS"] and int(row["DRIFTED"] or 0) > 0
        return row if busy else None

    row = wait_for("kubectl get mm to show traffic, p95 and drift", measured)
    assert float(row["P95 MS"]) > 0
    assert row["ERROR %"] == "0"
    assert int(row["DRIFTED"]) == 4, row  # every feature moved
    assert row["PHASE"] == "Degraded"  # the drifted-features SLO is broken
    codes = traffic_result(fraud, NS, "client")
    assert set(codes) == {"200"}, codes
