"""Rendering a ModelMonitor into the sidecar's config and its ConfigMap."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from driftline_operator.api.spec import Explain, ModelMonitorSpec
from driftline_operator.controller import manifests as render
from driftline_sidecar.contract.config import (
    ReservoirConfig,
    RoutingConfig,
    SidecarConfig,
    load_config,
)

SPEC = ModelMonitorSpec.model_validate(
    {
        "selector": {"matchLabels": {"app": "fraud"}},
        "model": {
            "name": "fraud",
            "protocol": "json",
            "features": [
                {"name": "amount", "path": "tx.amount"},
                {"name": "country", "type": "categorical", "pii": "hash"},
            ],
            "prediction": {"path": "label", "score": "probability", "task": "classification"},
        },
        "reference": {"configMapRef": {"name": "fraud-ref", "key": "fraud.json"}},
        "sidecar": {
            "adminPort": 9191,
            "traceSampleRatio": 0.25,
            "predictionLogSampleRatio": 0.05,
        },
    }
)
TOKEN = "the-admin-token"
OWNER = {
    "apiVersion": "driftline.io/v1alpha1",
    "kind": "ModelMonitor",
    "metadata": {"name": "fraud", "namespace": "ml", "uid": "0b6e1c1e-5c5c-4c1e-9f7a-1d2e3f4a5b6c"},
}


def test_the_config_carries_the_model_and_sidecar_settings():
    config = render.sidecar_config(SPEC, profile_path="/etc/driftline/reference/fraud.json")
    assert config.model.name == "fraud"
    assert config.model.protocol == "json"
    assert config.model.version == "unknown"  # the pod's label comes through the env
    assert config.model.role == "stable"
    assert [(f.name, f.location, f.type, f.pii) for f in config.model.features] == [
        ("amount", "tx.amount", "numeric", "none"),
        ("country", "country", "categorical", "hash"),
    ]
    assert (config.model.prediction.path, config.model.prediction.score) == (
        "label",
        "probability",
    )
    assert config.admin == "0.0.0.0:9191"
    assert config.tracing.sample_ratio == 0.25
    assert config.prediction_log.sample_ratio == 0.05
    assert config.prediction_log.path == "/var/log/driftline/predictions.jsonl"
    assert config.profile_path == "/etc/driftline/reference/fraud.json"
    assert config.routing == SidecarConfig.model_fields["routing"].default_factory()


def test_the_reservoir_is_off_unless_explain_is_on():
    config = render.sidecar_config(SPEC, profile_path=None)
    assert config.reservoir == ReservoirConfig(enabled=False)  # nobody would read its rows


def test_explain_sets_the_reservoirs_size_and_window():
    explained = SPEC.model_copy(
        update={
            "explain": Explain.model_validate(
                {"enabled": True, "reservoirSize": 32, "reservoirWindow": "1m30s"}
            )
        }
    )
    reservoir = render.sidecar_config(explained, profile_path=None).reservoir
    assert (reservoir.enabled, reservoir.size, reservoir.window_seconds) == (True, 32, 90.0)
    # Unset, they are the sidecar's own defaults.
    defaults = SPEC.model_copy(update={"explain": Explain(enabled=True)})
    rendered = render.sidecar_config(defaults, profile_path=None).reservoir
    assert rendered == ReservoirConfig(enabled=True)


def test_a_version_in_the_spec_goes_into_the_config():
    spec = SPEC.model_copy(update={"model": SPEC.model.model_copy(update={"version": "v7"})})
    assert render.sidecar_config(spec, profile_path=None).model.version == "v7"


def test_the_profile_path_follows_the_reference_key():
    assert render.reference_profile_path(SPEC) == "/etc/driftline/reference/fraud.json"
    bare = SPEC.model_copy(update={"reference": None})
    assert render.reference_profile_path(bare) is None


def test_config_map_is_a_valid_owned_configmap():
    cm = render.config_map("fraud", "ml", SPEC, owner=OWNER, admin_token=TOKEN)
    kubernetes_validate.validate(cm, "1.30", strict=True)
    assert cm["metadata"]["name"] == "driftline-fraud-sidecar"
    assert cm["metadata"]["namespace"] == "ml"
    assert cm["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "driftline",
        "driftline.io/monitor": "fraud",
    }
    [ref] = cm["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "ModelMonitor",
        "name": "fraud",
        "uid": OWNER["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert list(cm["data"]) == ["sidecar.yaml"]


def test_the_sidecar_loads_the_rendered_document(tmp_path: Path):
    cm = render.config_map("fraud", "ml", SPEC, owner=OWNER, admin_token=TOKEN)
    path = tmp_path / "sidecar.yaml"
    path.write_text(cm["data"]["sidecar.yaml"])
    loaded = load_config(path)  # the sidecar's own loader
    expected = render.sidecar_config(
        SPEC,
        profile_path=render.reference_profile_path(SPEC),
        namespace="ml",
        admin_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
    )
    assert loaded == expected
    assert loaded.namespace == "ml"  # the one namespace its routing may name
    assert yaml.safe_load(path.read_text())["model"]["name"] == "fraud"
    assert TOKEN not in path.read_text()  # only its hash: a ConfigMap is no place for it


def test_the_routing_the_operator_writes_is_routing_the_sidecar_accepts(tmp_path: Path):
    shadow_spec = SPEC.model_copy(
        update={
            "rollout": SPEC.rollout.model_validate(
                {"strategy": "shadow", "shadowService": {"name": "fraud-v2", "port": 80}}
            )
        }
    )
    shadow = render.shadow_routing(shadow_spec, namespace="ml", port=8080)
    # The sidecar router's canary URL (routers/sidecar.py, _canary_url).
    canary = RoutingConfig(canary_url="http://fraud-v2.ml.svc:80", canary_weight=25.0)
    for routing in (shadow, canary):
        cm = render.config_map(
            "fraud", "ml", shadow_spec, owner=OWNER, admin_token=TOKEN, routing=routing
        )
        path = tmp_path / "sidecar.yaml"
        path.write_text(cm["data"]["sidecar.yaml"])
        assert load_config(path).routing == routing
        assert routing.outside("ml") == {}
        assert list(routing.outside("other")) == [
            "routing.shadow_url" if routing is shadow else "routing.canary_url"
        ]


def test_an_owner_without_uid_is_refused():
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        render.config_map(
            "fraud", "ml", SPEC, owner={"metadata": {"name": "fraud"}}, admin_token=TOKEN
        )


def test_long_monitor_names_still_give_valid_names():
    name = "m" * 200 + "-" + "x" * 52  # 253 characters, a valid ModelMonitor name
    cm = render.config_map(
        name, "ml", SPEC, owner=OWNER | {"metadata": {"name": name, "uid": "u"}}, admin_token=TOKEN
    )
    kubernetes_validate.validate(cm, "1.30", strict=True)
    assert len(cm["metadata"]["name"]) <= 253
    label = cm["metadata"]["labels"]["driftline.io/monitor"]
    assert len(label) <= 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", label)
    other = render.config_map(name[:-1] + "y", "ml", SPEC, owner=OWNER, admin_token=TOKEN)
    assert other["metadata"]["name"] != cm["metadata"]["name"]  # the hash tells them apart
