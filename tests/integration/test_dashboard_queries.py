"""Every PromQL query of the chart's Grafana dashboard returns series from a
real Prometheus (Debian package ``prometheus``) that scrapes real sidecars
(stable and canary, each in front of a real demo model server that sends
Server-Timing, with traffic) and the real operator's /metrics (analysing the
monitor of those sidecars), with the monitor's rules (``driftline rules``)
loaded. The template variables are substituted as Grafana would; the
variables' own ``label_values`` queries must find the monitor, its model and
both versions.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _harness import (
    ApiServer,
    Operator,
    _stop,
    create_monitor,
    free_port,
    monitor,
    read_config_map,
    serve,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import CoreV1Api

from driftline_operator.analysis.rules import rule_file
from driftline_operator.api.spec import spec_from
from driftline_operator.cli.dashboards import CHART_DIR, FILE_NAME

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.prometheus,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus (Debian)"),
]

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PORT = free_port()  # both sidecars' admin port, on 127.0.0.1 and 127.0.0.2 (their pod IPs)
TOKEN = "dashboard-test-token"
NAME = "dash"
SCRAPE = "1s"


def _spec() -> dict[str, Any]:
    example = yaml.safe_load((ROOT / "examples/fraud/modelmonitor.yaml").read_text())["spec"]
    return {
        **example,
        "selector": {"matchLabels": {"app": NAME}},
        "drift": {**example["drift"], "window": "1m", "minSamples": 20},
        "analysis": {"interval": "2s", "timeout": "2s"},
        "sidecar": {"adminPort": ADMIN_PORT},
    }


def _start_pod(core: CoreV1Api, namespace: str, name: str, ip: str, role: str) -> None:
    labels = {"app": NAME, **({"driftline.io/role": "canary"} if role == "canary" else {})}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"driftline.io/injected": "true"},
        },
        "spec": {"containers": [{"name": "model", "image": "registry.local/models/fraud:1"}]},
    }
    core.create_namespaced_pod(namespace, pod)
    running = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    core.patch_namespaced_pod_status(name, namespace, running)


class Traffic:
    """Rows sent through the stable sidecar (which passes the canary's share on)."""

    def __init__(self, proxy: str) -> None:
        self.sent = 0
        self._proxy = proxy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self._proxy, timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                row = {f"f{j}": ((i * 7 + j * 3) % 20 - 10) / 5 for j in range(4)}
                client.post("/predict", json=row)
                self.sent += 1
                i += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture(scope="module")
def world(
    apiserver: ApiServer, operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dashboard")
    api, ns = apiserver.client(), apiserver.namespace
    core = CoreV1Api(api)
    reference = yaml.safe_load((ROOT / "examples/fraud/reference-configmap.yaml").read_text())
    core.create_namespaced_config_map(ns, reference)
    spec = _spec()
    create_monitor(api, ns, monitor(NAME, spec))
    wait_for_ready(api, ns, NAME, status="True", reason="SidecarConfigured")
    rendered = read_config_map(api, ns, f"driftline-{NAME}-sidecar")
    assert rendered is not None
    profile = tmp / "profile.json"
    profile.write_text(reference["data"]["profile.json"])

    processes: list[subprocess.Popen[bytes]] = []
    traffic: Traffic | None = None
    try:
        proxies = {}
        for role, ip, version, seed in (
            ("canary", "127.0.0.2", "v2", "11"),
            ("stable", "127.0.0.1", "v1", "7"),
        ):
            port = free_port()
            command = [sys.executable, "-m", "driftline_operator.cli.demo.model_server"]
            command += ["--port", str(port), "--seed", seed, "--server-timing"]
            model_url = f"http://127.0.0.1:{port}"
            processes.append(serve(command, model_url + "/healthz", tmp / f"model-{role}.log"))
            # The sidecar as injected (the operator's rendered config), on loopback:
            # the canary is reached by URL, not through a Service of the namespace.
            config = yaml.safe_load(rendered["data"]["sidecar.yaml"])
            config["model"].update(version=version, role=role)
            config["profile_path"] = str(profile)
            config["prediction_log"]["path"] = str(tmp / f"predictions-{role}.jsonl")
            config["admin_token_sha256"] = hashlib.sha256(TOKEN.encode()).hexdigest()
            config.pop("namespace", None)
            if role == "stable":
                config["routing"] = {"canary_url": proxies["canary"], "canary_weight": 20}
            path = tmp / f"sidecar-{role}.yaml"
            path.write_text(yaml.safe_dump(config))
            proxy = f"127.0.0.1:{free_port()}"
            command = [sys.executable, "-m", "driftline_sidecar.main", "--config", str(path)]
            command += ["--upstream", model_url, "--listen", proxy]
            command += ["--admin", f"{ip}:{ADMIN_PORT}"]
            admin = f"http://{ip}:{ADMIN_PORT}"
            processes.append(serve(command, admin + "/healthz", tmp / f"sidecar-{role}.log"))
            proxies[role] = f"http://{proxy}"
            _start_pod(core, ns, f"{NAME}-{role}", ip, role)

        rules = tmp / "rules.yaml"
        rules.write_text(
            yaml.safe_dump(rule_file(spec_from({"spec": spec}), namespace=ns, monitor=NAME))
        )
        operator_target = operator.metrics_url.removeprefix("http://").removesuffix("/metrics")
        prometheus_config = {
            "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    # As Kubernetes discovery labels a pod's target: its namespace.
                    "job_name": "driftline-sidecars",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{ADMIN_PORT}", f"127.0.0.2:{ADMIN_PORT}"],
                            "labels": {"namespace": ns},
                        }
                    ],
                },
                {
                    # As the chart's ServiceMonitor: the operator's labels win.
                    "job_name": "driftline-operator",
                    "honor_labels": True,
                    "static_configs": [
                        {"targets": [operator_target], "labels": {"namespace": "driftline"}}
                    ],
                },
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config))
        prometheus = f"http://127.0.0.1:{free_port()}"
        command = [
            "prometheus",
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address={prometheus.removeprefix('http://')}",
        ]
        processes.append(
            serve(command, prometheus + "/-/ready", tmp / "prometheus.log", deadline=120)
        )
        traffic = Traffic(proxies["stable"])
        yield {
            "prometheus": prometheus,
            "namespace": ns,
            "stable_admin": f"http://127.0.0.1:{ADMIN_PORT}",
        }
    finally:
        if traffic is not None:
            traffic.stop()
        for process in reversed(processes):
            _stop(process)


