"""The operator's analysis daemon against a real sidecar in front of a real model.

The pod exists only in the API emulator, but its status points at loopback,
where the sidecar runs with the very config the operator rendered into the
ConfigMap. A second injected pod points at an address where nothing listens.
The daemon must collect the first, report the second as unreachable, and
write the window into `.status`. On the shared control plane (conftest.py)
the pod is a real API object, marked running as a kubelet would.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _harness import (
    ApiServer,
    Operator,
    _stop,
    create_monitor,
    events_for,
    free_port,
    get_monitor,
    monitor,
    run_injected_sidecar,
    serve,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import CoreV1Api
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(300)

ADMIN_PORT = free_port()  # the sidecar's admin port, as spec.sidecar.adminPort says


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "driftline_operator.cli.demo.model_server",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    process = serve(command, url + "/healthz", tmp_path_factory.mktemp("model") / "model.log")
    try:
        yield url
    finally:
        _stop(process)


def live_pod(name: str, ip: str, app: str = "live") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": app},
            "annotations": {"driftline.io/injected": "true"},
        },
        "spec": {"containers": [{"name": "model", "image": "registry.local/models/live:1"}]},
    }


def start_pod(core: CoreV1Api, namespace: str, name: str, ip: str, app: str = "live") -> None:
    """Create the pod and mark it running at `ip`, as a kubelet would (kwok-style:
    a bare control plane has no kubelet, and the emulator none either)."""
    core.create_namespaced_pod(namespace, live_pod(name, ip, app))
    running = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    core.patch_namespaced_pod_status(name, namespace, running)


def test_the_daemon_collects_real_sidecars_into_status(
    apiserver: ApiServer, operator: Operator, model: str, tmp_path: Path
):
    api, ns = apiserver.client(), apiserver.namespace
    spec = {
        "selector": {"matchLabels": {"app": "live"}},
        "model": {"name": "live", "protocol": "json"},
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": ADMIN_PORT},
    }
    create_monitor(api, ns, monitor("live", spec))
    wait_for_ready(api, ns, "live", status="True", reason="SidecarConfigured")

    # Run the sidecar exactly as injected: with the config the operator rendered.
    sidecar, proxy = run_injected_sidecar(api, ns, "live", model, tmp_path, admin_port=ADMIN_PORT)
    try:
        core = CoreV1Api(api)
        start_pod(core, ns, "live-0", "127.0.0.1")
        start_pod(core, ns, "live-1", "127.0.0.2")  # nothing listens there

        def requests_seen() -> dict[str, Any] | None:
            with httpx.Client(base_url=f"http://{proxy}", timeout=10) as client:
                for i in range(10):
                    row = {"f0": i / 10, "f1": 0.5, "f2": -0.2, "f3": 1.0}
                    assert client.post("/predict", json=row).status_code == 200
            body = get_monitor(api, ns, "live") or {}
            windows = (body.get("status") or {}).get("windows") or []
            stable = next((w for w in windows if w.get("role") == "stable"), None)
            return body if stable and stable.get("requests", 0) > 0 else None

        body = wait_for("a window with requests in status", requests_seen)
    finally:
        _stop(sidecar)

    status = body["status"]
    assert status["pods"] == {
        "selected": 2,
        "monitored": 2,
        "notInjected": 0,
        "unreachable": ["live-1"],
    }
    assert status["lastAnalysisTime"]
    assert status["phase"] not in ("Pending", "Invalid")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"  # the analysis' conditions did not replace Ready

    # The operator's own /metrics carry the monitor's window and its collection errors.
    metrics = httpx.get(operator.metrics_url, timeout=10).text
    series = [line for line in metrics.splitlines() if 'monitor="live"' in line]
    assert any(line.startswith("driftline_operator_window_requests") for line in series)
    errors = [line for line in series if line.startswith("driftline_operator_collection_errors")]
    assert errors and float(errors[0].rsplit(" ", 1)[1]) >= 1  # live-1 never answers


def test_data_quality_reaches_status_events_metrics_and_slos(
    apiserver: ApiServer, operator: Operator, model: str, tmp_path: Path
):
    """Rows without f1 half the time: the operator reports f1's missing rate in
    status and its metrics, posts DataQualityDegraded, and the missingRate SLO
    breaches, while f0 (always present) stays clean."""
    api, ns = apiserver.client(), apiserver.namespace
    admin_port = free_port()
    features = [{"name": f"f{i}"} for i in range(4)]
    spec = {
        "selector": {"matchLabels": {"app": "dq"}},
        "model": {"name": "dq", "protocol": "json", "features": features},
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": admin_port},
        "dataQuality": {"minRecords": 20, "maxMissingRate": 0.1},
        "slos": [{"name": "inputs-complete", "metric": "missingRate", "max": "10%"}],
    }
    create_monitor(api, ns, monitor("dq", spec))
    wait_for_ready(api, ns, "dq", status="True", reason="SidecarConfigured")
    sidecar, proxy = run_injected_sidecar(api, ns, "dq", model, tmp_path, admin_port=admin_port)
    try:
        start_pod(CoreV1Api(api), ns, "dq-0", "127.0.0.1", app="dq")

        def degraded() -> dict[str, Any] | None:
            with httpx.Client(base_url=f"http://{proxy}", timeout=10) as client:
                for i in range(20):
                    row: dict[str, Any] = {"f0": i / 20, "f1": 0.5, "f2": -0.2, "f3": 1.0}
                    if i % 2:
                        del row["f1"]
                    assert client.post("/predict", json=row).status_code == 200
            body = get_monitor(api, ns, "dq") or {}
            quality = (body.get("status") or {}).get("dataQuality") or {}
            return body if "f1/missingRate" in quality.get("breaches", []) else None

        body = wait_for("f1's missing rate judged in status", degraded)
    finally:
        _stop(sidecar)

    quality = body["status"]["dataQuality"]
    assert quality["status"] == "degraded"
    assert quality["breaches"] == ["f1/missingRate", "schemaErrorRate"]  # absent: both
    by_name = {f["name"]: f for f in quality["features"]}
    assert 0.3 < by_name["f1"]["missingRate"] <= 0.5  # the first window may hold fewer gaps
    assert by_name["f0"]["missingRate"] == 0.0 and by_name["f0"]["breaches"] == []
    assert quality["schemaErrorRate"] > 0  # an absent feature is a schema violation too
    slo = next(s for s in body["status"]["slos"] if s["name"] == "inputs-complete")
    assert slo["verdict"] == "breach" and "missingRate of f1" in slo["message"]
    assert body["status"]["phase"] == "Degraded"

    def warned() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in events_for(api, ns, "dq")
                if e.get("reason") == "DataQualityDegraded" and "f1" in e.get("message", "")
            ),
            None,
        )

    event = wait_for("a DataQualityDegraded Event about f1", warned)
    assert event["type"] == "Warning" and "feature f1: missingRate" in event["message"]

    metrics = httpx.get(operator.metrics_url, timeout=10).text
    series = {
        line.split("{")[0]: line
        for line in metrics.splitlines()
        if 'monitor="dq"' in line and 'feature="f1"' in line
    }
    assert float(series["driftline_operator_feature_missing_ratio"].rsplit(" ", 1)[1]) > 0.3


def test_labels_reach_every_replica_and_join_where_they_were_served(
    apiserver: ApiServer, operator: Operator, model: str, tmp_path: Path
):
    """Two pods serve different requests; `driftline feedback FILE --monitor`
    sends every label to both sidecars, each joins the ids it served, and the
    one id nobody served comes back as unknown, counted once over both pods
    (status and the operator's metrics), not once per pod."""
    api, ns = apiserver.client(), apiserver.namespace
    admin_port = free_port()
    token = "labels-from-the-fraud-team"
    spec = {
        "selector": {"matchLabels": {"app": "labelled"}},
        "model": {
            "name": "labelled",
            "protocol": "json",
            "features": [{"name": f"f{i}"} for i in range(4)],
            "prediction": {"path": "prediction", "score": "probability"},
        },
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": admin_port},
        "quality": {
            "classes": ["ok", "fraud"],
            "positiveClass": "fraud",
            "minLabels": 10,
            "feedbackTokenSha256": hashlib.sha256(token.encode()).hexdigest(),
        },
    }
    create_monitor(api, ns, monitor("labelled", spec))
    wait_for_ready(api, ns, "labelled", status="True", reason="SidecarConfigured")
    sidecars = [
        run_injected_sidecar(
            api, ns, "labelled", model, tmp_path / f"pod{n}", ip=ip, admin_port=admin_port
        )
        for n, ip in enumerate(("127.0.0.1", "127.0.0.2"))
    ]
    try:
        core = CoreV1Api(api)
        for n, ip in enumerate(("127.0.0.1", "127.0.0.2")):
            start_pod(core, ns, f"labelled-{n}", ip, app="labelled")
        served: dict[str, list[str]] = {}
        answers: dict[str, str] = {}
        rows = []
        for n, (_, proxy) in enumerate(sidecars):
            with httpx.Client(base_url=f"http://{proxy}", timeout=10) as client:
                for i in range(15):
                    ident = f"pod{n}-req{i}"
                    row = {"f0": i / 5 - 1.5, "f1": 0.5 * n, "f2": -0.2, "f3": 1.0}
                    answer = client.post("/predict", json=row, headers={"x-request-id": ident})
                    assert answer.status_code == 200
                    answers[ident] = answer.json()["prediction"]
                    rows.append((ident, "fraud" if i % 2 else "ok"))
                    served.setdefault(f"pod{n}", []).append(ident)

        def pending(ip: str) -> float | None:
            text = httpx.get(f"http://{ip}:{admin_port}/metrics", timeout=10).text
            line = next(
                (x for x in text.splitlines() if x.startswith("driftline_labels_pending{")), ""
            )
            return float(line.rsplit(" ", 1)[1]) if line else None

        for ip in ("127.0.0.1", "127.0.0.2"):
            wait_for(f"15 pending predictions at {ip}", lambda ip=ip: pending(ip) == 15 or None)
        labels = tmp_path / "labels.csv"
        lines = ["id,label", *(f"{i},{label}" for i, label in rows), "never-served,ok"]
        labels.write_text("\n".join(lines) + "\n")
        command = [sys.executable, "-m", "driftline_operator.cli.main", "feedback", str(labels)]
        command += ["--monitor", f"{ns}/labelled"]
        env = {
            **os.environ,
            "KUBECONFIG": str(apiserver.kubeconfig),
            "DRIFTLINE_FEEDBACK_TOKEN": token,
        }
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout)
        assert outcome == {
            "sent": 31,
            "joined": 30,
            "not_joined": {"unknown": ["never-served"], "expired": [], "duplicate": []},
        }
        unknown = 0
        for ip in ("127.0.0.1", "127.0.0.2"):
            snapshot = httpx.get(f"http://{ip}:{admin_port}/v1/snapshot", timeout=10).json()
            assert snapshot["labels"]["joined"] == 15  # its own ids, and only those
            unknown += snapshot["labels"]["unknown"]
        assert unknown == 1  # never-served, by one pod: not the other pod's ids

        # The operator merges both pods' labels into the stable role's figures.
        def labelled() -> dict[str, Any] | None:
            status = (get_monitor(api, ns, "labelled") or {}).get("status") or {}
            figures = (status.get("quality") or {}).get("figures") or []
            stable = next((f for f in figures if f["role"] == "stable"), None)
            return stable if stable and stable["labels"] == 30 else None

        stable = wait_for("30 labels in status.quality", labelled)
        assert stable["status"] == "ok" and stable["message"] == "30 labelled predictions"
        right = sum(1 for ident, label in rows if answers[ident] == label)
        assert stable["accuracy"] == pytest.approx(right / 30)
        assert stable["rocAuc"] is not None and 0 <= stable["rocAucBound"] < 0.5
        expected = {"joined": 30, "unknown": 1, "expired": 0, "duplicate": 0}

        def counted_once() -> bool | None:
            status = (get_monitor(api, ns, "labelled") or {}).get("status") or {}
            return (status.get("quality") or {}).get("labels") == expected or None

        wait_for("the labels' outcomes in status, the unknown one counted once", counted_once)

        # The operator's own /metrics carry the same figures per role.
        def scraped() -> dict[tuple[str, str], float] | None:
            text = httpx.get(operator.metrics_url, timeout=10).text
            found = {
                (sample.name, sample.labels.get("role") or sample.labels.get("outcome", "")): (
                    sample.value
                )
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.labels.get("monitor") == "labelled"
            }
            unknown = found.get(("driftline_operator_window_labels", "unknown"))
            return (
                found
                if found.get(("driftline_operator_quality_labels", "stable")) and unknown
                else None
            )

        series = wait_for("the labelled figures in the operator's /metrics", scraped)
        assert series[("driftline_operator_quality_labels", "stable")] == 30
        assert series[("driftline_operator_quality_accuracy", "stable")] == pytest.approx(
            right / 30
        )
        roc_auc = series[("driftline_operator_quality_roc_auc", "stable")]
        assert roc_auc == pytest.approx(stable["rocAuc"])
        assert series[("driftline_operator_window_labels", "unknown")] == 1
        assert series[("driftline_operator_window_labels", "joined")] == 30

        # Without the token: refused, nothing sent.
        env.pop("DRIFTLINE_FEEDBACK_TOKEN")
        refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
        assert refused.returncode == 2 and "no token" in refused.stderr
    finally:
        for process, _ in sidecars:
            _stop(process)
