"""Rollouts driven by the operator for real, on the session's control plane.

The Deployment controller makes the ReplicaSets and pods; a stand-in kubelet
(`_kubelet.py`) runs each pod as a loopback HTTP server answering the
sidecar's `/v1/snapshot` with counts crafted from the pod's image (an image
with `bad` in it fails 30 % of its requests). The operator (kopf's own
runner) collects them, compares canary with stable, and moves traffic with
the `replicas` router. Alerts go to a real local HTTP server.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _harness import (
    ApiServer,
    ControlPlane,
    Operator,
    create_monitor,
    deployment,
    events_for,
    free_port,
    get_monitor,
    monitor,
    read_config_map,
    running_operator,
    start_canary,
    wait_for,
)
from _kubelet import FakeKubelet
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from driftline_operator import kube
from driftline_operator.api.names import GROUP, PLURAL, VERSION
from driftline_operator.controller import tokens
from driftline_operator.controller.tls import write_self_signed

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]

ADMIN_PORT = free_port()  # every fake pod's admin port, on an address of its own


class Alerts:
    """A receiver for the alert hook: records each JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def for_monitor(self, name: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["driftline"]["monitor"] == name]


class RestartableOperator:
    def __init__(self, server: ApiServer, tmp: Path) -> None:
        self.server, self.tmp = server, tmp
        write_self_signed(tmp / "tls")  # one key across restarts, as the chart's Secret
        self._stack = contextlib.ExitStack()
        self.runs = 0

    def start(self) -> Operator:
        self.runs += 1
        run = self.tmp / f"run-{self.runs}"
        run.mkdir()
        return self._stack.enter_context(
            running_operator(
                self.server, run, cert_dir=self.tmp / "tls", operator_namespace="driftline-system"
            )
        )

    def restart(self) -> Operator:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        return self.start()

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiClient, str, RestartableOperator, Alerts]]:
    api = apiserver.client()
    operator = RestartableOperator(apiserver, tmp_path_factory.mktemp("operator"))
    alerts = Alerts()
    with FakeKubelet(api, apiserver.namespace, admin_port=ADMIN_PORT, model="fraud") as kubelet:
        operator.start()
        try:
            yield api, apiserver.namespace, operator, alerts
        finally:
            operator.close()
            alerts.server.shutdown()
            alerts.server.server_close()
            assert not [e for e in kubelet.errors if "NotFound" not in e], kubelet.errors


def canary_world(
    api: ApiClient, ns: str, app: str, *, canary_image: str, alerts: Alerts, **rollout: Any
) -> None:
    start_canary(
        api, ns, app,
        admin_port=ADMIN_PORT, canary_image=canary_image, stable_replicas=4, rollout=rollout,
        alerting={"webhook": {"url": alerts.url}},
    )  # fmt: skip


def rollout_of(api: ApiClient, ns: str, name: str) -> dict[str, Any]:
    return ((get_monitor(api, ns, name) or {}).get("status") or {}).get("rollout") or {}


def wait_for_phase(api: ApiClient, ns: str, name: str, phase: str) -> dict[str, Any]:
    """The phase reached and its actions carried out: a decision is recorded
    (with its actions pending) before it acts, and confirmed after."""

    def reached() -> dict[str, Any] | None:
        rollout = rollout_of(api, ns, name)
        return rollout if rollout.get("phase") == phase and not rollout.get("pending") else None

    return wait_for(f"ModelMonitor {ns}/{name} rollout phase {phase}, carried out", reached)


def at_step(api: ApiClient, ns: str, name: str, step: int) -> bool:
    rollout = rollout_of(api, ns, name)
    return rollout.get("step") == step and not rollout.get("pending")


def replicas(api: ApiClient, ns: str, name: str) -> int:
    return int(AppsV1Api(api).read_namespaced_deployment(name, ns).spec.replicas)


def image(api: ApiClient, ns: str, name: str) -> str:
    return str(
        AppsV1Api(api).read_namespaced_deployment(name, ns).spec.template.spec.containers[0].image
    )


def reasons(api: ApiClient, ns: str, name: str) -> list[str]:
    events = sorted(events_for(api, ns, name), key=lambda e: e.get("firstTimestamp") or "")
    return [e["reason"] for e in events]


