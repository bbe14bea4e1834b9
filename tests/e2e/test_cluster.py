"""End to end on a real cluster: the example model gets its sidecar and a status.

Runs only when KUBECONFIG reaches a cluster meant for tests (a `kind-*`
context, or the one named by DRIFTLINE_TEST_CONTEXT) where Driftline is
installed (`make kind-up` builds the images and installs the chart). It
installs nothing itself: it applies `examples/fraud` into a fresh namespace,
monitor first (so the webhook knows it when the pods are created), and
deletes the namespace afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.dynamic import DynamicClient

from driftline_operator.api.names import GROUP, PLURAL, VERSION

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
DEADLINE = 600.0  # image pulls on a fresh node are slow
T = TypeVar("T")


def _cluster_problem() -> str | None:
    path = os.environ.get("KUBECONFIG")
    if not path:
        return "KUBECONFIG is not set (no real cluster to run against)"
    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=path)
        context = active["name"]
        if context != os.environ.get("DRIFTLINE_TEST_CONTEXT") and not context.startswith("kind-"):
            return (
                f"refusing to run against context {context!r}: use a kind cluster or set "
                "DRIFTLINE_TEST_CONTEXT to the context meant for tests"
            )
        api = kubernetes.config.new_client_from_config(config_file=path)
        kubernetes.client.ApiextensionsV1Api(api).read_custom_resource_definition(
            f"{PLURAL}.{GROUP}", _request_timeout=10
        )
        operators = kubernetes.client.AppsV1Api(api).list_deployment_for_all_namespaces(
            label_selector="app.kubernetes.io/name=driftline", _request_timeout=10
        )
        if not operators.items:
            return "no Driftline operator is installed in this cluster (make kind-up installs it)"
        if not CoreV1Api(api).list_node(_request_timeout=10).items:
            return "the cluster has no nodes, so no pod can run (a bare control plane)"
    except kubernetes.client.exceptions.ApiException as error:
        if error.status == 404:
            return "Driftline is not installed in this cluster (make kind-up installs it)"
        return f"the cluster does not answer as expected: {error.reason}"
    except Exception as error:  # any other failure means: skip, and say why
        return f"KUBECONFIG={path} does not reach a cluster: {error}"
    return None


@pytest.fixture(scope="module")
def api() -> ApiClient:
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)
    return kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"])


@pytest.fixture(scope="module")
def namespace(api: ApiClient) -> Iterator[str]:
    name = f"driftline-e2e-{uuid.uuid4().hex[:6]}"
    CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        CoreV1Api(api).delete_namespace(name)


def wait_for(what: str, probe: Callable[[], T | None]) -> T:
    end, last = time.monotonic() + DEADLINE, None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def apply(api: ApiClient, namespace: str, *files: str) -> None:
    dynamic = DynamicClient(api)
    for file in files:
        for document in yaml.safe_load_all((EXAMPLE / file).read_text()):
            resource = dynamic.resources.get(
                api_version=document["apiVersion"], kind=document["kind"]
            )
            resource.create(body=document, namespace=namespace)


def get_monitor(api: ApiClient, namespace: str) -> dict[str, Any]:
    return kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "fraud"
    )


def ready(body: dict[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_the_example_is_injected_and_monitored(api: ApiClient, namespace: str):
    apply(api, namespace, "reference-configmap.yaml", "modelmonitor.yaml")
    wait_for("the ModelMonitor to be Ready", lambda: ready(get_monitor(api, namespace)))
    apply(api, namespace, "service.yaml", "deployment.yaml")

    def injected_pods() -> list[Any] | None:
        pods = CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=fraud").items
        running = [p for p in pods if p.status.phase == "Running"]
        if len(running) < 2:
            return None
        return running

    pods = wait_for("two running model pods", injected_pods)
    for pod in pods:
        names = [c.name for c in pod.spec.containers]
        assert "driftline-sidecar" in names, f"pod {pod.metadata.name} has only {names}"

    def analysed() -> dict[str, Any] | None:
        status = get_monitor(api, namespace).get("status") or {}
        pods_status = status.get("pods") or {}
        if status.get("lastAnalysisTime") and pods_status.get("monitored") == 2:
            return status
        return None

    status = wait_for("an analysis over both pods in status", analysed)
    assert status["pods"]["notInjected"] == 0
    assert status["pods"]["unreachable"] == []
