"""Operator settings from DRIFTLINE_* variables, and the webhook's self-signed certificate."""

import gc
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509

from driftline_operator.controller.main import GC_THRESHOLDS, tune_garbage_collector
from driftline_operator.controller.settings import (
    DEFAULT_SIDECAR_IMAGE,
    OperatorConfig,
    SettingsError,
)
from driftline_operator.controller.tls import write_self_signed


def test_defaults_when_nothing_is_set():
    config = OperatorConfig.from_env({})
    assert config.sidecar_image == DEFAULT_SIDECAR_IMAGE
    assert (config.webhook_port, config.webhook_host, config.metrics_port) == (
        9443,
        "0.0.0.0",
        9100,
    )
    assert config.namespace is None and config.otlp_endpoint is None
    assert config.webhook_cert_dir is None and config.certfile is None


def test_every_variable_is_read(tmp_path: Path):
    write_self_signed(tmp_path)
    config = OperatorConfig.from_env(
        {
            "DRIFTLINE_SIDECAR_IMAGE": "registry.local/sidecar:dev",
            "DRIFTLINE_NAMESPACE": "driftline-system",
            "DRIFTLINE_WEBHOOK_PORT": "8443",
            "DRIFTLINE_WEBHOOK_HOST": "127.0.0.1",
            "DRIFTLINE_WEBHOOK_CERT_DIR": str(tmp_path),
            "DRIFTLINE_METRICS_PORT": "9200",
            "DRIFTLINE_OTLP_ENDPOINT": "http://collector:4318",
        }
    )
    assert config.sidecar_image == "registry.local/sidecar:dev"
    assert config.namespace == "driftline-system"
    assert (config.webhook_port, config.webhook_host, config.metrics_port) == (
        8443,
        "127.0.0.1",
        9200,
    )
    assert config.certfile == tmp_path / "tls.crt" and config.keyfile == tmp_path / "tls.key"
    assert config.otlp_endpoint == "http://collector:4318"


def test_prometheus_rule_labels_are_key_value_pairs():
    config = OperatorConfig.from_env({"DRIFTLINE_PROMETHEUS_RULE_LABELS": "release=kps, team=ml"})
    assert config.prometheus_rule_labels == {"release": "kps", "team": "ml"}
    assert OperatorConfig().prometheus_rule_labels == {}


def test_the_explanation_cap_and_workers_are_read():
    assert (OperatorConfig().explanations_per_minute, OperatorConfig().explainer_processes) == (
        600,
        1,
    )
    config = OperatorConfig.from_env(
        {"DRIFTLINE_EXPLANATIONS_PER_MINUTE": "30", "DRIFTLINE_EXPLAINER_PROCESSES": "2"}
    )
    assert (config.explanations_per_minute, config.explainer_processes) == (30, 2)
    with pytest.raises(SettingsError, match="DRIFTLINE_EXPLANATIONS_PER_MINUTE='-1'"):
        OperatorConfig.from_env({"DRIFTLINE_EXPLANATIONS_PER_MINUTE": "-1"})


def test_the_explainer_url_sends_explanations_to_the_explainer_deployment():
    assert OperatorConfig().explainer_url is None  # the operator's own worker processes
    url = "http://dl-driftline-explainer.driftline-system.svc:8090"
    assert OperatorConfig.from_env({"DRIFTLINE_EXPLAINER_URL": url}).explainer_url == url
    for bad in ("dl-explainer:8090", "https://x/v1/explain", "http://x/v1/explain"):
        with pytest.raises(SettingsError, match=f"DRIFTLINE_EXPLAINER_URL='{bad}'"):
            OperatorConfig.from_env({"DRIFTLINE_EXPLAINER_URL": bad})


