"""The ModelMonitor CRD: generated from the pydantic models, structural, and
judging the same examples the same way as the models do."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from driftline_operator.api import crdgen
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.api.status import ModelMonitorStatus

ROOT = Path(__file__).resolve().parents[3]
CRD_FILE = ROOT / "crds" / "modelmonitors.driftline.io.yaml"
REGENERATE = "python -m driftline_operator.api.crdgen > crds/modelmonitors.driftline.io.yaml"


def schema() -> dict[str, Any]:
    return crdgen.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# -- the committed file --------------------------------------------------------


def test_committed_yaml_is_the_generated_crd():
    committed = yaml.safe_load(CRD_FILE.read_text())
    assert committed == crdgen.crd_manifest(), f"crds/ is stale; regenerate: {REGENERATE}"
    assert CRD_FILE.read_text() == crdgen.render_yaml(), f"formatting drifted; run: {REGENERATE}"


def test_crd_is_a_valid_apiextensions_v1_object():
    kubernetes_validate.validate(crdgen.crd_manifest(), "1.30", strict=True)


def test_names_scope_and_subresources():
    spec = crdgen.crd_manifest()["spec"]
    assert crdgen.crd_manifest()["metadata"]["name"] == "modelmonitors.driftline.io"
    assert spec["group"] == "driftline.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelMonitor"
    assert spec["names"]["plural"] == "modelmonitors"
    assert spec["names"]["singular"] == "modelmonitor"
    assert spec["names"]["shortNames"] == ["mm"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert schema()["required"] == ["spec"]


def test_printer_columns_point_at_typed_status_fields():
    version = crdgen.crd_manifest()["spec"]["versions"][0]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Req/s", "P95 ms", "Error %", "Drifted", "Age"]
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    for column in version["additionalPrinterColumns"]:
        if not column["jsonPath"].startswith(".status."):
            continue
        node = schema()["properties"]["status"]
        for part in column["jsonPath"].removeprefix(".status.").split("."):
            node = node["properties"][part]
        expected = {"string": "string", "number": "number", "integer": "integer"}[column["type"]]
        assert node["type"] == expected, column


# -- structural ----------------------------------------------------------------


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    nodes = [(path, node)]
    for name, child in node.get("properties", {}).items():
        nodes += walk(child, f"{path}.{name}")
    if "items" in node:
        nodes += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        nodes += walk(node["additionalProperties"], f"{path}.*")
    return nodes


def test_schema_is_structural():
    for path, node in walk(schema()):
        assert not {"$ref", "$defs", "title", "allOf", "oneOf", "not", "const"} & set(node), path
        untyped = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or untyped, f"{path} has no type"
        if "anyOf" in node:  # the one anyOf the rules allow
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        assert node.get("additionalProperties") is not False, path
        assert not isinstance(node.get("exclusiveMinimum"), float), path
        if "default" in node:
            assert node["default"] not in (None, ""), path


def test_every_property_has_a_description():
    missing = [
        f"{path}.{name}"
        for path, node in walk(schema())
        for name, child in node.get("properties", {}).items()
        if name != "metadata" and not child.get("description")
    ]
    assert not missing


def test_ports_are_int_or_string_and_bounds_are_any_scalar():
    spec = schema()["properties"]["spec"]["properties"]
    port = spec["model"]["properties"]["port"]
    assert port["x-kubernetes-int-or-string"] is True
    assert port["default"] == "http"
    slo = spec["slos"]["items"]["properties"]
    assert slo["max"]["x-kubernetes-preserve-unknown-fields"] is True
    assert slo["max"]["nullable"] is True
    quantile = slo["quantile"]
    assert quantile == quantile | {"minimum": 0.0, "exclusiveMinimum": True, "nullable": True}


def test_unknown_constructs_fail_loudly():
    class Odd(BaseModel):
        either: dict[str, int] | list[int]

    raw = Odd.model_json_schema()
    with pytest.raises(crdgen.SchemaError, match="either"):
        crdgen.structural(raw, {}, where="Odd")


# -- the schema and the models agree -------------------------------------------


def as_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI node as draft-4 JSON Schema (draft 4 has OpenAPI 3.0's boolean
    exclusiveMinimum). `nullable` becomes a null branch; objects refuse unknown
    fields, as the apiserver does with strict field validation."""
    node = copy.deepcopy(node)
    nullable = node.pop("nullable", False)
    if "properties" in node:
        node["properties"] = {k: as_jsonschema(v) for k, v in node["properties"].items()}
        node["additionalProperties"] = False
    if "items" in node:
        node["items"] = as_jsonschema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = as_jsonschema(node["additionalProperties"])
    return {"anyOf": [{"type": "null"}, node]} if nullable else node