def test_a_healthy_canary_is_promoted_step_by_step(world):
    api, ns, _, alerts = world
    canary_world(api, ns, "healthy", canary_image="model:2", alerts=alerts)

    wait_for("step 2 (weight 50), carried out", lambda: at_step(api, ns, "healthy", 1))
    assert (replicas(api, ns, "healthy-v1"), replicas(api, ns, "healthy-v2")) == (2, 2)
    status = wait_for_phase(api, ns, "healthy", "Succeeded")

    assert status["weight"] == 0 and status["failures"] == 0
    assert status["decision"].startswith("Promoted: all 2 steps passed")
    assert image(api, ns, "healthy-v1") == "model:2"  # stable runs the canary's template
    assert replicas(api, ns, "healthy-v1") == 4 and replicas(api, ns, "healthy-v2") == 0
    labels = (
        AppsV1Api(api).read_namespaced_deployment("healthy-v1", ns).spec.template.metadata.labels
    )
    assert "driftline.io/role" not in labels  # promoted pods are stable pods
    seen = reasons(api, ns, "healthy")
    assert {"RolloutStarted", "StepAdvanced", "Promoted"} <= set(seen)
    advanced = next(e for e in events_for(api, ns, "healthy") if e["reason"] == "StepAdvanced")
    assert "error rate canary 0.00%" in advanced["message"]  # the decision's numbers
    phases = [
        (b["driftline"]["previousPhase"], b["driftline"]["phase"])
        for b in alerts.for_monitor("healthy")
    ]
    assert phases == [(None, "Progressing"), ("Progressing", "Succeeded")]
    body = alerts.for_monitor("healthy")[-1]
    assert "Succeeded" in body["text"] and body["blocks"][0]["type"] == "section"


def test_a_failing_canary_is_rolled_back_after_the_failure_limit(world):
    api, ns, _, alerts = world
    canary_world(api, ns, "failing", canary_image="model:2-bad", alerts=alerts)

    status = wait_for_phase(api, ns, "failing", "Failed")

    assert status["failures"] == 2 and status["weight"] == 0
    assert status["decision"].startswith("RolledBack: 2 consecutive failed analyses")
    assert "errorRate" in status["decision"]  # the failing verdict, with its numbers
    body = get_monitor(api, ns, "failing") or {}
    assert body["status"]["phase"] == "Failed"
    assert replicas(api, ns, "failing-v2") == 0 and replicas(api, ns, "failing-v1") == 4
    assert image(api, ns, "failing-v1") == "model:1"
    seen = reasons(api, ns, "failing")
    assert "AnalysisFailed" in seen and "RolledBack" in seen and "Promoted" not in seen
    [*_, last] = alerts.for_monitor("failing")
    assert last["driftline"]["phase"] == "Failed" and last["driftline"]["reason"] == "RolledBack"


def test_a_manual_abort_rolls_back_and_clears_the_annotation(world):
    api, ns, _, alerts = world
    canary_world(api, ns, "aborted", canary_image="model:2", alerts=alerts, interval="1h")
    wait_for_phase(api, ns, "aborted", "Progressing")

    CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "aborted",
        {"metadata": {"annotations": {"driftline.io/rollout": "abort"}}},
    )  # fmt: skip
    status = wait_for_phase(api, ns, "aborted", "Failed")

    assert status["decision"].startswith("Aborted: manual abort at step 1")
    assert replicas(api, ns, "aborted-v2") == 0 and replicas(api, ns, "aborted-v1") == 4
    wait_for(
        "the one-shot annotation to be removed",
        lambda: (
            "driftline.io/rollout"
            not in ((get_monitor(api, ns, "aborted") or {})["metadata"].get("annotations") or {})
        ),
    )


def test_a_restarted_operator_resumes_mid_rollout(world):
    api, ns, operator, alerts = world
    canary_world(
        api, ns, "resumed", canary_image="model:2", alerts=alerts, steps=[25, 50, 75], interval="3s"
    )
    wait_for("step 2", lambda: rollout_of(api, ns, "resumed").get("step") == 1)
    # Restart once the step's Event is out: this test is about resuming, not
    # about Events posted while an operator exits.
    wait_for("the StepAdvanced event", lambda: "StepAdvanced" in reasons(api, ns, "resumed"))

    operator.restart()
    status = wait_for_phase(api, ns, "resumed", "Succeeded")
    # kopf posts a tick's Events after the status write that reports them.
    wait_for("the Promoted event", lambda: "Promoted" in reasons(api, ns, "resumed"))

    seen = reasons(api, ns, "resumed")
    assert seen.count("RolloutStarted") == 1 and "RolloutRestarted" not in seen
    assert seen.count("StepAdvanced") == 2 and seen.count("Promoted") == 1
    assert image(api, ns, "resumed-v1") == "model:2"

    # Once more after the promotion: the operator must not promote again.
    operator.restart()
    before = (get_monitor(api, ns, "resumed") or {})["status"]["lastAnalysisTime"]
    wait_for(
        "two analyses after the restart",
        lambda: (get_monitor(api, ns, "resumed") or {})["status"]["lastAnalysisTime"] > before,
    )
    assert reasons(api, ns, "resumed").count("Promoted") == 1
    assert rollout_of(api, ns, "resumed")["revision"] == status["revision"]


