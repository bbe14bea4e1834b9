"""Each router's effect on the objects it changes, against a Kubernetes API.

The API is kmock's in-process emulator (stores objects, applies JSON merge
patches as a server does), and for what needs real semantics (the Deployment
controller's ReplicaSets, CRD validation) the session's control plane
(conftest.py); the sidecar router's push goes over real HTTP on
loopback to small admin servers that check the bearer token and validate the
pushed document against the sidecar's own config schema.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp.web
import pytest
import pytest_asyncio
import yaml
from _harness import ControlPlane, namespace_on
from kubernetes.client import ApiClient, Configuration
from yarl import URL

from driftline_operator.rollout import workloads as deployments
from driftline_operator.rollout.machine import PROMOTE, ROLLBACK, SetWeight, StartCanary
from driftline_operator.rollout.routers import RouterError, RouteTarget
from driftline_operator.rollout.routers.factory import router_for
from driftline_operator.rollout.routers.replicas import split_replicas
from driftline_sidecar.contract.config import ModelConfig, SidecarConfig
from tests._loopback import serving

NS = "ml"
DEPLOYMENTS = "apps/v1/deployments"
HTTPROUTES = "gateway.networking.k8s.io/v1/httproutes"
VIRTUALSERVICES = "networking.istio.io/v1beta1/virtualservices"
TOKEN = "s3cret-token"

TARGET = RouteTarget(
    namespace=NS,
    monitor="fraud",
    stable="fraud-v1",
    canary="fraud-v2",
    stable_service="fraud-v1",
    canary_service="fraud-v2",
    route="fraud",
    config_map="driftline-fraud-sidecar",
    admin_token=TOKEN,
)


@pytest_asyncio.fixture()
async def api(kmock: Any) -> AsyncIterator[ApiClient]:
    for resource, kind in [
        (DEPLOYMENTS, "Deployment"),
        ("apps/v1/replicasets", "ReplicaSet"),
        ("v1/pods", "Pod"),
        ("v1/configmaps", "ConfigMap"),
        ("v1/services", "Service"),
        (HTTPROUTES, "HTTPRoute"),
        (VIRTUALSERVICES, "VirtualService"),
    ]:
        kmock.resources[resource] = {"kind": kind, "namespaced": True}
    configuration = Configuration(host=str(kmock.url).rstrip("/"))
    client = ApiClient(configuration)
    try:
        yield client
    finally:
        client.close()


def stored(kmock: Any, resource: str, name: str) -> dict[str, Any]:
    return dict(kmock.objects[resource, NS, name].raw)


def deployment(name: str, *, replicas: int, image: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": "model", "image": image}]},
            },
        },
    }


# -- gateway-api ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_gateway_api_weights_the_backend_refs(kmock, api):
    other_rule = {"matches": [{"path": {"value": "/docs"}}], "backendRefs": [{"name": "docs"}]}
    kmock.objects[HTTPROUTES, NS, "fraud"] = {
        "metadata": {"name": "fraud", "namespace": NS},
        "spec": {"rules": [{"backendRefs": [{"name": "fraud-v1", "port": 80}]}, other_rule]},
    }
    router = router_for("gateway-api", api)

    await router.set_weight(TARGET, 25)

    rules = stored(kmock, HTTPROUTES, "fraud")["spec"]["rules"]
    assert rules[0]["backendRefs"] == [
        {"name": "fraud-v1", "port": 80, "weight": 75},
        {"name": "fraud-v2", "port": 80, "weight": 25},
    ]
    assert rules[1] == other_rule
    assert await router.get_weight(TARGET) == 25

    await router.finalize(TARGET)
    refs = stored(kmock, HTTPROUTES, "fraud")["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("fraud-v1", 100), ("fraud-v2", 0)]
    assert await router.get_weight(TARGET) == 0


@pytest.mark.asyncio
async def test_gateway_api_route_without_stable_names_the_fix(kmock, api):
    kmock.objects[HTTPROUTES, NS, "fraud"] = {
        "metadata": {"name": "fraud", "namespace": NS},
        "spec": {"rules": [{"backendRefs": [{"name": "something-else"}]}]},
    }
    with pytest.raises(RouterError, match=r"HTTPRoute ml/fraud has no rule .* 'fraud-v1'"):
        await router_for("gateway-api", api).set_weight(TARGET, 10)


# -- istio ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_istio_weights_the_virtual_service_route(kmock, api):
    host = "fraud-v1.ml.svc.cluster.local"
    kmock.objects[VIRTUALSERVICES, NS, "fraud"] = {
        "metadata": {"name": "fraud", "namespace": NS},
        "spec": {
            "hosts": ["fraud"],
            "http": [{"route": [{"destination": {"host": host, "port": {"number": 80}}}]}],
        },
    }
    router = router_for("istio", api)

    await router.set_weight(TARGET, 10)

    route = stored(kmock, VIRTUALSERVICES, "fraud")["spec"]["http"][0]["route"]
    assert route == [
        {"destination": {"host": host, "port": {"number": 80}}, "weight": 90},
        {
            "destination": {"host": "fraud-v2.ml.svc.cluster.local", "port": {"number": 80}},
            "weight": 10,
        },
    ]
    assert await router.get_weight(TARGET) == 10
    await router.set_weight(TARGET, 50)
    assert await router.get_weight(TARGET) == 50
    await router.finalize(TARGET)
    weights = [
        d["weight"] for d in stored(kmock, VIRTUALSERVICES, "fraud")["spec"]["http"][0]["route"]
    ]
    assert weights == [100, 0]


# -- replicas ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [
        (4, 25, (3, 1)),
        (4, 5, (3, 1)),
        (4, 50, (2, 2)),
        (4, 100, (0, 4)),
        (4, 0, (4, 0)),
        (1, 50, (1, 0)),
    ],
)
def test_split_replicas(total, weight, expected):
    assert split_replicas(total, weight) == expected


@pytest.mark.asyncio
async def test_replicas_router_keeps_the_total(kmock, api):
    kmock.objects[DEPLOYMENTS, NS, "fraud-v1"] = deployment(
        "fraud-v1", replicas=4, image="m:1", labels={"app": "fraud", "track": "stable"}
    )
    kmock.objects[DEPLOYMENTS, NS, "fraud-v2"] = deployment(
        "fraud-v2", replicas=0, image="m:2", labels={"app": "fraud", "track": "canary"}
    )
    router = router_for("replicas", api)

    def replicas() -> tuple[int, int]:
        return (
            stored(kmock, DEPLOYMENTS, "fraud-v1")["spec"]["replicas"],
            stored(kmock, DEPLOYMENTS, "fraud-v2")["spec"]["replicas"],
        )

    await router.set_weight(TARGET, 25)
    assert replicas() == (3, 1) and await router.get_weight(TARGET) == 25
    await router.set_weight(TARGET, 50)
    assert replicas() == (2, 2)
    await router.finalize(TARGET)
    assert replicas() == (4, 0) and await router.get_weight(TARGET) == 0
    scale_patches = [r for r in kmock if r.method == "PATCH" and r.subresource == "scale"]
    assert len(scale_patches) == 6  # the two Deployments, three times


# -- sidecar -------------------------------------------------------------------


class AdminServer:
    """A sidecar admin API: GET/PUT /v1/config, bearer token on writes."""

    def __init__(self) -> None:
        self.config = SidecarConfig(model=ModelConfig(name="fraud", version="v1"))
        self.puts: list[dict[str, Any]] = []
        self.routes = (
            aiohttp.web.get("/v1/config", self.get),
            aiohttp.web.put("/v1/config", self.put),
        )

    async def get(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(self.config.model_dump(mode="json"))

    async def put(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return aiohttp.web.json_response({"error": "wrong bearer token"}, status=403)
        document = await request.json()
        self.config = SidecarConfig.model_validate(document)  # the sidecar's own schema
        self.puts.append(document)
        return aiohttp.web.json_response(self.config.model_dump(mode="json"))


@pytest_asyncio.fixture()
async def admins() -> AsyncIterator[list[tuple[AdminServer, int]]]:
    async with AsyncExitStack() as stack:
        servers = []
        for _ in range(3):
            server = AdminServer()
            url = await stack.enter_async_context(serving(*server.routes))
            servers.append((server, URL(url).port))
        yield servers


def pod(name: str, labels: dict[str, str], admin_port: int, *, phase: str = "Running") -> dict:
    return {
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "containers": [
                {"name": "model", "image": "m"},
                {
                    "name": "driftline-sidecar",
                    "ports": [{"name": "driftline-admin", "containerPort": admin_port}],
                },
            ]
        },
        "status": {"phase": phase, "podIP": "127.0.0.1" if phase == "Running" else None},
    }


def sidecar_world(kmock: Any, admins: list[tuple[AdminServer, int]]) -> None:
    stable_labels, canary_labels = (
        {"app": "fraud", "track": "stable"},
        {"app": "fraud", "track": "canary"},
    )
    kmock.objects[DEPLOYMENTS, NS, "fraud-v1"] = deployment(
        "fraud-v1", replicas=2, image="m:1", labels=stable_labels
    )
    kmock.objects["v1/services", NS, "fraud-v2"] = {
        "metadata": {"name": "fraud-v2", "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 8000, "targetPort": "http"}]},
    }
    document = SidecarConfig(model=ModelConfig(name="fraud")).model_dump(mode="json")
    kmock.objects["v1/configmaps", NS, "driftline-fraud-sidecar"] = {
        "metadata": {"name": "driftline-fraud-sidecar", "namespace": NS},
        "data": {"sidecar.yaml": yaml.safe_dump(document)},
    }
    (_, port1), (_, port2), (_, port3) = admins
    kmock.objects["v1/pods", NS, "fraud-v1-a"] = pod("fraud-v1-a", stable_labels, port1)
    kmock.objects["v1/pods", NS, "fraud-v1-b"] = pod("fraud-v1-b", stable_labels, port2)
    kmock.objects["v1/pods", NS, "fraud-v1-c"] = pod(
        "fraud-v1-c", stable_labels, 1, phase="Pending"
    )
    kmock.objects["v1/pods", NS, "fraud-v2-a"] = pod("fraud-v2-a", canary_labels, port3)


@pytest.mark.asyncio
async def test_sidecar_router_pushes_to_stable_pods_and_the_config_map(kmock, api, admins):
    sidecar_world(kmock, admins)
    router = router_for("sidecar", api)

    await router.set_weight(TARGET, 30)

    (one, _), (two, _), (canary, _) = admins
    for server in (one, two):
        assert len(server.puts) == 1
        assert server.config.routing.canary_weight == 30
        assert server.config.routing.canary_url == "http://fraud-v2.ml.svc:8000"
        assert server.config.model.version == "v1"  # the pod's own config is kept
    assert canary.puts == []  # the canary's sidecar never splits
    text = stored(kmock, "v1/configmaps", "driftline-fraud-sidecar")["data"]["sidecar.yaml"]
    written = SidecarConfig.model_validate(yaml.safe_load(text))
    assert written.routing.canary_weight == 30 and written.model.name == "fraud"
    assert await router.get_weight(TARGET) == 30

    await router.set_weight(TARGET, 30)  # idempotent: nothing new to push
    assert len(one.puts) == 1

    await router.finalize(TARGET)
    assert one.config.routing.canary_weight == 0 and two.config.routing.canary_weight == 0
    assert await router.get_weight(TARGET) == 0


@pytest.mark.asyncio
async def test_sidecar_router_with_a_wrong_token_says_which_pods_missed_it(kmock, api, admins):
    sidecar_world(kmock, admins)
    wrong = RouteTarget(**{**TARGET.__dict__, "admin_token": "nope"})

    with pytest.raises(RouterError, match=r"did not reach 2 of 2 stable pods") as caught:
        await router_for("sidecar", api).set_weight(wrong, 40)

    assert "fraud-v1-a: PUT /v1/config answered 403" in str(caught.value)
    # The ConfigMap holds the weight already, so restarted sidecars get it.
    text = stored(kmock, "v1/configmaps", "driftline-fraud-sidecar")["data"]["sidecar.yaml"]
    assert yaml.safe_load(text)["routing"]["canary_weight"] == 40


def test_unknown_router_names_the_field():
    with pytest.raises(RouterError, match=r"spec.rollout.router 'nginx' is not one of"):
        router_for("nginx", ApiClient(Configuration(host="http://127.0.0.1:1")))


# -- deployments: promotion, rollback, undo ------------------------------------


@pytest.mark.asyncio
async def test_promotion_and_rollback_through_carry_out(kmock, api):
    stable = deployment(
        "fraud-v1", replicas=3, image="m:1", labels={"app": "fraud", "track": "stable"}
    )
    stable["spec"]["template"]["metadata"]["labels"]["legacy"] = "yes"
    canary = deployment(
        "fraud-v2", replicas=0, image="m:2", labels={"app": "fraud", "track": "canary"}
    )
    kmock.objects[DEPLOYMENTS, NS, "fraud-v1"] = stable
    kmock.objects[DEPLOYMENTS, NS, "fraud-v2"] = canary
    router = router_for("gateway-api", api)
    kmock.objects[HTTPROUTES, NS, "fraud"] = {
        "metadata": {"name": "fraud", "namespace": NS},
        "spec": {"rules": [{"backendRefs": [{"name": "fraud-v1", "port": 80}]}]},
    }

    await deployments.carry_out(
        (StartCanary(), SetWeight(10.0)), api=api, router=router, target=TARGET
    )
    assert stored(kmock, DEPLOYMENTS, "fraud-v2")["spec"]["replicas"] == 3
    assert await router.get_weight(TARGET) == 10

    await deployments.carry_out(PROMOTE, api=api, router=router, target=TARGET)
    promoted = stored(kmock, DEPLOYMENTS, "fraud-v1")
    # exactly the canary's template (no label the canary lacks), except the
    # labels stable's selector needs
    expected = json.loads(json.dumps(canary["spec"]["template"]))
    expected["metadata"]["labels"] = {"app": "fraud", "track": "stable"}
    assert promoted["spec"]["template"] == expected
    assert deployments.template_hash(promoted) == deployments.template_hash(canary)
    assert deployments.template_hash(promoted) != deployments.template_hash(stable)
    assert promoted["spec"]["replicas"] == 3
    assert stored(kmock, DEPLOYMENTS, "fraud-v2")["spec"]["replicas"] == 0
    assert await router.get_weight(TARGET) == 0

    await deployments.carry_out(
        (StartCanary(), SetWeight(50.0)), api=api, router=router, target=TARGET
    )
    await deployments.carry_out(ROLLBACK, api=api, router=router, target=TARGET)
    assert stored(kmock, DEPLOYMENTS, "fraud-v2")["spec"]["replicas"] == 0
    assert await router.get_weight(TARGET) == 0


def replica_set(owner: dict[str, Any], revision: int, image: str) -> dict[str, Any]:
    template = {
        "metadata": {
            "labels": {
                **owner["spec"]["selector"]["matchLabels"],
                "pod-template-hash": f"h{revision}",
            }
        },
        "spec": {"containers": [{"name": "model", "image": image}]},
    }
    return {
        "metadata": {
            "name": f"{owner['metadata']['name']}-h{revision}",
            "namespace": NS,
            "labels": template["metadata"]["labels"],
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [{"kind": "Deployment", "uid": owner["metadata"]["uid"]}],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": dict(template["metadata"]["labels"])},
            "template": template,
        },
    }


@pytest.mark.asyncio
async def test_guard_undo_restores_the_previous_revisions_template(kmock, api):
    labels = {"app": "fraud"}
    current = deployment("fraud", replicas=2, image="m:3", labels=labels)
    kmock.objects[DEPLOYMENTS, NS, "fraud"] = current
    for revision, image in [(1, "m:1"), (2, "m:2"), (3, "m:3")]:
        rs = replica_set(current, revision, image)
        kmock.objects["apps/v1/replicasets", NS, rs["metadata"]["name"]] = rs
    stranger = replica_set(deployment("other", replicas=1, image="x", labels=labels), 9, "x:9")
    kmock.objects["apps/v1/replicasets", NS, "other-h9"] = stranger

    history = await deployments.revisions(api, NS, "fraud")
    assert [r.number for r in history] == [3, 2, 1]  # not the other Deployment's
    assert history[0].hash == deployments.template_hash(current)  # hash label ignored
    previous = await deployments.previous_revision(api, NS, "fraud")
    assert previous == history[1].hash

    await deployments.restore(api, NS, "fraud", previous)  # type: ignore[arg-type]

    restored = stored(kmock, DEPLOYMENTS, "fraud")["spec"]["template"]
    assert restored["spec"]["containers"][0]["image"] == "m:2"
    assert "pod-template-hash" not in restored["metadata"]["labels"]
    with pytest.raises(RouterError, match="no ReplicaSet with template nope"):
        await deployments.restore(api, NS, "fraud", "nope")


# -- a real API server (the session's control plane): Deployment controller, CRD validation --

CRDS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: httproutes.gateway.networking.k8s.io
  # as in the Gateway API's own CRDs: *.k8s.io groups need this approval
  annotations: {api-approved.kubernetes.io: "https://github.com/kubernetes-sigs/gateway-api/pull/1538"}
spec:
  group: gateway.networking.k8s.io
  scope: Namespaced
  names: {plural: httproutes, singular: httproute, kind: HTTPRoute}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              rules:
                type: array
                items:
                  type: object
                  properties:
                    backendRefs:
                      type: array
                      items:
                        type: object
                        required: [name]
                        properties:
                          name: {type: string}
                          port: {type: integer}
                          weight: {type: integer, minimum: 0, maximum: 1000000}
"""


