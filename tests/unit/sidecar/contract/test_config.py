"""The sidecar config's own rules: routing stays inside the monitor's namespace."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from driftline_sidecar.contract.config import RoutingConfig, SidecarConfig, load_config


@pytest.mark.parametrize(
    "url",
    [
        "http://fraud-v2.ml.svc:80",  # what the operator writes (routers/sidecar.py, manifests.py)
        "http://fraud-v2.ml.svc",
        "https://fraud-v2.ml.svc.cluster.local:8443/base",
        "http://Fraud-V2.ML.svc:80",  # host names know no case
    ],
)
def test_a_service_of_the_namespace_is_a_target(url: str) -> None:
    routing = RoutingConfig(canary_url=url, shadow_url=url)
    assert routing.outside("ml") == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://attacker.example:80",
        "http://10.0.0.7:8080",  # a pod IP: any pod of the cluster
        "http://169.254.169.254",  # a cloud's metadata service
        "http://127.0.0.1:8081",  # the pod's own loopback
        "http://[::1]:80",
        "http://fraud.payments.svc:80",  # another namespace's Service
        "http://fraud.ml.svc.attacker.example",  # looks local, resolves outside
        "http://fraud.ml.svc.:80",  # absolute name: no search domain, no cluster.local
        "http://fraud.ml:80",
        "http://fraud:80",
        "http://ml.svc:80",
        "http://kubernetes.default.svc:443",
        "http://-x.ml.svc",  # no Service is named so
    ],
)
def test_anything_else_is_named_by_field(url: str) -> None:
    outside = RoutingConfig(canary_url=url, shadow_url=url).outside("ml")
    assert list(outside) == ["routing.canary_url", "routing.shadow_url"]
    assert all(url in why and "namespace ml" in why for why in outside.values())


def test_a_routing_url_carries_no_credentials() -> None:
    with pytest.raises(ValidationError, match="no user or password"):
        RoutingConfig(canary_url="http://user:pw@fraud-v2.ml.svc:80")


def test_the_namespace_is_a_kubernetes_name() -> None:
    with pytest.raises(ValidationError, match="namespace"):
        SidecarConfig.model_validate({"model": {"name": "m"}, "namespace": "ML/../x"})


def write(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_config_file_routing_out_of_its_namespace_does_not_load(tmp_path: Path) -> None:
    document = {
        "model": {"name": "m"},
        "namespace": "ml",
        "routing": {"canary_url": "http://fraud.ml.svc:80", "shadow_url": "http://x.other.svc"},
    }
    with pytest.raises(ValueError, match=r"routing\.shadow_url: 'http://x\.other\.svc'"):
        load_config(write(tmp_path, document))


def test_without_a_namespace_routing_goes_anywhere(tmp_path: Path) -> None:
    """A sidecar run by hand or by the demo routes to loopback addresses."""
    document = {"model": {"name": "m"}, "routing": {"canary_url": "http://127.0.0.1:9000"}}
    assert load_config(write(tmp_path, document)).routing.canary_url == "http://127.0.0.1:9000"
