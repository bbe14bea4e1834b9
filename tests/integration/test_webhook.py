"""The sidecar webhook called as an apiserver calls it: HTTPS, AdmissionReview v1.

The operator runs for real (driftline-operator against the session's API
server, which kopf needs for discovery and for its index of ModelMonitors). Each review is
POSTed over TLS, verified against the very certificate the server loaded;
the base64 JSON patch in the answer is applied with `jsonpatch`, and the
resulting pod is validated against the Kubernetes schema. Whatever happens,
the answer is `allowed: true`: the webhook never stops a pod from starting.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from _harness import (
    ApiServer,
    ControlPlane,
    Operator,
    create_monitor,
    monitor,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import AdmissionregistrationV1Api, CoreV1Api

from driftline_operator.controller.handlers import WEBHOOK_PATH

pytestmark = pytest.mark.timeout(300)

NS = "it-webhook"  # the module's namespace (conftest.module_namespace)
SIDECAR_IMAGE = "ghcr.io/driftline/sidecar:test"  # what the harness gives the operator
KUBERNETES_VERSION = "1.30"


def spec(app: str, port: str | int, **changes: Any) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": {"app": app}},
        "model": {"name": app, "port": port, "protocol": "json"},
        "analysis": {"interval": "1h"},
        **changes,
    }


@pytest.fixture(scope="module")
def operator(apiserver: ApiServer, operator: Operator) -> Iterator[Operator]:
    """The conftest's operator, with the module's ModelMonitors ready and indexed."""
    api = apiserver.client()
    for name, body in {
        "fraud": spec("fraud", "http"),
        "numbered": spec("numbered", 8000),
        "misfit": spec("misfit", "grpc"),  # no pod of it has such a port
        # Invalid, yet past a real apiserver's schema: latency without a quantile.
        "broken": spec(
            "broken", "http", slos=[{"name": "p95", "metric": "latency", "max": "200ms"}]
        ),
    }.items():
        create_monitor(api, NS, monitor(name, body))
    for name in ("fraud", "numbered", "misfit"):
        wait_for_ready(api, NS, name, status="True", reason="SidecarConfigured")
    wait_for_ready(api, NS, "broken", status="False", reason="InvalidSpec")
    # The webhook reads kopf's index, updated from the same watch: wait until it
    # has seen every monitor ready before asking it anything.
    for app in ("fraud", "numbered", "misfit"):
        wait_for(
            f"the webhook to know ModelMonitor {app}",
            lambda app=app: _knows(operator, app),
        )
    yield operator


def _knows(operator: Operator, app: str) -> bool:
    answer = call(operator, review(pod(app, named=app != "numbered")))
    return "patch" in answer or bool(answer.get("warnings"))


def pod(
    app: str,
    *,
    named: bool = True,
    name: str | None = "model-0",
    annotations: dict[str, str] | None = None,
    namespace: str | None = NS,
) -> dict[str, Any]:
    port: dict[str, Any] = {"containerPort": 8000, "protocol": "TCP"}
    if named:
        port["name"] = "http"
    probe_port: str | int = "http" if named else 8000
    metadata: dict[str, Any] = {"labels": {"app": app}, "annotations": annotations or {}}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{app}-"
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [
                {
                    "name": "model",
                    "image": "registry.local/models/fraud:1",
                    "ports": [port],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": probe_port}},
                }
            ]
        },
    }


def review(obj: dict[str, Any], *, namespace: str = NS) -> dict[str, Any]:
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": obj["metadata"].get("name", ""),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def call(operator: Operator, body: dict[str, Any]) -> dict[str, Any]:
    """POST the review over HTTPS, trusting only the operator's own certificate."""
    context = ssl.create_default_context(cafile=str(operator.cafile))
    request = urllib.request.Request(
        operator.webhook_url + WEBHOOK_PATH,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == body["request"]["uid"]
    assert answer["response"]["allowed"] is True  # never block a pod
    return answer["response"]


def patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    result = jsonpatch.apply_patch(copy.deepcopy(obj), ops)
    kubernetes_validate.validate(result, KUBERNETES_VERSION, strict=True)
    return result


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in obj["spec"]["containers"] if c["name"] == name)


