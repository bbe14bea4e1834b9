"""``driftline status`` and ``kubectl driftline status`` against the session's
real API server: ModelMonitors with the status and Events an operator writes,
read back as plain text (a pipe), as rich tables (a pseudo-terminal), and
refreshed by ``--watch``."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import ControlPlane, create_monitor, monitor, namespace_on
from kubernetes.client import ApiClient, CoreV1Api

from driftline_operator import kube

NAME = "fraud"
BIN = Path(sys.executable).parent
SPEC = {
    "selector": {"matchLabels": {"app": "fraud"}},
    "model": {"name": "fraud", "port": "http", "protocol": "json"},
    "slos": [
        {"name": "p95", "metric": "latency", "quantile": 0.95, "max": "200ms"},
        {"name": "availability", "metric": "successRate", "objective": "99.9%"},
    ],
    "rollout": {
        "strategy": "canary",
        "stableRef": {"name": "fraud-v1"},
        "canaryRef": {"name": "fraud-v2"},
    },
}
STATUS: dict[str, Any] = {
    "phase": "Progressing",
    "pods": {"selected": 3, "monitored": 3},
    "windows": [
        {
            "role": "stable",
            "seconds": 30,
            "requests": 2400,
            "requestsPerSecond": 80.0,
            "errorRate": 0.0004,
            "p50Ms": 12.0,
            "p95Ms": 41.5,
            "p99Ms": 90.0,
        },
        {
            "role": "canary",
            "seconds": 30,
            "requests": 600,
            "requestsPerSecond": 20.0,
            "errorRate": 0.0,
            "p50Ms": 11.0,
            "p95Ms": 38.2,
            "p99Ms": 70.0,
        },
    ],
    "requestsPerSecond": 80.0,
    "p95Ms": 41.5,
    "errorPercent": 0.04,
    "drift": {
        "status": "drift",
        "driftedShare": 0.5,
        "drifted": 2,
        "features": [
            {
                "name": "amount",
                "method": "psi",
                "score": 0.41,
                "threshold": 0.2,
                "status": "drift",
                "samples": 2400,
            },
            {
                "name": "country",
                "method": "psi",
                "score": 0.27,
                "threshold": 0.2,
                "status": "drift",
                "samples": 2400,
            },
        ],
    },
    "slos": [
        {
            "name": "p95",
            "verdict": "ok",
            "value": 0.0415,
            "objective": 0.2,
            "message": "p95 41.5ms",
        },
        {
            "name": "availability",
            "verdict": "ok",
            "value": 0.9996,
            "objective": 0.999,
            "burnRate": 0.4,
            "message": "success rate 99.96%",
        },
    ],
    "rollout": {
        "phase": "Progressing",
        "step": 2,
        "weight": 50,
        "failures": 0,
        "decision": "StepAdvanced: canary p95 38.2ms, errors 0.00%; weight 25 -> 50",
    },
    "lastAnalysisTime": "2026-12-01T23:00:00Z",
}


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[tuple[ApiClient, str, Path]]:
    with namespace_on(control_plane, "it-status-command") as server:
        api = server.client()
        try:
            create_monitor(api, server.namespace, monitor(NAME, SPEC))
            create_monitor(api, server.namespace, monitor("quiet", {**SPEC, "slos": []}))
            kube.patch_status(api, kube.MONITORS, server.namespace, NAME, STATUS)
            body = kube.get(api, kube.MONITORS, server.namespace, NAME)
            for i, (reason, message) in enumerate(
                [
                    ("StepAdvanced", "canary healthy at step 0; weight 10 -> 25"),
                    (
                        "DriftDetected",
                        "2 of 4 features drifted: amount (psi 0.41), country (psi 0.27)",
                    ),
                    ("StepAdvanced", "canary healthy at step 1; weight 25 -> 50"),
                ]
            ):
                post_event(api, body, reason, message, at=f"2026-12-01T22:5{i}:00Z")
            yield api, server.namespace, server.kubeconfig
        finally:
            api.close()


def post_event(api: ApiClient, body: dict[str, Any], reason: str, message: str, *, at: str) -> None:
    """An Event about the monitor, shaped as kopf posts them."""
    meta = body["metadata"]
    CoreV1Api(api).create_namespaced_event(
        meta["namespace"],
        {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body["apiVersion"],
                "kind": "ModelMonitor",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Normal",
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
            "source": {"component": "driftline"},
        },
    )


def env(kubeconfig: Path) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}


def driftline(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "driftline"), "status", *args],
        capture_output=True,
        text=True,
        env=env(kubeconfig),
        timeout=60,
    )


def test_the_overview_lists_every_monitor_with_its_figures(world):
    _, ns, kubeconfig = world
    result = driftline(kubeconfig, "-n", ns)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ModelMonitors"
    assert lines[1].split() == [
        "NAME",
        "PHASE",
        "REQ/S",
        "P95",
        "ERRORS",
        "DRIFT",
        "SLOS",
        "ROLLOUT",
        "ANALYSED",
    ]
    fraud = next(line for line in lines if line.strip().startswith(NAME))
    for shown in (
        "Progressing",
        "80",
        "41.5 ms",
        "0.04%",
        "drift 2 (amount, country)",
        "2/2 ok, budget 60%",
        "Progressing step 2 at 50%",
        "2026-12-01T23:00:00Z",
    ):
        assert shown in fraud, (shown, fraud)
    quiet = next(line for line in lines if line.strip().startswith("quiet"))
    assert "Pending" in quiet and "never" in quiet


def test_all_namespaces_adds_the_namespace_column(world):
    _, ns, kubeconfig = world
    result = driftline(kubeconfig, "-A")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [ns, NAME] for line in result.stdout.splitlines())


def test_one_monitor_in_detail_with_its_history(world):
    _, ns, kubeconfig = world
    result = driftline(kubeconfig, "-n", ns, NAME)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"ModelMonitor {ns}/{NAME}" in out
    assert "3 monitored of 3 selected" in out
    canary = next(line for line in out.splitlines() if line.strip().startswith("canary"))
    assert canary.split()[:3] == ["canary", "600", "20"]
    assert "Drift: drift, 2 drifted (50.00%)" in out
    availability = next(
        line for line in out.splitlines() if line.strip().startswith("availability")
    )
    assert "0.4" in availability and "60.00%" in availability  # budget left = 1 - burn rate
    assert "Rollout: Progressing" in out
    assert "weight           50%" in out
    assert "StepAdvanced: canary p95 38.2ms" in out
    history = out[out.index("History (Events)") :].splitlines()
    reasons = [line.split()[2] for line in history[2:5]]
    assert reasons == ["StepAdvanced", "DriftDetected", "StepAdvanced"]  # oldest first
    assert "weight 10 -> 25" in history[2] and "weight 25 -> 50" in history[4]


def test_as_a_kubectl_plugin(world):
    _, ns, kubeconfig = world
    if shutil.which("kubectl") is None:
        pytest.skip("needs kubectl on PATH")
    plugin = subprocess.run(
        ["kubectl", "driftline", "status", "-n", ns, NAME],
        capture_output=True,
        text=True,
        env=env(kubeconfig),
        timeout=60,
    )
    assert plugin.returncode == 0, plugin.stderr
    direct = driftline(kubeconfig, "-n", ns, NAME)
    assert plugin.stdout == direct.stdout


def test_rich_tables_on_a_terminal(world):
    _, ns, kubeconfig = world
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "driftline"), "status", "-n", ns],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**env(kubeconfig), "COLUMNS": "200", "TERM": "xterm-256color"},
    )
    os.close(follower)
    screen = read_until(leader, lambda text: process.poll() is not None and "fraud" in text)
    process.wait(timeout=30)
    os.close(leader)
    assert process.returncode == 0, screen
    assert "━" in screen or "─" in screen  # rich's box drawing, not plain text
    assert "fraud" in screen and "Progressing" in screen


def read_until(fd: int, done, timeout: float = 60.0) -> str:
    text, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closed: the process ended
                chunk = b""
            text += chunk.decode("utf-8", "replace")
            if not chunk and done(text):
                return text
        elif done(text):
            return text
    raise AssertionError(f"gave up waiting; read so far:\n{text}")


def test_watch_refreshes_until_interrupted(world):
    api, ns, kubeconfig = world
    command = [str(BIN / "driftline"), "status", "-n", ns, NAME, "--watch", "--interval", "1s"]
    seen: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(kubeconfig)
    ) as process:
        assert process.stdout is not None
        output = process.stdout

        def block() -> str:
            """The next refresh: the lines up to the following '--- ' stamp."""
            lines: list[str] = []
            while True:
                line = output.readline()
                assert line, f"status --watch ended: {''.join(lines)}"
                if line.startswith("--- ") and lines:
                    seen.append("".join(lines))
                    return seen[-1]
                lines.append(line)

        try:
            assert "Rollout: Progressing" in block()
            succeeded = {
                "phase": "Succeeded",
                "rollout": {"phase": "Succeeded", "step": 3, "weight": 100},
            }
            kube.patch_status(api, kube.MONITORS, ns, NAME, succeeded)
            deadline = time.monotonic() + 30
            while "Rollout: Succeeded" not in block():
                assert time.monotonic() < deadline, seen[-1]
            assert "weight           100%" in seen[-1]
        finally:
            process.terminate()
            kube.patch_status(api, kube.MONITORS, ns, NAME, STATUS)
    assert len(seen) >= 2


def test_a_missing_monitor_is_named(world):
    _, ns, kubeconfig = world
    result = driftline(kubeconfig, "-n", ns, "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == f"driftline: error: ModelMonitor {ns}/nope does not exist"
