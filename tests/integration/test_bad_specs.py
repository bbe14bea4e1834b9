"""Specs that used to slip through, against the real operator and API server:
each ends as Ready=False with a reason and a Warning Event, never a traceback.

A reference profile that is not JSON (or not a profile) is InvalidReference.
Repeated feature names are refused by the CRD itself (a list-map keyed by
name); a ModelMonitor stored before the CRD said so (an upgrade) is
InvalidSpec. Zero durations are refused by the CRD's patterns: see
tests/unit/api/test_crd.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _harness import (
    ROOT,
    ApiServer,
    Operator,
    create_monitor,
    events_for,
    monitor,
    read_config_map,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import ApiClient, ApiextensionsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from driftline_operator.api.names import GROUP, PLURAL

pytestmark = pytest.mark.timeout(300)

EXAMPLE_REFERENCE = ROOT / "examples" / "fraud" / "reference-configmap.yaml"
FEATURES_NODE = (
    "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/model/properties/features"
)


@pytest.fixture(scope="module")
def api(apiserver: ApiServer, operator: Operator) -> ApiClient:
    return apiserver.client()


@pytest.fixture
def ns(apiserver: ApiServer) -> str:
    return apiserver.namespace


def spec(**changes: Any) -> dict[str, Any]:
    return {
        "selector": {"matchLabels": {"app": "fraud"}},
        "model": {"name": "fraud", "protocol": "json", "features": [{"name": "f0"}]},
        "analysis": {"interval": "1h"},  # keep the loop out of these tests' way
        **changes,
    }


def warnings_with(api: ApiClient, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events_for(api, ns, name)
        if e.get("type") == "Warning" and e.get("reason") == reason
    ]


def ready_message(body: dict[str, Any]) -> str:
    return str(next(c for c in body["status"]["conditions"] if c["type"] == "Ready")["message"])


# -- the reference profile ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("yaml-ref", "features: [f0, f1]", "is not JSON: expected ident at line 1 column 2"),
        ("empty-ref", "{}", "is not a reference profile: profile.created_at: Field required"),
    ],
    ids=["not-json", "not-a-profile"],
)
def test_an_unreadable_reference_profile_is_invalid_until_fixed(
    api: ApiClient, ns: str, operator: Operator, name: str, text: str, says: str
):
    core = CoreV1Api(api)
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": name}, "data": {"profile.json": text}}
    )
    create_monitor(api, ns, monitor(name, spec(reference={"configMapRef": {"name": name}})))
    body = wait_for_ready(api, ns, name, status="False", reason="InvalidReference")

    where = f"spec.reference.configMapRef: ConfigMap {ns}/{name} key 'profile.json'"
    assert ready_message(body).startswith(f"{where} {says}")
    assert body["status"]["phase"] == "Invalid"
    [warning, *_] = wait_for(
        "an InvalidReference Warning Event",
        lambda: warnings_with(api, ns, name, "InvalidReference"),
    )
    assert f"{where} {says}" in warning["message"]
    assert read_config_map(api, ns, f"driftline-{name}-sidecar") is None

    # Fixing the ConfigMap is enough: reconcile retries the reference.
    profile = yaml.safe_load(EXAMPLE_REFERENCE.read_text())["data"]["profile.json"]
    core.patch_namespaced_config_map(name, ns, {"data": {"profile.json": profile}})
    wait_for_ready(api, ns, name, status="True", reason="SidecarConfigured")
    assert read_config_map(api, ns, f"driftline-{name}-sidecar") is not None


# -- repeated feature names --------------------------------------------------------

REPEATED = [{"name": "amount"}, {"name": "country", "type": "categorical"}, {"name": "amount"}]


def test_the_crd_refuses_repeated_feature_names(api: ApiClient, ns: str, apiserver: ApiServer):
    if not apiserver.real:
        pytest.skip("the emulator does not check CRD schemas")
    model = {"name": "fraud", "features": REPEATED}
    with pytest.raises(ApiException) as refused:
        create_monitor(api, ns, monitor("repeated-refused", spec(model=model)))
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert "spec.model.features[2]: Duplicate value" in message


@contextlib.contextmanager
def features_not_keyed_by_name(api: ApiClient) -> Iterator[None]:
    """The CRD as it was before features became a list-map (the session's CRD
    is put back after). Objects stored meanwhile keep their repeated names."""
    crds = ApiextensionsV1Api(api)
    crd = f"{PLURAL}.{GROUP}"
    keys = ("x-kubernetes-list-type", "x-kubernetes-list-map-keys")
    crds.patch_custom_resource_definition(
        crd, [{"op": "remove", "path": f"{FEATURES_NODE}/{key}"} for key in keys]
    )
    try:
        yield
    finally:
        crds.patch_custom_resource_definition(
            crd,
            [
                {"op": "add", "path": f"{FEATURES_NODE}/x-kubernetes-list-type", "value": "map"},
                {
                    "op": "add",
                    "path": f"{FEATURES_NODE}/x-kubernetes-list-map-keys",
                    "value": ["name"],
                },
            ],
        )


def test_repeated_feature_names_stored_earlier_are_an_invalid_spec(
    api: ApiClient, ns: str, apiserver: ApiServer, operator: Operator
):
    body = monitor("repeated", spec(model={"name": "fraud", "features": REPEATED}))
    relaxed = features_not_keyed_by_name(api) if apiserver.real else contextlib.nullcontext()
    with relaxed:
        # The apiserver takes the relaxed schema a moment after the patch.
        wait_for("the ModelMonitor to be stored", lambda: create_monitor(api, ns, body) or True)
    stored = wait_for_ready(api, ns, "repeated", status="False", reason="InvalidSpec")

    says = "spec.model.features: feature names must be unique, repeated: amount"
    assert ready_message(stored) == says
    assert stored["status"]["phase"] == "Invalid"
    [warning, *_] = wait_for(
        "an InvalidSpec Warning Event", lambda: warnings_with(api, ns, "repeated", "InvalidSpec")
    )
    assert warning["message"] == f"ModelMonitor {ns}/repeated: {says}"
    assert read_config_map(api, ns, "driftline-repeated-sidecar") is None
    assert "Traceback" not in Path(operator.log).read_text()