def test_empty_variables_count_as_unset():
    assert OperatorConfig.from_env({"DRIFTLINE_NAMESPACE": "", "DRIFTLINE_WEBHOOK_PORT": " "}) == (
        OperatorConfig()
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DRIFTLINE_WEBHOOK_PORT", "https", "DRIFTLINE_WEBHOOK_PORT='https'"),
        ("DRIFTLINE_METRICS_PORT", "70000", "DRIFTLINE_METRICS_PORT='70000'"),
        ("DRIFTLINE_PROMETHEUS_RULE_LABELS", "release", "expected key=value,key=value"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, expected: str):
    with pytest.raises(SettingsError, match=expected):
        OperatorConfig.from_env({variable: value})


def test_leader_election_reads_its_lease_and_timings():
    config = OperatorConfig.from_env(
        {
            "DRIFTLINE_NAMESPACE": "driftline-system",
            "DRIFTLINE_POD_NAME": "driftline-7d9c-abcde",
            "DRIFTLINE_LEASE_NAME": "driftline-leader",
            "DRIFTLINE_LEASE_DURATION_SECONDS": "6",
            "DRIFTLINE_LEASE_RENEW_DEADLINE_SECONDS": "4",
            "DRIFTLINE_LEASE_RETRY_PERIOD_SECONDS": "1",
            "DRIFTLINE_SHUTDOWN_DRAIN_SECONDS": "5",
        }
    )
    assert (config.lease_name, config.pod_name) == ("driftline-leader", "driftline-7d9c-abcde")
    assert (
        config.lease_duration_seconds,
        config.lease_renew_deadline_seconds,
        config.lease_retry_period_seconds,
        config.shutdown_drain_seconds,
    ) == (6, 4, 1, 5)
    # client-go's defaults; no Lease: this process always acts.
    default = OperatorConfig.from_env({})
    assert default.lease_name is None
    assert (default.lease_duration_seconds, default.lease_renew_deadline_seconds) == (15, 10)
    assert default.lease_retry_period_seconds == 2


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"DRIFTLINE_NAMESPACE": ""}, "needs DRIFTLINE_NAMESPACE"),
        ({"DRIFTLINE_LEASE_RENEW_DEADLINE_SECONDS": "15"}, "must be less than"),
        ({"DRIFTLINE_LEASE_RETRY_PERIOD_SECONDS": "6"}, "at most half"),
        ({"DRIFTLINE_LEASE_NAME": "Not_A_Name"}, "DRIFTLINE_LEASE_NAME='Not_A_Name'"),
    ],
)
def test_lease_settings_that_cannot_work_are_refused(changes: dict[str, str], expected: str):
    env = {"DRIFTLINE_NAMESPACE": "driftline-system", "DRIFTLINE_LEASE_NAME": "leader", **changes}
    with pytest.raises(SettingsError, match=expected):
        OperatorConfig.from_env(env)


def test_a_cert_dir_without_the_files_says_what_to_mount(tmp_path: Path):
    with pytest.raises(SettingsError, match=r"missing .*tls\.crt.*tls\.key"):
        OperatorConfig.from_env({"DRIFTLINE_WEBHOOK_CERT_DIR": str(tmp_path)})


def test_self_signed_certificate_names_its_hosts(tmp_path: Path):
    certfile, keyfile = write_self_signed(tmp_path, hostnames=("webhook.local", "127.0.0.1"))
    cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["webhook.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert keyfile.stat().st_mode & 0o077 == 0


def test_a_client_verifies_the_server_with_the_certificate_alone(tmp_path: Path):
    certfile, keyfile = write_self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certfile, keyfile)
    client_context = ssl.create_default_context(cafile=str(certfile))

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
                client_context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert tls.recv(2) == b"ok"
        finally:
            thread.join(timeout=30)


def test_the_operator_refuses_bad_settings_with_the_variable_named():
    result = subprocess.run(
        [sys.executable, "-m", "driftline_operator.controller.main"],
        env={**os.environ, "DRIFTLINE_WEBHOOK_PORT": "https"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "DRIFTLINE_WEBHOOK_PORT='https'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_operator_collects_garbage_less_often_than_cpython_by_default() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # start-up's objects are left out of the scans
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_shard_names_its_namespaces_comma_separated() -> None:
    config = OperatorConfig.from_env({"DRIFTLINE_SHARD_NAMESPACES": "ml-a, ml-b,,team-*"})
    assert config.shard_namespaces == ("ml-a", "ml-b", "team-*")
    assert OperatorConfig.from_env({}).shard_namespaces == ()


def test_notification_receivers_are_read_and_their_files_checked(tmp_path: Path) -> None:
    env = {
        "DRIFTLINE_NOTIFICATION_RECEIVERS": "oncall=pagerduty,team=teams",
        "DRIFTLINE_NOTIFICATION_DIR": str(tmp_path),
        "DRIFTLINE_PAGERDUTY_URL": "http://127.0.0.1:1/v2/enqueue",
    }
    (tmp_path / "oncall").write_text("R0UT1NG")
    with pytest.raises(
        SettingsError, match=r"DRIFTLINE_NOTIFICATION_DIR=.*no file for receiver team"
    ):
        OperatorConfig.from_env(env)
    (tmp_path / "team").write_text("https://example.invalid/hook")
    config = OperatorConfig.from_env(env)
    assert {r.name: r.type for r in config.receivers.values()} == {
        "oncall": "pagerduty",
        "team": "teams",
    }
    assert config.pagerduty_url == "http://127.0.0.1:1/v2/enqueue"
    with pytest.raises(SettingsError, match="DRIFTLINE_NOTIFICATION_RECEIVERS='x=email'"):
        OperatorConfig.from_env({**env, "DRIFTLINE_NOTIFICATION_RECEIVERS": "x=email"})
    assert OperatorConfig.from_env({}).receivers == {}
