"""The operator owns a PrometheusRule per ModelMonitor on a real API server:
without the Prometheus Operator's CRD the monitor says so in its AlertRules
condition; with it, the rules are created (owned by the monitor), follow a
spec change, and go with the monitor (the real garbage collector).

The CRD applied here is a stand-in with the Prometheus Operator's group,
version, kind, plural and scope, and a structural schema of the fields the
rules use (the upstream file cannot be fetched here); the API server's
behaviour (404 for an unknown kind, create, merge patch, ownership, garbage
collection) is the real one either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from _harness import (
    ApiServer,
    ControlPlane,
    Operator,
    create_monitor,
    get_monitor,
    monitor,
    running_operator,
    wait_for,
)
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from driftline_operator.analysis.rules import rule_groups
from driftline_operator.api.names import GROUP, PLURAL, VERSION
from driftline_operator.api.spec import spec_from
from driftline_operator.controller.tls import write_self_signed

pytestmark = pytest.mark.timeout(300)

CRD_NAME = "prometheusrules.monitoring.coreos.com"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_RULE = {
    "type": "object",
    "required": ["expr"],
    "properties": {
        "record": {"type": "string"},
        "alert": {"type": "string"},
        "expr": {"x-kubernetes-int-or-string": True},
        "for": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
PROMETHEUS_RULE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {
            "kind": "PrometheusRule",
            "listKind": "PrometheusRuleList",
            "plural": "prometheusrules",
            "singular": "prometheusrule",
            "categories": ["prometheus-operator"],
            "shortNames": ["promrule"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "groups": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["name"],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "interval": {"type": "string"},
                                                "rules": {"type": "array", "items": _RULE},
                                            },
                                        },
                                    }
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


def _spec(objective: str) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": {"app": "fraud"}},
        "model": {"name": "fraud", "protocol": "json", "features": [{"name": "amount"}]},
        "slos": [
            {"name": "availability", "metric": "successRate", "objective": objective},
            {"name": "p95", "metric": "latency", "quantile": 0.95, "max": "200ms"},
        ],
        "analysis": {"interval": "1h"},  # keep the analysis loop out of the way
    }


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    yield control_plane
    control_plane.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found")


@pytest.fixture(scope="module")
def operator(apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator as conftest's, with labels for the PrometheusRules (a ruleSelector's)."""
    tmp = tmp_path_factory.mktemp("operator")
    write_self_signed(tmp / "tls")
    with running_operator(
        apiserver,
        tmp,
        cert_dir=tmp / "tls",
        operator_namespace="driftline-system",
        extra_env={"DRIFTLINE_PROMETHEUS_RULE_LABELS": "release=kps"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(plane: ControlPlane, apiserver: ApiServer, operator: Operator) -> ApiClient:
    return apiserver.client()


def _alert_rules_condition(body: dict[str, Any] | None) -> dict[str, Any] | None:
    conditions = ((body or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "AlertRules"), None)


def _wait_condition(api: ApiClient, ns: str, name: str, status: str, reason: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = get_monitor(api, ns, name)
        found = _alert_rules_condition(body)
        if found and (found["status"], found["reason"]) == (status, reason):
            return body
        return None

    return wait_for(f"{ns}/{name} AlertRules={status} ({reason})", probe)


def _read_rule(api: ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    try:
        response = CustomObjectsApi(api).get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", ns, "prometheusrules", name, _preload_content=False
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(json.loads(response.data))


@pytest.fixture
def ns(apiserver: ApiServer) -> str:
    return apiserver.namespace


def test_without_the_crd_the_condition_says_how_to_get_the_rules(api: ApiClient, ns: str):
    create_monitor(api, ns, monitor("early", _spec("99.9%")))
    body = _wait_condition(api, ns, "early", "False", "PrometheusRuleCRDMissing")
    message = _alert_rules_condition(body)["message"]  # type: ignore[index]
    assert "monitoring.coreos.com/v1" in message
    assert "driftline rules" in message
    # The rest of the monitor works as before.
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_with_the_crd_the_operator_owns_the_rules(api: ApiClient, ns: str, plane: ControlPlane):
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(PROMETHEUS_RULE_CRD))
    plane.wait_established(CRD_NAME)

    body = monitor("fraud", _spec("99.9%"))
    create_monitor(api, ns, body)
    created = _wait_condition(api, ns, "fraud", "True", "PrometheusRuleApplied")
    rule = _read_rule(api, ns, "driftline-fraud-alerts")
    assert rule is not None
    [owner] = rule["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ModelMonitor",
        "fraud",
        created["metadata"]["uid"],
    )
    assert rule["metadata"]["labels"]["driftline.io/monitor"] == "fraud"
    assert rule["metadata"]["labels"]["release"] == "kps"  # DRIFTLINE_PROMETHEUS_RULE_LABELS
    expected = rule_groups(spec_from(body), namespace=ns, monitor="fraud")
    assert rule["spec"]["groups"] == expected
    recordings = [r["expr"] for r in rule["spec"]["groups"][0]["rules"]]
    assert "vector(0.001)" in recordings

    # A spec change rewrites the rules: a 99% objective is a 1% budget.
    CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "fraud", {"spec": _spec("99%")}
    )

    def budget_follows() -> dict[str, Any] | None:
        found = _read_rule(api, ns, "driftline-fraud-alerts")
        exprs = [r.get("expr") for g in (found or {})["spec"]["groups"] for r in g["rules"]]
        return found if "vector(0.01)" in exprs and "vector(0.001)" not in exprs else None

    wait_for("the PrometheusRule to follow the new objective", budget_follows)

    # Deleting the monitor lets the garbage collector take its rules.
    CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "fraud")
    wait_for(
        "the PrometheusRule to be collected",
        lambda: _read_rule(api, ns, "driftline-fraud-alerts") is None or None,
    )