def test_a_named_port_is_taken_over_by_the_sidecar(operator: Operator):
    original = pod("fraud")
    result = patched(original, call(operator, review(original)))

    sidecar = container(result, "driftline-sidecar")
    model = container(result, "model")
    assert sidecar["image"] == SIDECAR_IMAGE
    assert [p["name"] for p in sidecar["ports"] if p["name"] == "http"] == ["http"]
    [model_port] = model["ports"]
    assert model_port["containerPort"] == 8000 and model_port["name"] != "http"
    # The model's own probe still checks the model, under the port's new name.
    assert model["readinessProbe"]["httpGet"]["port"] == model_port["name"]
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "cpu" not in sidecar["resources"].get("limits", {})  # no CPU throttling
    config_maps = {
        source["configMap"]["name"]
        for volume in result["spec"]["volumes"]
        for source in (volume.get("projected") or {}).get("sources", [])
        if "configMap" in source
    }
    assert config_maps == {"driftline-fraud-sidecar"}  # the ConfigMap the operator made
    assert result["metadata"]["annotations"]["driftline.io/injected"] == "true"


def test_a_numbered_port_gets_the_proxy_port_name(operator: Operator):
    original = pod("numbered", named=False)
    result = patched(original, call(operator, review(original)))

    sidecar = container(result, "driftline-sidecar")
    assert "driftline-proxy" in {p["name"] for p in sidecar["ports"]}
    assert container(result, "model")["ports"] == original["spec"]["containers"][0]["ports"]


def test_an_injected_pod_is_left_alone(operator: Operator):
    original = pod("fraud")
    once = patched(original, call(operator, review(original)))
    again = call(operator, review(once))
    assert "patch" not in again


def test_a_pod_without_namespace_takes_the_requests(operator: Operator):
    # Pods made by a ReplicaSet may reach the webhook without metadata.namespace.
    original = pod("fraud", name=None, namespace=None)
    result = patched(original, call(operator, review(original)))
    assert container(result, "driftline-sidecar")


@pytest.mark.parametrize(
    ("case", "obj", "namespace"),
    [
        ("opted out", pod("fraud", annotations={"driftline.io/inject": "false"}), NS),
        ("not selected", pod("unmonitored"), NS),
        ("kube-system", pod("fraud", namespace="kube-system"), "kube-system"),
        ("operator namespace", pod("fraud", namespace="driftline-system"), "driftline-system"),
        ("invalid monitor", pod("broken"), NS),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_pods_the_webhook_must_not_touch(
    operator: Operator, case: str, obj: dict[str, Any], namespace: str
):
    answer = call(operator, review(obj, namespace=namespace))
    assert "patch" not in answer, case
    assert not answer.get("warnings"), case


def test_an_injection_error_admits_the_pod_with_a_warning(operator: Operator):
    answer = call(operator, review(pod("misfit")))
    assert "patch" not in answer
    [warning] = answer["warnings"]
    assert "no container port 'grpc' (spec.model.port)" in warning


# -- through a real apiserver -----------------------------------------------------------


@pytest.mark.k8s
def test_the_apiserver_injects_through_the_webhook(
    control_plane: ControlPlane, apiserver: ApiServer, operator: Operator
):
    server, running = apiserver, operator
    assert server.namespace == NS
    api = server.client()
    core = CoreV1Api(api)
    # Only this test's namespace goes through the webhook (no metadata.name label before 1.21).
    core.patch_namespace(server.namespace, {"metadata": {"labels": {"driftline.io/test": "yes"}}})
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"driftline-{server.namespace}"},
        "webhooks": [
            {
                # What the chart installs: Ignore, a short timeout, never the operator's namespace.
                "name": "inject-sidecar.driftline.io",
                "clientConfig": {
                    "url": running.webhook_url + WEBHOOK_PATH,
                    "caBundle": base64.b64encode(running.cafile.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"driftline.io/test": "yes"}},
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "admissionReviewVersions": ["v1"],
            }
        ],
    }
    registration = AdmissionregistrationV1Api(api)
    registration.create_mutating_webhook_configuration(configuration)
    try:
        created = core.create_namespaced_pod(
            server.namespace, pod("fraud", name=None, namespace=None), _preload_content=False
        )
        result = json.loads(created.data)
        assert "driftline-sidecar" in [c["name"] for c in result["spec"]["containers"]]
        assert result["metadata"]["annotations"]["driftline.io/injected"] == "true"

        untouched = json.loads(
            core.create_namespaced_pod(
                server.namespace,
                pod("unmonitored", name="plain", namespace=None),
                _preload_content=False,
            ).data
        )
        assert [c["name"] for c in untouched["spec"]["containers"]] == ["model"]
    finally:
        registration.delete_mutating_webhook_configuration(configuration["metadata"]["name"])
