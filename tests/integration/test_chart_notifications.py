"""The chart's notification receivers: each one's Secret key is mounted into
the operator's pods as a file named after the receiver, the operator's env
declares them, and the operator still gets no Secret access through the API."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from _helm import CHART, HELM, needs_helm

from driftline_operator.controller.settings import OperatorConfig, SettingsError

pytestmark = [pytest.mark.helm, needs_helm]

Manifest = dict[str, Any]
RECEIVERS = [
    {"name": "oncall", "type": "pagerduty", "secretName": "pd", "key": "routingKey"},
    {"name": "team", "type": "teams", "secretName": "hooks", "key": "teams.url"},
    {"name": "ci", "type": "webhook", "secretName": "hooks", "key": "ci.url"},
]


def render(values: Manifest, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    command = [
        HELM,
        "template",
        "dl",
        str(CHART),
        "--namespace",
        "driftline",
        "--values",
        str(path),
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


def manifests(values: Manifest, tmp_path: Path) -> list[Manifest]:
    result = render(values, tmp_path)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def pod_spec(docs: list[Manifest]) -> Manifest:
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def test_receivers_are_mounted_files_and_declared_in_the_env(tmp_path: Path) -> None:
    values = {
        "notifications": {"receivers": RECEIVERS, "pagerdutyUrl": "https://pd.local/v2/enqueue"}
    }
    docs = manifests(values, tmp_path)
    spec = pod_spec(docs)
    [container] = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DRIFTLINE_NOTIFICATION_RECEIVERS"] == "oncall=pagerduty,team=teams,ci=webhook"
    assert env["DRIFTLINE_NOTIFICATION_DIR"] == "/etc/driftline/receivers"
    assert env["DRIFTLINE_PAGERDUTY_URL"] == "https://pd.local/v2/enqueue"
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "notification-receivers"]
    assert mount == {
        "name": "notification-receivers",
        "mountPath": "/etc/driftline/receivers",
        "readOnly": True,
    }
    [volume] = [v for v in spec["volumes"] if v["name"] == "notification-receivers"]
    assert volume["projected"]["sources"] == [
        {"secret": {"name": "pd", "items": [{"key": "routingKey", "path": "oncall"}]}},
        {"secret": {"name": "hooks", "items": [{"key": "teams.url", "path": "team"}]}},
        {"secret": {"name": "hooks", "items": [{"key": "ci.url", "path": "ci"}]}},
    ]
    for doc in docs:
        if doc["kind"] == "Deployment":
            kubernetes_validate.validate(doc, "1.30", strict=True)

    # What the kubelet would write there, as a tmp dir: the operator's settings accept it.
    plain = {k: v for k, v in env.items() if k.startswith("DRIFTLINE_") and isinstance(v, str)}
    plain.pop("DRIFTLINE_WEBHOOK_CERT_DIR", None)
    plain["DRIFTLINE_NOTIFICATION_DIR"] = str(tmp_path)
    plain["DRIFTLINE_NAMESPACE"] = "driftline"  # the downward API's, in the pod
    with pytest.raises(SettingsError, match="no file for receiver ci, oncall, team"):
        OperatorConfig.from_env(plain)
    for source in volume["projected"]["sources"]:
        (tmp_path / source["secret"]["items"][0]["path"]).write_text("https://x.invalid/\n")
    config = OperatorConfig.from_env(plain)
    assert sorted(config.receivers) == ["ci", "oncall", "team"]


def test_without_receivers_nothing_is_mounted(tmp_path: Path) -> None:
    spec = pod_spec(manifests({}, tmp_path))
    assert all(v["name"] != "notification-receivers" for v in spec["volumes"])
    [container] = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DRIFTLINE_NOTIFICATION_RECEIVERS"] == ""


def test_the_operator_still_reads_no_secrets_through_the_api(tmp_path: Path) -> None:
    for watch in ([], ["ml", "fraud"]):
        values = {"notifications": {"receivers": RECEIVERS}, "watchNamespaces": watch}
        for doc in manifests(values, tmp_path):
            if doc["kind"] in ("ClusterRole", "Role"):
                for rule in doc["rules"]:
                    assert "secrets" not in rule.get("resources", []), (doc["kind"], rule)
                    assert "*" not in rule.get("resources", []), (doc["kind"], rule)


@pytest.mark.parametrize(
    ("receiver", "where"),
    [
        ({"name": "x", "type": "email", "secretName": "s", "key": "k"}, "type"),
        ({"name": "x", "type": "slack", "secretName": "s"}, "key"),
        ({"name": "Bad_Name", "type": "slack", "secretName": "s", "key": "k"}, "name"),
    ],
)
def test_a_bad_receiver_is_refused_by_the_schema(
    receiver: Manifest, where: str, tmp_path: Path
) -> None:
    result = render({"notifications": {"receivers": [receiver]}}, tmp_path)
    assert result.returncode != 0
    assert "/notifications/receivers/0" in result.stderr and where in result.stderr, result.stderr


def test_lint_strict_passes_with_receivers(tmp_path: Path) -> None:
    assert HELM is not None
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"notifications": {"receivers": RECEIVERS}}))
    command = [HELM, "lint", "--strict", str(CHART), "--values", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
