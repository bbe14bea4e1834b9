"""`driftline_operator.kube` against the session's real API server: what a
missing object gives, create-or-merge, label selectors with expressions, and
status writes (the empty-string quirk, conflicts), sync and awaited alike.
The routers', rollouts' and handlers' own tests cover the calls in context."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from _harness import ControlPlane, create_monitor, monitor, namespace_on
from kubernetes.client import ApiClient, CoreV1Api

from driftline_operator import kube
from driftline_operator.api.spec import LabelSelector


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[tuple[ApiClient, str]]:
    with namespace_on(control_plane, "it-kube") as server:
        api = server.client()
        try:
            yield api, server.namespace
        finally:
            api.close()


def config_map(ns: str, name: str, labels: dict[str, str], data: dict[str, str]) -> kube.Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "data": data,
    }


def test_a_missing_object_is_none_or_not_found(world):
    api, ns = world
    assert kube.read(api, kube.CONFIGMAPS, ns, "nowhere") is None
    assert asyncio.run(kube.aread(api, kube.CONFIGMAPS, ns, "nowhere")) is None
    with pytest.raises(kube.NotFound, match=f"^ConfigMap {ns}/nowhere does not exist$"):
        kube.get(api, kube.CONFIGMAPS, ns, "nowhere")
    with pytest.raises(kube.NotFound, match=f"^Deployment {ns}/nowhere does not exist$"):
        asyncio.run(kube.aget(api, kube.DEPLOYMENTS, ns, "nowhere"))
    assert kube.delete(api, kube.CONFIGMAPS, ns, "nowhere") is False


def test_apply_creates_then_merges_and_delete_removes(world):
    api, ns = world
    created = kube.apply(api, kube.CONFIGMAPS, config_map(ns, "applied", {"v": "1"}, {"a": "1"}))
    assert created["data"] == {"a": "1"}
    merged = kube.apply(api, kube.CONFIGMAPS, config_map(ns, "applied", {"v": "2"}, {"b": "2"}))
    assert merged["metadata"]["labels"] == {"v": "2"}
    assert merged["data"] == {"a": "1", "b": "2"}  # a merge patch: keys are added, not replaced
    assert kube.delete(api, kube.CONFIGMAPS, ns, "applied") is True
    assert kube.read(api, kube.CONFIGMAPS, ns, "applied") is None


def test_a_selector_with_expressions_selects_on_the_server(world):
    api, ns = world
    for name, labels in [
        ("stable", {"app": "sel", "track": "stable"}),
        ("canary", {"app": "sel", "track": "canary"}),
        ("legacy", {"app": "sel", "track": "stable", "legacy": "yes"}),
        ("other", {"app": "other", "track": "stable"}),
    ]:
        kube.apply(api, kube.CONFIGMAPS, config_map(ns, f"sel-{name}", labels, {}))
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "sel"},
            "matchExpressions": [
                {"key": "track", "operator": "In", "values": ["stable", "canary"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    found = kube.list_objects(api, kube.CONFIGMAPS, ns, selector=selector)
    assert sorted(o["metadata"]["name"] for o in found) == ["sel-canary", "sel-stable"]
    every = asyncio.run(kube.alist_objects(api, kube.CONFIGMAPS, ns, selector=None))
    assert {f"sel-{n}" for n in ("stable", "canary", "legacy", "other")} <= {
        o["metadata"]["name"] for o in every
    }


def test_a_status_write_leaves_empty_strings_out(world):
    api, ns = world
    create_monitor(api, ns, monitor("quirk", {
        "selector": {"matchLabels": {"app": "quirk"}},
        "model": {"name": "fraud"},
        "analysis": {"interval": "1h"},
    }))  # fmt: skip
    status = {"phase": "Pending", "lastAnalysisTime": "", "rollout": {"decision": ""}}
    written = kube.patch_status(api, kube.MONITORS, ns, "quirk", status)
    assert written["status"]["phase"] == "Pending"
    assert "lastAnalysisTime" not in written["status"]
    assert not written["status"].get("rollout", {}).get("decision")


def test_update_leaves_an_unchanged_object_alone(world):
    api, ns = world
    before = kube.apply(api, kube.CONFIGMAPS, config_map(ns, "same", {}, {"a": "1"}))
    after = kube.update(api, kube.CONFIGMAPS, ns, "same", lambda current: None)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_update_reads_again_after_a_conflict(world):
    api, ns = world
    kube.apply(api, kube.CONFIGMAPS, config_map(ns, "contested", {}, {"a": "1"}))
    calls: list[str] = []

    def change(current: kube.Obj) -> kube.Obj:
        calls.append(current["metadata"]["resourceVersion"])
        if len(calls) == 1:  # another writer gets in first
            CoreV1Api(api).patch_namespaced_config_map(
                "contested", ns, {"metadata": {"labels": {"x": "y"}}}
            )
        return {"data": {"checked": "yes"}}

    result = asyncio.run(kube.aupdate(api, kube.CONFIGMAPS, ns, "contested", change))
    assert len(calls) == 2 and calls[0] != calls[1]  # read again after the 409
    assert result["data"] == {"a": "1", "checked": "yes"}
    assert result["metadata"]["labels"] == {"x": "y"}  # the other write is kept
