"""Last (pytest runs the modules in name order): the operator never hit a
403 with the chart's RBAC, and `helm uninstall` leaves nothing of Driftline
behind but what stays by design."""

from __future__ import annotations

import json
import re
import time

import pytest
from _cluster import RELEASE, RELEASE_NAMESPACE, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# What stays by design: Helm never deletes the CRDs of a chart's crds/ folder
# (deleting them would delete every ModelMonitor), nor the namespace that
# `--create-namespace` made.
KEPT = {"customresourcedefinition/modelmonitors.driftline.io", f"namespace/{RELEASE_NAMESPACE}"}
# A 403 anywhere in a line but the milliseconds of kopf's timestamp ("13:53:45,403").
REFUSED = re.compile(r"Forbidden|(?<!,)\b403\b")
KINDS = (
    "customresourcedefinitions", "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations", "clusterroles", "clusterrolebindings", "namespaces",
    "deployments", "replicasets", "pods", "services", "serviceaccounts", "secrets",
    "configmaps", "roles", "rolebindings", "leases",
)  # fmt: skip


def test_the_operator_was_never_refused_by_the_api_server(driftline: Cluster):
    pods = driftline.kubectl_json("-n", RELEASE_NAMESPACE, "get", "pods")["items"]
    assert pods, "no operator pod"
    for pod in pods:  # every replica: the leader and the standbys
        name = pod["metadata"]["name"]
        log = driftline.kubectl("-n", RELEASE_NAMESPACE, "logs", f"pod/{name}")
        (driftline.artifacts / f"{name}.log").write_text(log)
        refused = [line for line in log.splitlines() if REFUSED.search(line)]
        assert not refused, "\n".join(refused[:20])
        # A restart would have taken the earlier log with it.
        assert [s["restartCount"] for s in pod["status"]["containerStatuses"]] == [0]


def driftline_objects(cluster: Cluster) -> set[str]:
    """Every object named or labelled driftline, as kind/[namespace/]name."""
    found = set()
    items = cluster.kubectl_json("get", ",".join(KINDS), "--all-namespaces")["items"]
    for item in items:
        meta = item["metadata"]
        if meta.get("namespace") == "kube-node-lease":
            continue  # the nodes' heartbeats, named after them (node mode's is driftline-node)
        labels = json.dumps(meta.get("labels") or {})
        if "driftline" in meta["name"] or "driftline" in labels:
            where = f"{meta['namespace']}/" if meta.get("namespace") else ""
            found.add(f"{item['kind'].lower()}/{where}{meta['name']}")
    return found


def test_helm_uninstall_leaves_nothing_behind_but_the_crd(driftline: Cluster):
    monitors = driftline.kubectl_json("get", "modelmonitors", "--all-namespaces")["items"]
    assert not monitors, "the other tests delete their ModelMonitors before the operator goes"
    before = driftline_objects(driftline)
    assert f"deployment/{RELEASE_NAMESPACE}/{RELEASE}" in before

    driftline.run("helm", "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait")

    deadline = time.monotonic() + 120
    while (remaining := driftline_objects(driftline) - KEPT) and time.monotonic() < deadline:
        time.sleep(2)  # pods go after their grace period, which helm does not wait for
    (driftline.artifacts / "after-uninstall.txt").write_text("\n".join(sorted(remaining)))
    assert not remaining, sorted(remaining)
    assert driftline_objects(driftline) >= KEPT
