"""The manifests in examples/ are valid and fit together: the Service reaches
the model's named port, the ModelMonitor selects the model's pods, and the
reference profile is the one the documented commands build from the
committed training data."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from driftline_operator.api.names import GROUP, KIND, VERSION
from driftline_operator.api.spec import ModelMonitorSpec, spec_from
from driftline_operator.cli.demo import model_server
from driftline_operator.cli.profiles import ProfileOptions, build_profile_from_file
from driftline_sidecar.contract.profile import ReferenceProfile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
KUBE_VERSION = "1.30"

Manifest = dict[str, Any]


def manifests(example: Path) -> dict[str, Manifest]:
    """Every Kubernetes object of an example, by 'Kind/name'."""
    found: dict[str, Manifest] = {}
    for path in sorted(example.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def of_kind(objects: dict[str, Manifest], kind: str) -> list[Manifest]:
    return [m for m in objects.values() if m["kind"] == kind]


def pod_labels(deployment: Manifest) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def container_ports(deployment: Manifest) -> dict[str, int]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return {
        p["name"]: p["containerPort"] for c in containers for p in c.get("ports", []) if "name" in p
    }


def test_there_are_examples() -> None:
    assert [p.name for p in EXAMPLES] == ["fraud"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_kustomization_lists_every_manifest(example: Path) -> None:
    kustomization = yaml.safe_load((example / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    assert listed == sorted(
        p.name for p in example.glob("*.yaml") if p.name != "kustomization.yaml"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_model_monitors_validate_with_the_operator_model(example: Path) -> None:
    monitors = of_kind(manifests(example), KIND)
    assert monitors, f"{example.name} has no ModelMonitor"
    for monitor in monitors:
        assert monitor["apiVersion"] == f"{GROUP}/{VERSION}"
        spec = spec_from(monitor)
        assert isinstance(spec, ModelMonitorSpec)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_other_manifests_are_valid_kubernetes(example: Path) -> None:
    for where, manifest in manifests(example).items():
        if manifest["kind"] == KIND:
            continue
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{example.name}: {where}: {error.message} at {list(error.absolute_path)}")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_selectors_and_ports_line_up(example: Path) -> None:
    objects = manifests(example)
    deployments = of_kind(objects, "Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(deployment).items()
    for service in of_kind(objects, "Service"):
        selected = [
            d for d in deployments if service["spec"]["selector"].items() <= pod_labels(d).items()
        ]
        assert selected, f"Service {service['metadata']['name']} selects no example Deployment"
        for port in service["spec"]["ports"]:
            for deployment in selected:
                assert port["targetPort"] in container_ports(deployment), (
                    f"Service port {port['name']} targets {port['targetPort']!r}, "
                    f"not a named port of {deployment['metadata']['name']}"
                )
    for monitor in of_kind(objects, KIND):
        spec = spec_from(monitor)
        selected = [
            d for d in deployments if spec.selector.match_labels.items() <= pod_labels(d).items()
        ]
        assert selected, f"ModelMonitor {monitor['metadata']['name']} selects no example Deployment"
        for deployment in selected:
            # Every pod carries the version label the sidecar reports.
            assert "app.kubernetes.io/version" in pod_labels(deployment)
            assert spec.model.port in container_ports(deployment)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_reference_profiles_fit_their_monitors(example: Path) -> None:
    objects = manifests(example)
    for monitor in of_kind(objects, KIND):
        spec = spec_from(monitor)
        assert spec.reference is not None
        ref = spec.reference.config_map_ref
        config_map = objects.get(f"ConfigMap/{ref.name}")
        assert config_map is not None, f"no ConfigMap {ref.name} in {example.name}"
        profile = ReferenceProfile.model_validate_json(config_map["data"][ref.key])
        assert {f.name for f in spec.model.features} <= profile.features.keys()
        assert profile.prediction_column == spec.model.prediction.score


def test_fraud_profile_is_what_the_documented_commands_build() -> None:
    example = ROOT / "examples" / "fraud"
    committed = ReferenceProfile.model_validate_json(
        manifests(example)["ConfigMap/fraud-reference"]["data"]["profile.json"]
    )
    options = ProfileOptions(
        features=["f0", "f1", "f2", "f3"], prediction="probability", sample_size=200, seed=7
    )
    rebuilt = build_profile_from_file(example / "training.csv", options)
    assert committed.source.sha256 == rebuilt.source.sha256, (
        "training.csv changed: rebuild the profile"
    )
    assert json.loads(committed.model_dump_json(exclude={"created_at", "source"})) == json.loads(
        rebuilt.model_dump_json(exclude={"created_at", "source"})
    )


def test_fraud_model_container_runs_the_demo_model_server() -> None:
    (deployment,) = of_kind(manifests(ROOT / "examples" / "fraud"), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", model_server.__name__], shlex.join(command)
    args = model_server.parse_args(command[3:])
    # Reached through the Service before injection, so not only on loopback.
    assert args.host == "0.0.0.0"
    assert args.port == container_ports(deployment)["http"]
    # The model's features are the ones the ModelMonitor captures.
    (monitor,) = of_kind(manifests(ROOT / "examples" / "fraud"), KIND)
    features = [f.name for f in spec_from(monitor).model.features]
    assert (
        features == model_server.Classifier(n_features=args.features, seed=args.seed).feature_names
    )
