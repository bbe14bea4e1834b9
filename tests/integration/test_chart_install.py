"""The chart installed for real with helm on a real Kubernetes control plane
(the session's ../shared/k8s, conftest.py: etcd, kube-apiserver,
kube-controller-manager; no kubelet). The release is uninstalled afterwards,
so its webhook configuration does not outlive this module on the shared
control plane.

What only a real API server shows: every manifest is accepted, the CRD is
established and keeps every field of the example ModelMonitor (nothing pruned),
an upgrade reuses the self-signed certificate (`lookup`), the operator's
ServiceAccount can do what it needs and nothing more (RBAC is enforced), and a
webhook nobody answers does not block pod creation (failurePolicy Ignore).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import ControlPlane
from _helm import CHART, HELM, needs_helm

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "driftline-system"
RELEASE = "dl"
MODELS = "it-chart-models"  # a namespace no other module uses
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-driftline"


pytestmark = [pytest.mark.helm, pytest.mark.k8s, needs_helm]


@pytest.fixture(scope="module")
def kubeconfig(control_plane: ControlPlane) -> str:
    return str(control_plane.kubeconfig)


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if check:
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}{result.stderr}"
    return result


def kubectl(kubeconfig: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("kubectl", "--kubeconfig", kubeconfig, *args, check=check)


def get(kubeconfig: str, *args: str) -> dict[str, Any]:
    return json.loads(kubectl(kubeconfig, "get", "-o", "json", *args).stdout)


def helm_release(kubeconfig: str, verb: str, *values: str) -> None:
    assert HELM is not None
    run(HELM, verb, RELEASE, str(CHART), "--kubeconfig", kubeconfig,
        "--namespace", NAMESPACE, *(["--create-namespace"] if verb == "install" else []),
        *values)  # fmt: skip


def wait_for(what: str, probe: Any, *, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def tls_state(kubeconfig: str) -> tuple[dict[str, str], str]:
    secret = get(kubeconfig, "secret", f"{RELEASE}-driftline-webhook-tls", "-n", NAMESPACE)
    hook = get(kubeconfig, "mutatingwebhookconfiguration", f"{RELEASE}-driftline")
    return secret["data"], hook["webhooks"][0]["clientConfig"]["caBundle"]


@pytest.fixture(scope="module")
def installed(kubeconfig: str) -> Iterator[str]:
    helm_release(kubeconfig, "install")
    try:
        yield from _established(kubeconfig)
    finally:
        assert HELM is not None
        run(HELM, "uninstall", RELEASE, "--kubeconfig", kubeconfig, "--namespace", NAMESPACE,
            "--wait", check=False)  # fmt: skip
        for namespace in (MODELS, NAMESPACE):
            kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false",
                    "--ignore-not-found", check=False)  # fmt: skip


def _established(kubeconfig: str) -> Iterator[str]:

    def established() -> bool:
        crd = get(kubeconfig, "crd", "modelmonitors.driftline.io")
        conditions = crd.get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for("the ModelMonitor CRD to be established", established)
    yield kubeconfig


def test_self_signed_certificate_survives_an_upgrade(installed: str) -> None:
    data, ca_bundle = tls_state(installed)
    assert ca_bundle == data["ca.crt"]
    assert base64.b64decode(data["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    helm_release(installed, "upgrade", "--set", "webhook.timeoutSeconds=4")
    hook = get(installed, "mutatingwebhookconfiguration", f"{RELEASE}-driftline")
    assert hook["webhooks"][0]["timeoutSeconds"] == 4, "the upgrade was not applied"
    assert tls_state(installed) == (data, ca_bundle), "the upgrade generated a new certificate"


# (verb, group, resource, namespace); "" namespace: cluster-wide.
CAN = [
    ("list", "driftline.io", "modelmonitors", ""),
    ("patch", "driftline.io", "modelmonitors", MODELS),
    ("patch", "driftline.io", "modelmonitors/status", MODELS),
    ("watch", "", "pods", ""),
    ("create", "", "configmaps", MODELS),
    ("delete", "", "configmaps", MODELS),
    ("create", "", "events", MODELS),
    ("get", "", "services", MODELS),
    ("patch", "apps", "deployments/scale", MODELS),
    ("list", "apps", "replicasets", MODELS),
    ("patch", "gateway.networking.k8s.io", "httproutes", MODELS),
    ("update", "networking.istio.io", "virtualservices", MODELS),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions", ""),
]
CANNOT = [
    *(
        (verb, "", "secrets", where)
        for verb in ("get", "list", "watch", "create", "patch", "update", "delete")
        for where in (MODELS, NAMESPACE, "kube-system", "")
    ),
    ("create", "", "pods", MODELS),
    ("patch", "", "pods", MODELS),
    ("patch", "", "services", MODELS),
    ("delete", "apps", "deployments", MODELS),
    ("create", "apps", "deployments", MODELS),
    ("delete", "driftline.io", "modelmonitors", MODELS),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("list", "", "namespaces", ""),
    ("update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", ""),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", ""),
]


LEASE = f"{RELEASE}-driftline-leader"
# (verb, lease name, namespace): the operator's own Lease only, never another's.
LEASES_CAN = [("get", LEASE, NAMESPACE), ("update", LEASE, NAMESPACE)]
LEASES_CANNOT = [
    ("update", "kube-controller-manager", "kube-system"),
    ("update", "other", NAMESPACE),
    ("update", LEASE, MODELS),
    ("create", "", NAMESPACE),
    ("delete", LEASE, NAMESPACE),
    ("list", "", NAMESPACE),
]


def allowed(
    kubeconfig: str, verb: str, group: str, resource: str, namespace: str, name: str = ""
) -> bool:
    """Ask the API server's authorizer (a SubjectAccessReview) about the operator's account."""
    resource, _, subresource = resource.partition("/")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": ACCOUNT,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}",
                       "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                   "subresource": subresource, "namespace": namespace,
                                   "name": name},
        },
    }  # fmt: skip
    result = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "create", "-o", "json", "-f", "-"],
        input=json.dumps(review), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return bool(json.loads(result.stdout)["status"].get("allowed"))


def test_operator_account_can_do_what_it_needs_and_no_more(installed: str) -> None:
    assert [c for c in CAN if not allowed(installed, *c)] == []
    assert [c for c in CANNOT if allowed(installed, *c)] == []
    lease = "coordination.k8s.io", "leases"
    assert [c for c in LEASES_CAN if not allowed(installed, c[0], *lease, c[2], c[1])] == []
    assert [c for c in LEASES_CANNOT if allowed(installed, c[0], *lease, c[2], c[1])] == []


def test_example_is_accepted_whole_and_pods_start_without_the_operator(installed: str) -> None:
    kubectl(installed, "create", "namespace", MODELS)
    kubectl(installed, "apply", "-k", str(ROOT / "examples" / "fraud"), "-n", MODELS)
    # Nothing was pruned: the CRD's schema knows every field the example sets.
    import yaml  # only this test reads the example

    sent = yaml.safe_load((ROOT / "examples" / "fraud" / "modelmonitor.yaml").read_text())
    stored = get(installed, "modelmonitors.driftline.io", "fraud", "-n", MODELS)

    def subset(small: Any, big: Any) -> bool:
        if isinstance(small, dict):
            return isinstance(big, dict) and all(
                k in big and subset(v, big[k]) for k, v in small.items()
            )
        if isinstance(small, list):
            return isinstance(big, list) and len(small) == len(big) and all(map(subset, small, big))
        return small == big

    assert subset(sent["spec"], stored["spec"]), json.dumps(stored["spec"], indent=1)
    # The operator does not run here, so the webhook's Service has no endpoints:
    # with failurePolicy Ignore the ReplicaSet's pods are created anyway.
    pods = wait_for(
        "the fraud pods to be created",
        lambda: get(installed, "pods", "-n", MODELS, "-l", "app=fraud")["items"],
        timeout=150.0,
    )
    assert all(p["spec"]["containers"][0]["name"] == "model" for p in pods)