def test_guard_undoes_a_revision_that_breaks_the_slos(world):
    api, ns, _, alerts = world
    apps = AppsV1Api(api)
    guarded = deployment("guarded", "guarded", image="model:1", replicas=2, canary=False)
    apps.create_namespaced_deployment(ns, guarded)
    spec = {
        "selector": {"matchLabels": {"app": "guarded"}},
        "model": {"name": "fraud", "protocol": "json"},
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": ADMIN_PORT},
        "slos": [{"name": "errors", "metric": "errorRate", "max": "5%"}],
        "rollout": {"strategy": "guard", "bakeTime": "1m", "failureLimit": 2},
        "alerting": {"webhook": {"url": alerts.url}},
    }
    create_monitor(api, ns, monitor("guarded", spec))
    baseline = wait_for_phase(api, ns, "guarded", "Succeeded")
    assert baseline["decision"].startswith("BaselineAdopted")

    apps.patch_namespaced_deployment(
        "guarded",
        ns,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "model", "image": "model:1-bad"}]}}
            }
        },
    )
    status = wait_for_phase(api, ns, "guarded", "Failed")

    assert status["decision"].startswith("RolledBack: revision")
    assert f"rolled back to {baseline['revision']}" in status["decision"]
    assert "slo/errors" in status["decision"]  # why, with the numbers
    wait_for(
        "the Deployment's template to be restored", lambda: image(api, ns, "guarded") == "model:1"
    )
    assert status["revision"] == baseline["revision"]
    assert "RolledBack" in reasons(api, ns, "guarded")


def test_conflicting_writes_are_retried(world):
    api, ns, _, _ = world
    create_monitor(api, ns, monitor("conflicted", {
        "selector": {"matchLabels": {"app": "conflicted"}},
        "model": {"name": "fraud"},
        "analysis": {"interval": "1h"},
    }))  # fmt: skip
    custom = CustomObjectsApi(api)
    stale = (get_monitor(api, ns, "conflicted") or {})["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "conflicted", {"metadata": {"labels": {"touched": "yes"}}}
    )
    with pytest.raises(ApiException) as conflict:  # what a write computed from `stale` meets
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, "conflicted",
            {"metadata": {"resourceVersion": stale}, "status": {"lastAnalysisTime": "2000-01-01T00:00:00Z"}},
        )  # fmt: skip
    assert conflict.value.status == 409

    written = kube.patch_status(
        api,
        kube.MONITORS,
        ns,
        "conflicted",
        {"lastAnalysisTime": "2000-01-01T00:00:00Z"},
        resource_version=stale,
    )
    assert written["status"]["lastAnalysisTime"] == "2000-01-01T00:00:00Z"


def test_the_operator_logs_have_no_tracebacks(world):
    _, _, operator, _ = world
    logs = sorted(operator.tmp.glob("run-*/operator.log"))
    assert logs and all("Traceback" not in log.read_text() for log in logs)


def test_shadow_is_rendered_into_the_sidecar_config_and_judged(world):
    api, ns, operator, _ = world
    core = CoreV1Api(api)
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "shadow-v2"},
            "spec": {"selector": {"app": "shadow-v2"}, "ports": [{"name": "http", "port": 8000}]},
        },
    )
    AppsV1Api(api).create_namespaced_deployment(
        ns, deployment("shadow-v1", "shadow", image="model:1", replicas=1, canary=False)
    )
    spec = {
        "selector": {"matchLabels": {"app": "shadow"}},
        "model": {"name": "fraud", "protocol": "json"},
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": ADMIN_PORT},
        "rollout": {
            "strategy": "shadow",
            "shadowService": {"name": "shadow-v2"},
            "shadowPercent": 20,
        },
    }
    create_monitor(api, ns, monitor("shadow", spec))

    def fit_condition() -> dict[str, Any] | None:
        conditions = ((get_monitor(api, ns, "shadow") or {}).get("status") or {}).get("conditions")
        return next((c for c in conditions or [] if c["type"] == "CandidateFit"), None)

    condition = wait_for("the CandidateFit condition", fit_condition)
    # The stand-in sidecars mirror nothing, so there is nothing to judge yet.
    assert (condition["status"], condition["reason"]) == ("Unknown", "InsufficientData")
    config = read_config_map(api, ns, "driftline-shadow-sidecar") or {}
    routing = yaml.safe_load(config["data"]["sidecar.yaml"])["routing"]
    assert routing["shadow_url"] == f"http://shadow-v2.{ns}.svc:8000"  # the named port resolved
    assert routing["shadow_percent"] == 20
    # The sidecars check the token the operator derives again after a restart
    # (only its hash is in the ConfigMap).
    uid = (get_monitor(api, ns, "shadow") or {})["metadata"]["uid"]
    key = tokens.operator_key(operator.tmp / "tls" / "tls.key")
    expected = tokens.admin_token(key, namespace=ns, name="shadow", uid=uid)
    stored = yaml.safe_load(config["data"]["sidecar.yaml"])["admin_token_sha256"]
    assert stored == hashlib.sha256(expected.encode()).hexdigest()
