"""The chart's explainer Deployment (explainer.enabled), rendered by the real
helm: the same explainer code in the explainer image, restricted as the
operator is, reachable through its Service by the operator alone, and the
operator told where it is."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from _harness import ControlPlane
from _helm import CHART, HELM, needs_helm

from driftline_operator.controller.settings import OperatorConfig
from driftline_operator.explain.service import _parser

pytestmark = [pytest.mark.helm, needs_helm]

Manifest = dict[str, Any]
NAMESPACE = "driftline-system"
ENABLED = {"explainer": {"enabled": True}}


def helm(*args: str, values: Manifest, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    command = [HELM, *args, str(CHART), "--values", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


def manifests(values: Manifest, tmp_path: Path) -> list[Manifest]:
    result = helm("template", "dl", "--namespace", NAMESPACE, values=values, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def named(docs: list[Manifest], kind: str, name: str) -> Manifest:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def operator_env(docs: list[Manifest]) -> dict[str, Any]:
    operator = named(docs, "Deployment", "dl-driftline")
    [container] = operator["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_off_by_default_the_operator_explains_in_its_own_workers(tmp_path: Path) -> None:
    docs = manifests({}, tmp_path)
    assert not [d for d in docs if "explainer" in d["metadata"]["name"]]
    assert "DRIFTLINE_EXPLAINER_URL" not in operator_env(docs)


def test_the_explainer_runs_restricted_from_its_own_image(tmp_path: Path) -> None:
    docs = manifests(ENABLED, tmp_path)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    pod = named(docs, "Deployment", "dl-driftline-explainer")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "ghcr.io/driftline/explainer:0.1.0"
    assert pod["automountServiceAccountToken"] is False  # it never asks the API
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    # numba's and matplotlib's caches (the image's NUMBA_CACHE_DIR, MPLCONFIGDIR) are writable.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["tmp"] == "/tmp"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    # The args are driftline-explainer's own, and the probes ask the port it serves.
    args = _parser().parse_args(container["args"])
    assert (args.port, args.processes) == (8090, 1)
    assert container["ports"] == [{"name": "explain", "containerPort": 8090, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "explain"}


def test_the_operator_sends_its_jobs_to_the_explainer_service(tmp_path: Path) -> None:
    docs = manifests(ENABLED, tmp_path)
    service = named(docs, "Service", "dl-driftline-explainer")
    explainer = named(docs, "Deployment", "dl-driftline-explainer")
    pod_labels = explainer["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # The operator's own Service does not select the explainer, nor the explainer's the operator.
    operator = named(docs, "Deployment", "dl-driftline")
    operator_labels = operator["spec"]["template"]["metadata"]["labels"]
    assert (
        not named(docs, "Service", "dl-driftline")["spec"]["selector"].items() <= pod_labels.items()
    )
    assert not service["spec"]["selector"].items() <= operator_labels.items()
    [port] = service["spec"]["ports"]
    url = operator_env(docs)["DRIFTLINE_EXPLAINER_URL"]
    assert url == f"http://dl-driftline-explainer.{NAMESPACE}.svc:{port['port']}"
    assert port["targetPort"] == "explain"
    # The operator accepts it, and its budget still applies (the same variable as without).
    config = OperatorConfig.from_env({"DRIFTLINE_EXPLAINER_URL": url})
    assert config.explainer_url == url
    assert operator_env(docs)["DRIFTLINE_EXPLANATIONS_PER_MINUTE"] == "600"


def test_only_the_operator_may_send_jobs(tmp_path: Path) -> None:
    docs = manifests(ENABLED, tmp_path)
    policy = named(docs, "NetworkPolicy", "dl-driftline-explainer")
    explainer = named(docs, "Deployment", "dl-driftline-explainer")
    operator = named(docs, "Deployment", "dl-driftline")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        explainer["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= (
        operator["spec"]["template"]["metadata"]["labels"].items()
    )
    assert rule["ports"] == [{"port": "explain", "protocol": "TCP"}]
    off = {"explainer": {"enabled": True, "networkPolicy": {"enabled": False}}}
    assert not [d for d in manifests(off, tmp_path) if d["kind"] == "NetworkPolicy"]


def test_replicas_processes_and_placement_are_values(tmp_path: Path) -> None:
    values = {
        "explainer": {
            "enabled": True,
            "replicas": 3,
            "processes": 2,
            "port": 9000,
            "image": {"repository": "reg.local/explainer", "tag": "dev", "pullPolicy": "Never"},
            "nodeSelector": {"pool": "cpu"},
            "resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
        }
    }
    docs = manifests(values, tmp_path)
    explainer = named(docs, "Deployment", "dl-driftline-explainer")
    pod = explainer["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert explainer["spec"]["replicas"] == 3
    assert _parser().parse_args(container["args"]).processes == 2
    assert (container["image"], container["imagePullPolicy"]) == (
        "reg.local/explainer:dev",
        "Never",
    )
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert operator_env(docs)["DRIFTLINE_EXPLAINER_URL"].endswith(".svc:9000")
    # More than one replica: a drain keeps one, and the budget selects only explainers.
    budget = named(docs, "PodDisruptionBudget", "dl-driftline-explainer")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == explainer["spec"]["selector"]
    operator = named(docs, "PodDisruptionBudget", "dl-driftline")
    assert operator["spec"]["selector"] != budget["spec"]["selector"]
    lint = helm("lint", "--strict", values=values, tmp_path=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.k8s
def test_a_real_api_server_accepts_the_explainer(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Kubernetes 1.20, as on the e2e's node: a server-side dry run in a namespace of its own."""
    namespace = "it-chart-explainer-dry-run"
    result = helm("template", "dl", "--namespace", namespace, values=ENABLED, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    ours = [
        d for d in yaml.safe_load_all(result.stdout) if d and "explainer" in d["metadata"]["name"]
    ]
    assert sorted(d["kind"] for d in ours) == ["Deployment", "NetworkPolicy", "Service"]
    control_plane.kubectl("create", "namespace", namespace)
    try:
        applied = control_plane.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(ours)
        )
    finally:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")
    assert applied.count("(server dry run)") == 3, applied


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"explainer": {"enabled": True, "processes": 0}}, "/explainer/processes"),
        ({"explainer": {"port": 70000}}, "/explainer/port"),
        ({"explainer": {"enabld": True}}, "enabld"),
    ],
)
def test_bad_explainer_values_are_refused_naming_them(
    values: Manifest, where: str, tmp_path: Path
) -> None:
    result = helm("template", "dl", values=values, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr, result.stderr
