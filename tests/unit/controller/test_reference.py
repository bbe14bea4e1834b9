"""The reference profile as reconcile and the analysis loop read it from its ConfigMap."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline_operator.api.spec import ConfigMapKeyRef
from driftline_operator.controller.reference import ReferenceProblem, load_reference

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "fraud" / "reference-configmap.yaml").read_text())
PROFILE = EXAMPLE["data"]["profile.json"]  # a real profile, built by `driftline profile build`
REF = ConfigMapKeyRef(name="fraud-ref", key="profile.json")


def config_map(**data: str) -> dict[str, Any]:
    return {"metadata": {"name": "fraud-ref"}, "data": data}


def problem(config: dict[str, Any] | None) -> ReferenceProblem:
    with pytest.raises(ReferenceProblem) as caught:
        load_reference(config, REF, namespace="ml")
    return caught.value


def test_a_profile_loads_with_the_hash_of_its_text():
    loaded = load_reference(config_map(**{"profile.json": PROFILE}), REF, namespace="ml")
    assert set(loaded.profile.features) == {"f0", "f1", "f2", "f3"}
    assert len(loaded.sha256) == 64


def test_a_profile_in_binary_data_loads_too():
    encoded = base64.b64encode(PROFILE.encode()).decode()
    config = {"metadata": {"name": "fraud-ref"}, "binaryData": {"profile.json": encoded}}
    assert load_reference(config, REF, namespace="ml").profile.features


def test_a_missing_configmap_or_key_is_not_found():
    missing = problem(None)
    assert missing.reason == "ReferenceNotFound"
    assert missing.message.startswith(
        "spec.reference.configMapRef: ConfigMap ml/fraud-ref not found"
    )
    wrong_key = problem(config_map(**{"profile.yaml": "{}"}))
    assert wrong_key.reason == "ReferenceNotFound"
    assert "has no key 'profile.json' (keys: profile.yaml)" in wrong_key.message


def test_a_key_that_is_not_json_is_an_invalid_reference_naming_the_parse_error():
    found = problem(config_map(**{"profile.json": "features: [f0, f1]"}))  # YAML
    assert found.reason == "InvalidReference"
    assert found.message.startswith(
        "spec.reference.configMapRef: ConfigMap ml/fraud-ref key 'profile.json' is not JSON: "
        "expected ident at line 1 column 2; "
    )
    assert "driftline profile build" in found.message  # and says how to fix it


def test_json_that_is_not_a_profile_is_an_invalid_reference_naming_the_field():
    document = json.loads(PROFILE)
    document["features"]["f0"]["edges"] = [2.0, 1.0]
    found = problem(config_map(**{"profile.json": json.dumps(document)}))
    assert found.reason == "InvalidReference"
    assert "key 'profile.json' is not a reference profile: profile.features.f0" in found.message
    assert "numeric edges must be strictly increasing" in found.message

    empty = problem(config_map(**{"profile.json": "{}"}))
    assert "is not a reference profile: profile.created_at: Field required" in empty.message
    assert "more problems" in empty.message


def test_binary_data_that_is_not_text_is_an_invalid_reference():
    garbage = base64.b64encode(b"\xff\xfe\x00").decode()
    config = {"metadata": {"name": "fraud-ref"}, "binaryData": {"profile.json": garbage}}
    found = problem(config)
    assert found.reason == "InvalidReference"
    assert "ConfigMap ml/fraud-ref key 'profile.json' is not UTF-8 text" in found.message