def list_map_errors(node: dict[str, Any], document: Any, path: str = "") -> list[str]:
    """What the apiserver checks of `x-kubernetes-list-type: map` (JSON Schema
    cannot say it): no two items of such a list have the same keys."""
    errors: list[str] = []
    if isinstance(document, dict):
        for name, child in node.get("properties", {}).items():
            if name in document:
                errors += list_map_errors(child, document[name], f"{path}.{name}".lstrip("."))
    elif isinstance(document, list) and "items" in node:
        seen: set[tuple[Any, ...]] = set()
        keys = node.get("x-kubernetes-list-map-keys", [])
        for index, item in enumerate(document):
            if node.get("x-kubernetes-list-type") == "map" and isinstance(item, dict):
                key = tuple(item.get(k) for k in keys)
                if key in seen:
                    errors.append(
                        f"{path}.{index}: Duplicate value: {dict(zip(keys, key, strict=True))}"
                    )
                seen.add(key)
            errors += list_map_errors(node["items"], item, f"{path}.{index}")
    return errors


def schema_errors(part: str, document: dict[str, Any]) -> list[str]:
    node = schema()["properties"][part]
    validator = jsonschema.Draft4Validator(as_jsonschema(node))
    return [
        ".".join(str(p) for p in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(document)
    ] + list_map_errors(node, document)


FRAUD = {
    "selector": {"matchLabels": {"app": "fraud"}},
    "model": {
        "name": "fraud",
        "port": "http",
        "protocol": "json",
        "features": [
            {"name": "amount", "path": "amount", "type": "numeric"},
            {"name": "country", "path": "country", "type": "categorical", "pii": "hash"},
        ],
        "prediction": {"path": "prediction", "score": "probability"},
    },
    "reference": {"configMapRef": {"name": "fraud-ref", "key": "profile.json"}},
    "drift": {"window": "10m", "minSamples": 500, "method": "psi", "threshold": 0.2},
    "slos": [
        {"name": "p95", "metric": "latency", "quantile": 0.95, "max": "200ms"},
        {"name": "availability", "metric": "successRate", "objective": "99.9%"},
        {"name": "drift", "metric": "driftedFeatureShare", "max": 0.3},
    ],
    "analysis": {"interval": "30s", "timeout": "5s"},
    "rollout": {
        "strategy": "canary",
        "stableRef": {"name": "fraud-v1"},
        "canaryRef": {"name": "fraud-v2"},
        "canaryService": {"name": "fraud-canary", "port": 8080},
        "steps": [5, 25, 50, 100],
        "interval": "30s",
        "failureLimit": 2,
        "comparison": {"maxDisagreement": 0.05},
    },
    "sidecar": {"adminPort": 9091, "resources": {"requests": {"cpu": "50m"}}},
    "explain": {
        "enabled": True,
        "explanationsPerMinute": 120,
        "minExplanations": 20,
        "threshold": 0.15,
        "timeout": "5s",
        "reservoirSize": 64,
        "reservoirWindow": "2m",
    },
}

VALID = {
    "fraud": FRAUD,
    "minimal": {"selector": {"matchLabels": {"app": "m"}}, "model": {"name": "m"}},
    "numbered port, prometheus, nulls": {
        "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["ml"]}]},
        "model": {"name": "m", "port": 8000, "version": None},
        "metrics": {"source": "prometheus", "prometheus": {"url": "http://prom:9090"}},
        "drift": {"threshold": None},
    },
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_examples_pass_both(name: str):
    ModelMonitorSpec.model_validate(VALID[name])
    assert schema_errors("spec", VALID[name]) == []


def changed(path: str, value: Any) -> dict[str, Any]:
    """FRAUD with the dotted path set to value."""
    document = copy.deepcopy(FRAUD)
    *parents, leaf = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[leaf] = value
    return document


INVALID = {
    "unknown protocol": ("model.protocol", "grpc"),
    "threshold above 1": ("drift.threshold", 1.5),
    "negative minSamples": ("drift.minSamples", -5),
    "not a duration": ("drift.window", "ten minutes"),
    "quantile of 1": ("slos.0.quantile", 1.0),
    "fractional port": ("model.port", 80.5),
    "admin port out of range": ("sidecar.adminPort", 70000),
    "empty model name": ("model.name", ""),
    "canary weight above 100": ("rollout.steps", [5, 150]),
    "unknown field": ("model.protocoll", "json"),
    "repeated feature name": ("model.features", [{"name": "amount"}, {"name": "amount"}]),
    "repeated slo name": ("slos", [FRAUD["slos"][0], {**FRAUD["slos"][2], "name": "p95"}]),
    "zero analysis interval": ("analysis.interval", "0s"),
    "zero analysis timeout": ("analysis.timeout", "0ms"),
    "zero drift window": ("drift.window", "0m0s"),
    "zero rollout interval": ("rollout.interval", "0s"),
    "zero progress deadline": ("rollout.progressDeadline", "0.0m"),
    "zero bake time": ("rollout.bakeTime", "00s"),
    "attribution threshold above 1": ("explain.threshold", 1.5),
    "no explanations per minute": ("explain.explanationsPerMinute", 0),
    "zero explanation timeout": ("explain.timeout", "0s"),
    "empty reservoir": ("explain.reservoirSize", 0),
    "reservoir above the sidecar's bound": ("explain.reservoirSize", 10_001),
    "zero reservoir window": ("explain.reservoirWindow", "0s"),
    "attribution distance above 1": ("rollout.comparison.maxAttributionDistance", 1.5),
    "zero attribution distance": ("rollout.comparison.maxAttributionDistance", 0),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_examples_fail_both(name: str):
    path, value = INVALID[name]
    document = changed(path, value)
    with pytest.raises(ValidationError):
        ModelMonitorSpec.model_validate(document)
    errors = schema_errors("spec", document)
    field = path.split(".")[-1]
    assert any(field in error for error in errors), errors


def test_explanations_are_off_by_default_and_need_a_reference():
    minimal = VALID["minimal"]
    assert ModelMonitorSpec.model_validate(minimal).explain.enabled is False
    with pytest.raises(ValidationError, match=r"explain.enabled needs spec.reference"):
        ModelMonitorSpec.model_validate({**minimal, "explain": {"enabled": True}})


def test_a_reservoir_window_longer_than_the_drift_window_is_refused():
    # Each closed reservoir window is explained once: a longer one leaves drift windows empty.
    with pytest.raises(ValidationError, match=r"explain.reservoirWindow 15m is longer than drift"):
        ModelMonitorSpec.model_validate(changed("explain.reservoirWindow", "15m"))
    off = changed("explain.reservoirWindow", "15m")
    off["explain"]["enabled"] = False
    assert ModelMonitorSpec.model_validate(off).explain.reservoir_window.seconds == 900


@pytest.mark.parametrize(
    "text", ["1ms", "0.5s", "0.01s", "0s1ms", "1m0s", "10m", "1h30m", "0h0m0.001s", "2.50h"]
)
def test_positive_durations_pass_both(text: str):
    document = changed("analysis.timeout", text)
    assert ModelMonitorSpec.model_validate(document).analysis.timeout.seconds > 0
    assert schema_errors("spec", document) == []


def test_the_analysis_interval_is_at_least_a_second():
    """A zero interval made the daemon spin on the API server; the CRD refuses
    zero, and pydantic (whose failure pauses the daemon) the rest below 1s."""
    for text in ("1s", "1000ms", "0.5s500ms", "1m"):
        ModelMonitorSpec.model_validate(changed("analysis.interval", text))
    with pytest.raises(ValidationError, match="must be at least 1s"):
        ModelMonitorSpec.model_validate(changed("analysis.interval", "999ms"))
    with pytest.raises(ValidationError, match="must be longer than zero"):
        ModelMonitorSpec.model_validate(changed("analysis.interval", "0s"))


def test_a_timeout_longer_than_the_interval_is_allowed():
    # One analysis finishes before the next interval's wait begins: no overlap.
    document = changed("analysis", {"interval": "1s", "timeout": "2s"})
    ModelMonitorSpec.model_validate(document)
    assert schema_errors("spec", document) == []


def test_a_latency_increase_of_zero_is_allowed():
    document = changed("rollout.comparison", {"maxLatencyIncrease": "0ms"})
    ModelMonitorSpec.model_validate(document)
    assert schema_errors("spec", document) == []


def test_repeated_feature_names_are_named():
    document = changed("model.features", [{"name": "a"}, {"name": "b"}, {"name": "a"}])
    with pytest.raises(ValidationError, match="feature names must be unique, repeated: a"):
        ModelMonitorSpec.model_validate(document)
    features = schema()["properties"]["spec"]["properties"]["model"]["properties"]["features"]
    assert features["x-kubernetes-list-type"] == "map"
    assert features["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in features["items"]["required"]  # a map key must be required


def test_a_full_status_fits_the_status_schema():
    status = ModelMonitorStatus.model_validate(
        {
            "phase": "Degraded",
            "observedGeneration": 3,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Analysed", "message": "ok"}
            ],
            "pods": {"selected": 3, "monitored": 2, "notInjected": 1, "unreachable": ["p-1"]},
            "windows": [{"role": "stable", "seconds": 30, "requests": 90, "p95Ms": 12.5}],
            "requestsPerSecond": 3.0,
            "p95Ms": 12.5,
            "errorPercent": 0.4,
            "drift": {
                "status": "drift",
                "drifted": 1,
                "driftedShare": 0.5,
                "features": [
                    {
                        "name": "amount",
                        "method": "psi",
                        "score": 0.31,
                        "threshold": 0.2,
                        "status": "drift",
                        "samples": 900,
                    }
                ],
            },
            "slos": [{"name": "p95", "verdict": "breach", "value": 0.25, "objective": 0.2}],
            "rollout": {"step": 1, "weight": 25, "failures": 1},
        }
    )
    assert schema_errors("status", status.model_dump(mode="json", by_alias=True)) == []
    assert schema_errors("status", {"phase": "Sleeping"})  # not a phase


def test_the_canary_attribution_comparison_is_off_by_default_and_needs_explanations():
    minimal = VALID["minimal"]
    assert (
        ModelMonitorSpec.model_validate(minimal).rollout.comparison.max_attribution_distance is None
    )
    compared = {**minimal, "rollout": {"comparison": {"maxAttributionDistance": 0.2}}}
    with pytest.raises(
        ValidationError,
        match=r"rollout.comparison.maxAttributionDistance 0.2 needs explain.enabled",
    ):
        ModelMonitorSpec.model_validate(compared)
    explained = {
        **compared,
        "reference": {"configMapRef": {"name": "ref"}},
        "explain": {"enabled": True},
    }
    spec = ModelMonitorSpec.model_validate(explained)
    assert spec.rollout.comparison.max_attribution_distance == 0.2