@pytest.fixture(scope="module")
def real(control_plane: ControlPlane) -> Iterator[tuple[ControlPlane, str]]:
    """The module's namespace on the shared control plane, with the HTTPRoute CRD."""
    control_plane.kubectl("apply", "-f", "-", stdin=CRDS)
    control_plane.wait_established("httproutes.gateway.networking.k8s.io")
    with namespace_on(control_plane, "it-routers") as server:
        yield control_plane, server.namespace


def kubectl(real: tuple[ControlPlane, str], *args: str, stdin: str | None = None) -> str:
    plane, namespace = real
    return plane.kubectl("-n", namespace, *args, stdin=stdin)


async def poll(what: str, probe: Any, *, deadline: float = 120.0) -> Any:
    """Poll `probe` (async) until it returns something truthy."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.k8s
@pytest.mark.asyncio
async def test_guard_undo_on_real_replica_sets(real):
    # The Deployment controller makes the ReplicaSets and their revision numbers.
    manifest = deployment("guarded", replicas=1, image="model:1", labels={"app": "guarded"})
    del manifest["metadata"]["uid"], manifest["metadata"]["resourceVersion"]
    manifest["metadata"]["namespace"] = real[1]
    kubectl(real, "apply", "-f", "-", stdin=json.dumps(manifest))
    client = real[0].client()
    ns = real[1]
    try:

        async def two_revisions() -> list[deployments.Revision] | None:
            found = await deployments.revisions(client, ns, "guarded")
            return found if len(found) >= 2 else None

        async def first_revision() -> list[deployments.Revision] | None:
            return await deployments.revisions(client, ns, "guarded") or None

        first = (await poll("revision 1", first_revision))[0]
        kubectl(real, "set", "image", "deployment/guarded", "model=model:2")
        history = await poll("revision 2", two_revisions)

        current = await deployments.read(client, ns, "guarded")
        assert history[0].number == 2
        assert history[0].hash == deployments.template_hash(current)  # the RS hashes alike
        previous = await deployments.previous_revision(client, ns, "guarded")
        assert previous == first.hash

        await deployments.restore(client, ns, "guarded", previous)  # type: ignore[arg-type]

        restored = await deployments.read(client, ns, "guarded")
        assert restored["spec"]["template"]["spec"]["containers"][0]["image"] == "model:1"
        assert deployments.template_hash(restored) == first.hash
        assert "pod-template-hash" not in restored["spec"]["template"]["metadata"]["labels"]
    finally:
        client.close()


@pytest.mark.k8s
@pytest.mark.asyncio
async def test_routers_on_a_real_api_server(real):
    for name, image, replicas in [("fraud-v1", "model:1", 4), ("fraud-v2", "model:2", 0)]:
        manifest = deployment(name, replicas=replicas, image=image, labels={"app": name})
        del manifest["metadata"]["uid"], manifest["metadata"]["resourceVersion"]
        manifest["metadata"]["namespace"] = real[1]
        kubectl(real, "apply", "-f", "-", stdin=json.dumps(manifest))
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "fraud", "namespace": real[1]},
        "spec": {"rules": [{"backendRefs": [{"name": "fraud-v1", "port": 80}]}]},
    }
    kubectl(real, "apply", "-f", "-", stdin=json.dumps(route))
    client = real[0].client()
    ns = real[1]
    target = dataclasses.replace(TARGET, namespace=ns)
    try:
        gateway = router_for("gateway-api", client)
        await gateway.set_weight(target, 25)
        stored_route = json.loads(kubectl(real, "get", "httproute", "fraud", "-o", "json"))
        assert stored_route["spec"]["rules"][0]["backendRefs"] == [
            {"name": "fraud-v1", "port": 80, "weight": 75},
            {"name": "fraud-v2", "port": 80, "weight": 25},
        ]
        assert await gateway.get_weight(target) == 25

        replicas = router_for("replicas", client)
        await replicas.set_weight(target, 50)
        scales = [
            json.loads(kubectl(real, "get", "deployment", n, "-o", "json"))["spec"]["replicas"]
            for n in ("fraud-v1", "fraud-v2")
        ]
        assert scales == [2, 2]

        await deployments.carry_out(PROMOTE, api=client, router=gateway, target=target)
        stable = await deployments.read(client, ns, "fraud-v1")
        canary = await deployments.read(client, ns, "fraud-v2")
        assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "model:2"
        # the selector labels stay stable's own: promotion must not break the Deployment
        assert stable["spec"]["template"]["metadata"]["labels"] == {"app": "fraud-v1"}
        assert canary["spec"]["replicas"] == 0
        assert await gateway.get_weight(target) == 0
    finally:
        client.close()