def _dashboard() -> dict[str, Any]:
    return json.loads((CHART_DIR / FILE_NAME).read_text())


def _substitute(expr: str, ns: str) -> str:
    values = {
        "namespace": ns,
        "monitor": NAME,
        "model": "fraud",
        "version": ".*",  # the version variable's All
        "__rate_interval": "20s",
        "__interval": "5s",
    }
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)


def _query(prometheus: str, expr: str, *, over_seconds: float = 0) -> list[dict[str, Any]]:
    """An instant query (a panel's current value), or over the last ``over_seconds``
    (an annotation: Grafana runs those over the dashboard's time range)."""
    if over_seconds:
        now = time.time()
        params = {"query": expr, "start": now - over_seconds, "end": now, "step": 5}
        response = httpx.get(prometheus + "/api/v1/query_range", params=params, timeout=30)
    else:
        response = httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=30)
    document = response.json()
    assert document["status"] == "success", (expr, document)
    return list(document["data"]["result"])


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(title, expr, range in seconds: 0 for an instant query) of every panel and annotation."""
    found = [
        (f"{panel['title']} {target['refId']}", target["expr"], 0.0)
        for panel in dashboard["panels"]
        for target in panel.get("targets") or []
    ]
    found += [
        (a["name"], a["expr"], 300.0) for a in dashboard["annotations"]["list"] if "expr" in a
    ]
    return found


def test_every_query_of_the_dashboard_returns_series(world: dict[str, Any]):
    prometheus, ns = world["prometheus"], world["namespace"]
    dashboard = _dashboard()
    queries = _queries(dashboard)
    assert len(queries) >= 20

    # A rollout step, as the operator's sidecar router would push it, once
    # Prometheus has seen the weight before it.
    before = f'driftline_canary_weight_percent{{namespace="{ns}",role="stable"}} == 20'
    wait_for("a scrape of the first weight", lambda: _query(prometheus, before) or None)
    url = world["stable_admin"] + "/v1/config"
    config = httpx.get(url, timeout=10).json()
    config["routing"] = {**config["routing"], "canary_weight": 50}
    headers = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.put(url, json=config, headers=headers, timeout=10).status_code == 200

    empty: dict[str, str] = {}

    def all_answered() -> bool:
        empty.clear()
        for title, expr, over in queries:
            if not _query(prometheus, _substitute(expr, ns), over_seconds=over):
                empty[title] = expr
        if empty:
            time.sleep(2.0)  # a scrape and an analysis interval
        return not empty

    try:
        wait_for(
            "every dashboard query to return series", lambda: all_answered() or None, deadline=150
        )
    except AssertionError:
        raise AssertionError(f"queries without series: {json.dumps(empty, indent=1)}") from None


def test_the_variables_find_the_monitor_its_model_and_both_versions(world: dict[str, Any]):
    prometheus, ns = world["prometheus"], world["namespace"]
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "monitor", "model", "version"}
    expected = {"namespace": ns, "monitor": NAME, "model": "fraud", "version": {"v1", "v2"}}
    for name, want in expected.items():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name]["query"])
        assert match is not None, variables[name]["query"]
        selector, label = _substitute(match.group(1), ns), match.group(2)

        def values(selector: str = selector, label: str = label) -> set[str] | None:
            response = httpx.get(
                f"{prometheus}/api/v1/label/{label}/values",
                params={"match[]": selector, "start": f"{time.time() - 300:.0f}"},
                timeout=10,
            )
            found = set(response.json()["data"])
            return found or None

        found = wait_for(f"values of the {name} variable", values, deadline=60)
        assert (found >= want) if isinstance(want, set) else (want in found), (name, found)
