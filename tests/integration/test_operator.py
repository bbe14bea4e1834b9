"""The operator run for real (driftline-operator, kopf's own runner) against an API.

The API is the session's control plane (conftest.py), or the kmock emulator
where the control plane cannot run. The emulator has no garbage collector,
so deletion is asserted twice over:
the ownerReference that lets a real cluster collect the ConfigMap, and the
operator's own cleanup handler deleting it (which works on both).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from _harness import (
    ApiServer,
    Operator,
    create_monitor,
    events_for,
    get_monitor,
    monitor,
    read_config_map,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from driftline_operator.api.names import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def api(apiserver: ApiServer, operator: Operator) -> ApiClient:
    return apiserver.client()


@pytest.fixture
def ns(apiserver: ApiServer) -> str:
    return apiserver.namespace


def valid_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "fraud"}},
        "model": {
            "name": "fraud",
            "port": "http",
            "protocol": "json",
            "features": [{"name": "amount"}, {"name": "country", "type": "categorical"}],
        },
        "drift": {"threshold": 0.2},
        "analysis": {"interval": "1h"},  # keep the loop out of these tests' way
    }
    spec.update(changes)
    return spec


def warnings_with(api: ApiClient, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events_for(api, ns, name)
        if e.get("type") == "Warning" and e.get("reason") == reason
    ]


def test_a_valid_monitor_gets_its_sidecar_config(api: ApiClient, ns: str):
    create_monitor(api, ns, monitor("fraud", valid_spec()))
    body = wait_for_ready(api, ns, "fraud", status="True", reason="SidecarConfigured")

    assert body["status"]["phase"] == "Pending"  # no analysis has run yet
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    config_map = read_config_map(api, ns, "driftline-fraud-sidecar")
    assert config_map is not None
    [owner] = config_map["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ModelMonitor",
        "fraud",
        body["metadata"]["uid"],
    )
    assert owner["controller"] is True
    rendered = yaml.safe_load(config_map["data"]["sidecar.yaml"])
    assert rendered["model"]["name"] == "fraud"
    assert rendered["model"]["protocol"] == "json"
    assert [f["name"] for f in rendered["model"]["features"]] == ["amount", "country"]


@pytest.mark.parametrize(
    ("name", "changes", "field", "says"),
    [
        (
            "bad-protocol",
            {"model": {"name": "fraud", "protocol": "grpc"}},
            "spec.model.protocol",
            "Input should be 'auto', 'kserve-v1', 'open-inference-v2' or 'json'",
        ),
        (
            "bad-threshold",
            {"drift": {"threshold": 1.5}},
            "spec.drift.threshold",
            "Input should be less than or equal to 1",
        ),
        (
            "bad-slo",
            {"slos": [{"name": "p95", "metric": "latency", "max": "200ms"}]},
            "spec.slos[0]",
            "slo 'p95': latency needs a quantile such as 0.95",
        ),
    ],
    ids=["unknown-protocol", "threshold-out-of-range", "slo-without-quantile"],
)
def test_an_invalid_monitor_is_reported_and_gets_nothing(
    api: ApiClient, ns: str, name: str, changes: dict[str, Any], field: str, says: str
):
    try:
        create_monitor(api, ns, monitor(name, valid_spec(**changes)))
    except ApiException as error:
        # A real apiserver checks the CRD's schema first (enums, ranges) and refuses
        # the object itself, naming the field: then nothing exists to reconcile.
        assert error.status == 422 and field in json.loads(error.body)["message"]
        return
    body = wait_for_ready(api, ns, name, status="False", reason="InvalidSpec")

    message = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert f"{field}: {says}" in message
    assert body["status"]["phase"] == "Invalid"
    warning = wait_for(
        "an InvalidSpec Warning Event", lambda: warnings_with(api, ns, name, "InvalidSpec")
    )
    assert field in warning[0]["message"] and f"{ns}/{name}" in warning[0]["message"]
    assert read_config_map(api, ns, f"driftline-{name}-sidecar") is None


def test_a_missing_reference_configmap_is_named(api: ApiClient, ns: str):
    spec = valid_spec(reference={"configMapRef": {"name": "fraud-ref"}})
    create_monitor(api, ns, monitor("no-ref", spec))
    body = wait_for_ready(api, ns, "no-ref", status="False", reason="ReferenceNotFound")

    message = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert f"ConfigMap {ns}/fraud-ref not found" in message
    assert message.startswith("spec.reference.configMapRef")
    wait_for(
        "a ReferenceNotFound Warning Event",
        lambda: warnings_with(api, ns, "no-ref", "ReferenceNotFound"),
    )
    assert read_config_map(api, ns, "driftline-no-ref-sidecar") is None


def test_a_reference_without_the_key_names_the_keys_it_has(api: ApiClient, ns: str):
    CoreV1Api(api).create_namespaced_config_map(
        ns, {"metadata": {"name": "other-ref"}, "data": {"profile.yaml": "{}"}}
    )
    spec = valid_spec(reference={"configMapRef": {"name": "other-ref"}})
    create_monitor(api, ns, monitor("wrong-key", spec))
    body = wait_for_ready(api, ns, "wrong-key", status="False", reason="ReferenceNotFound")

    message = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert "has no key 'profile.json' (keys: profile.yaml)" in message


def pod(name: str, labels: dict[str, str], *, injected: bool = False) -> dict[str, Any]:
    containers = [
        {
            "name": "model",
            "image": "registry.k8s.io/pause:3.9",
            "ports": [{"name": "http", "containerPort": 8000}],
        }
    ]
    annotations = {"driftline.io/injected": "true"} if injected else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": containers},
    }


def test_pods_created_before_the_monitor_are_counted_not_restarted(api: ApiClient, ns: str):
    core = CoreV1Api(api)
    for body in (
        pod("early-1", {"app": "early"}),
        pod("early-2", {"app": "early"}),
        pod("early-3", {"app": "early"}, injected=True),
        pod("other", {"app": "unrelated"}),
    ):
        core.create_namespaced_pod(ns, body)
    spec = valid_spec(selector={"matchLabels": {"app": "early"}})
    create_monitor(api, ns, monitor("early", spec))
    body = wait_for_ready(api, ns, "early", status="True", reason="SidecarConfigured")

    assert body["status"]["pods"] == {
        "selected": 3,
        "monitored": 1,
        "notInjected": 2,
        "unreachable": [],
    }
    message = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert "2 were created before the ModelMonitor" in message
    wait_for("a PodsNotInjected Event", lambda: warnings_with(api, ns, "early", "PodsNotInjected"))
    names = {p["metadata"]["name"] for p in core.list_namespaced_pod(ns).to_dict()["items"]}
    assert {"early-1", "early-2", "early-3"} <= names  # nothing was restarted


def test_fixing_a_spec_makes_the_monitor_ready(api: ApiClient, ns: str):
    # Latency without a quantile passes the CRD schema, so even a real apiserver takes it.
    slos = [{"name": "p95", "metric": "latency", "max": "200ms"}]
    create_monitor(api, ns, monitor("fixed", valid_spec(slos=slos)))
    wait_for_ready(api, ns, "fixed", status="False", reason="InvalidSpec")

    CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "fixed", {"spec": {"slos": [{**slos[0], "quantile": 0.95}]}}
    )
    body = wait_for_ready(api, ns, "fixed", status="True", reason="SidecarConfigured")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 2
    assert read_config_map(api, ns, "driftline-fixed-sidecar") is not None


def test_deleting_the_monitor_removes_its_configmap(api: ApiClient, ns: str):
    create_monitor(api, ns, monitor("short-lived", valid_spec()))
    wait_for_ready(api, ns, "short-lived", status="True", reason="SidecarConfigured")
    assert read_config_map(api, ns, "driftline-short-lived-sidecar") is not None

    CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "short-lived")
    wait_for("the ModelMonitor to be gone", lambda: get_monitor(api, ns, "short-lived") is None)
    assert read_config_map(api, ns, "driftline-short-lived-sidecar") is None


def test_the_operator_serves_its_metrics(operator: Operator):
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as response:
        assert response.status == 200
        assert b"# TYPE driftline_operator_analysis_duration_seconds histogram" in response.read()


def test_the_operator_log_has_no_tracebacks(api: ApiClient, operator: Operator):
    assert "Traceback" not in Path(operator.log).read_text()
