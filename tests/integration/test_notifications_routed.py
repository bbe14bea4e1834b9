"""Notifications routed by ModelMonitors, through the operator run for real.

One operator (kopf's runner) is installed with four receivers, each one's
URL or routing key a file as the chart mounts them: Slack, Microsoft Teams,
a generic webhook and PagerDuty (its Events API pointed at loopback), all
served by one real local HTTP server that records what each path got. The
stand-in kubelet (`_kubelet.py`) runs the pods: an image with `bad` in it
fails 30 % of its requests, one with `drift` in it sees a feature's values
all in its reference's top bin. Four monitors start together and progress
side by side: a canary that is promoted, one that is rolled back, a model
whose error-rate SLO breaches and then recovers, and one whose input drifts
and then comes back.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
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
    running_operator,
    start_canary,
    wait_for,
)
from _kubelet import RATE, FakeKubelet, _PodSidecar, _serve
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api

from driftline_operator.controller.tls import write_self_signed
from driftline_sidecar.contract.profile import NumericProfile, ReferenceProfile, SourceInfo
from driftline_sidecar.contract.snapshot import BinCounts, Snapshot

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]

ADMIN_PORT = free_port()  # every fake pod's admin port, on an address of its own
RECEIVERS = {"chat": "slack", "team": "teams", "ci": "webhook", "oncall": "pagerduty"}
# One numeric feature, ten equally likely bins: the drifting model's reference.
PROFILE = ReferenceProfile(
    created_at="2026-01-01T00:00:00Z",
    source=SourceInfo(path="train.parquet", sha256="0" * 64, rows=10_000),
    features={
        "amount": NumericProfile(
            edges=[float(e) for e in range(1, 10)], expected=[0.1] * 10,
            min=0.0, max=10.0, mean=5.0, std=2.9, missing_rate=0.0,
        )
    },
).model_dump_json()  # fmt: skip
PROFILE_SHA256 = hashlib.sha256(PROFILE.encode()).hexdigest()


class _BinningSidecar(_PodSidecar):
    """A pod's sidecar that also bins `amount` against PROFILE: spread evenly,
    or, for an image with `drift` in it, all in the top bin."""

    def __init__(self, *, drifted: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drifted = drifted

    def snapshot(self) -> Snapshot:
        counted = super().snapshot()
        total = int(RATE * (counted.taken_at - self.started)) // 10 * 10
        bins = [0] * 9 + [total] if self.drifted else [total // 10] * 10
        return counted.model_copy(
            update={
                "profile_sha256": PROFILE_SHA256,
                "features": {"amount": BinCounts(counts=bins)},
            }
        )


class BinningKubelet(FakeKubelet):
    """The stand-in kubelet, whose `drifting` pods bin a feature."""

    def serve(self, pod: Any, ip: str) -> Any:
        if (pod.metadata.labels or {}).get("app") != "drifting":
            return super().serve(pod, ip)
        image = pod.spec.containers[0].image
        sidecar = _BinningSidecar(
            model="fraud", role="stable", version="1", bad=False, drifted="drift" in image
        )
        return _serve(ip, ADMIN_PORT, sidecar)


class Receivers:
    """Every receiver's endpoint on one loopback server: (path, body) as POSTed."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.got: list[tuple[str, dict[str, Any]]] = []
        got, lock = self.got, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                with lock:
                    got.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str, monitor: str) -> list[dict[str, Any]]:
        """What `path` got about `monitor` (each shape names it in its own
        fields, all with the namespace: a title, a source, a dedup key)."""
        who = f"{self.namespace}/{monitor}"
        return [body for p, body in list(self.got) if p == path and who in json.dumps(body)]

    def wait(self, path: str, monitor: str, count: int) -> list[dict[str, Any]]:
        """The first `count` bodies `path` gets about `monitor`, once they are there."""

        def arrived() -> list[dict[str, Any]] | None:
            bodies = self.at(path, monitor)
            return bodies[:count] if len(bodies) >= count else None

        return wait_for(f"{count} POSTs to {path} about {monitor}", arrived)


World = tuple[ApiClient, str, Operator, Receivers]


def canary(api: ApiClient, ns: str, app: str, *, image: str, routes: list[Any]) -> None:
    start_canary(
        api, ns, app,
        admin_port=ADMIN_PORT, canary_image=image, rollout={"steps": [50]}, notifications=routes,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    api = apiserver.client()
    ns = apiserver.namespace
    receivers = Receivers(ns)
    tmp = tmp_path_factory.mktemp("operator")
    write_self_signed(tmp / "tls")
    mounted = tmp / "receivers"  # what the chart's projected Secret volume holds
    mounted.mkdir()
    for name, kind in RECEIVERS.items():
        secret = "R0UT1NG" if kind == "pagerduty" else f"{receivers.url}/{kind}/T0KEN"
        (mounted / name).write_text(secret + "\n")
    env = {
        "DRIFTLINE_NOTIFICATION_RECEIVERS": ",".join(f"{n}={k}" for n, k in RECEIVERS.items()),
        "DRIFTLINE_NOTIFICATION_DIR": str(mounted),
        "DRIFTLINE_PAGERDUTY_URL": f"{receivers.url}/v2/enqueue",
    }
    with (
        BinningKubelet(api, ns, admin_port=ADMIN_PORT, model="fraud") as kubelet,
        running_operator(
            apiserver, tmp, cert_dir=tmp / "tls", operator_namespace="driftline-system",
            extra_env=env,
        ) as operator,
    ):  # fmt: skip
        # Everything starts at once and progresses side by side; each test waits for its part.
        canary(api, ns, "promoted", image="model:2", routes=[
            {"receiver": "chat", "events": ["rollout"]},
            {"receiver": "team", "events": ["rollout"]},
            {"receiver": "ci", "events": ["slo", "drift"]},
        ])  # fmt: skip
        canary(api, ns, "failing", image="model:2-bad", routes=[
            {"receiver": "oncall", "minSeverity": "critical"},
            {"receiver": "ci", "events": ["rollout"]},
        ])  # fmt: skip
        AppsV1Api(api).create_namespaced_deployment(
            ns, deployment("breaching", "breaching", image="model:1-bad", replicas=1, canary=False)
        )
        create_monitor(api, ns, monitor("breaching", {
            "selector": {"matchLabels": {"app": "breaching"}},
            "model": {"name": "fraud", "protocol": "json"},
            "analysis": {"interval": "1s", "timeout": "2s"},
            "sidecar": {"adminPort": ADMIN_PORT},
            "slos": [{"name": "errors", "metric": "errorRate", "max": "5%"}],
            "notifications": [
                {"receiver": "pager", "events": ["slo"]},  # not installed
                {"receiver": "oncall", "events": ["slo"], "minSeverity": "critical"},
                {"receiver": "ci", "events": ["slo"]},
                {"receiver": "chat", "events": ["rollout"]},
            ],
        }))  # fmt: skip
        CoreV1Api(api).create_namespaced_config_map(
            ns, {"metadata": {"name": "drifting-ref"}, "data": {"profile.json": PROFILE}}
        )
        AppsV1Api(api).create_namespaced_deployment(
            ns, deployment("drifting", "drifting", image="model:1-drift", replicas=1, canary=False)
        )
        create_monitor(api, ns, monitor("drifting", {
            "selector": {"matchLabels": {"app": "drifting"}},
            "model": {"name": "fraud", "protocol": "json"},
            "reference": {"configMapRef": {"name": "drifting-ref", "key": "profile.json"}},
            "drift": {"window": "2s", "minSamples": 100},
            "analysis": {"interval": "1s", "timeout": "2s"},
            "sidecar": {"adminPort": ADMIN_PORT},
            "notifications": [
                {"receiver": "team", "events": ["drift"], "minSeverity": "warning"},
                {"receiver": "oncall", "minSeverity": "critical"},  # drift is a warning
            ],
        }))  # fmt: skip
        try:
            yield api, ns, operator, receivers
        finally:
            receivers.server.shutdown()
            receivers.server.server_close()
    assert not [e for e in kubelet.errors if "NotFound" not in e], kubelet.errors


def rollout_phase(api: ApiClient, ns: str, name: str, phase: str) -> bool:
    rollout = ((get_monitor(api, ns, name) or {}).get("status") or {}).get("rollout") or {}
    return rollout.get("phase") == phase and not rollout.get("pending")


def test_a_promoted_canary_is_told_to_the_chat_receivers_in_their_shapes(world: World):
    api, ns, _, receivers = world
    wait_for("promoted: Succeeded", lambda: rollout_phase(api, ns, "promoted", "Succeeded"))

    started, promoted = receivers.wait("/slack/T0KEN", "promoted", 2)
    assert started["text"].startswith(
        f"ModelMonitor {ns}/promoted: RolloutStarted: None → Progressing"
    )
    assert promoted["text"].startswith(
        f"ModelMonitor {ns}/promoted: Promoted: Progressing → Succeeded"
    )
    assert promoted["blocks"][0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": f"*ModelMonitor {ns}/promoted: Promoted*"},
    }
    facts = [f["text"] for f in promoted["blocks"][2]["fields"]]
    assert "*Event*\nrollout" in facts and "*Phase*\nSucceeded" in facts

    teams = receivers.wait("/teams/T0KEN", "promoted", 2)
    [attachment] = teams[-1]["attachments"]
    assert teams[-1]["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    title = attachment["content"]["body"][0]
    assert title["text"] == f"ModelMonitor {ns}/promoted: Promoted" and title["color"] == "Good"


def test_a_rolled_back_canary_pages_the_critical_route_once(world: World):
    api, ns, _, receivers = world
    wait_for("failing: Failed", lambda: rollout_phase(api, ns, "failing", "Failed"))

    [page] = receivers.wait("/v2/enqueue", "failing", 1)
    assert page["routing_key"] == "R0UT1NG" and page["event_action"] == "trigger"
    assert page["dedup_key"] == f"driftline/{ns}/failing/rollout"
    assert page["payload"]["severity"] == "critical"
    assert page["payload"]["source"] == f"{ns}/failing"
    assert page["payload"]["summary"].startswith(
        f"ModelMonitor {ns}/failing: RolledBack: Progressing → Failed"
    )
    assert page["payload"]["custom_details"]["Phase"] == "Failed"
    # The generic webhook, routed for rollouts at any severity, heard the start too.
    hooks = receivers.wait("/webhook/T0KEN", "failing", 2)
    assert [(h["reason"], h["state"], h["severity"]) for h in hooks] == [
        ("RolloutStarted", "resolved", "info"),
        ("RolledBack", "firing", "critical"),
    ]
    assert hooks[1]["version"] == "driftline.io/notification/v1"
    assert hooks[1]["dedupKey"] == page["dedup_key"] and hooks[1]["numbers"]["Failures"] == 2


def test_an_slo_breach_and_its_recovery_open_and_close_one_incident(world: World):
    api, ns, _, receivers = world
    [trigger] = receivers.wait("/v2/enqueue", "breaching", 1)
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == f"driftline/{ns}/breaching/slo/errors"
    assert trigger["payload"]["class"] == "slo" and trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["summary"].startswith(f"ModelMonitor {ns}/breaching: SLOBreached")
    details = trigger["payload"]["custom_details"]
    assert details["signal"] == "slo/errors" and details["value"] > 0.05

    fixed = {
        "spec": {"template": {"spec": {"containers": [{"name": "model", "image": "model:1"}]}}}
    }
    AppsV1Api(api).patch_namespaced_deployment("breaching", ns, fixed)
    _, resolve = receivers.wait("/v2/enqueue", "breaching", 2)
    assert resolve == {
        "routing_key": "R0UT1NG",
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    hooks = receivers.wait("/webhook/T0KEN", "breaching", 2)
    assert [(h["reason"], h["state"], h["signal"]) for h in hooks] == [
        ("SLOBreached", "firing", "slo/errors"),
        ("SLORecovered", "resolved", "slo/errors"),
    ]


def test_drift_and_its_end_reach_the_route_that_takes_warnings(world: World):
    api, ns, _, receivers = world
    [detected] = receivers.wait("/teams/T0KEN", "drifting", 1)
    card = detected["attachments"][0]["content"]
    title, text, facts = card["body"]
    assert title["text"] == f"ModelMonitor {ns}/drifting: DriftDetected"
    assert title["color"] == "Warning"
    assert text["text"].startswith("1 of 1 features drifted") and "amount (" in text["text"]
    assert {"title": "driftedShare", "value": "1.0"} in facts["facts"]

    fixed = {
        "spec": {"template": {"spec": {"containers": [{"name": "model", "image": "model:1"}]}}}
    }
    AppsV1Api(api).patch_namespaced_deployment("drifting", ns, fixed)
    _, cleared = receivers.wait("/teams/T0KEN", "drifting", 2)
    title = cleared["attachments"][0]["content"]["body"][0]
    assert title["text"] == f"ModelMonitor {ns}/drifting: DriftCleared" and title["color"] == "Good"


def test_a_route_to_a_receiver_the_operator_lacks_is_reported(world: World):
    api, ns, _, _ = world
    body = get_monitor(api, ns, "breaching") or {}
    conditions = {c["type"]: c for c in body["status"]["conditions"]}
    routed = conditions["NotificationsReady"]
    assert (routed["status"], routed["reason"]) == ("False", "UnknownReceiver")
    assert "spec.notifications[0].receiver 'pager'" in routed["message"]
    assert "(it has: chat, ci, oncall, team)" in routed["message"]
    assert conditions["Ready"]["status"] == "True"  # the monitor works on
    warning, *_ = wait_for(
        "the UnknownReceiver Event",
        lambda: [e for e in events_for(api, ns, "breaching") if e["reason"] == "UnknownReceiver"],
    )
    assert warning["type"] == "Warning" and "'pager'" in warning["message"]
    promoted = get_monitor(api, ns, "promoted") or {}
    ready = next(c for c in promoted["status"]["conditions"] if c["type"] == "NotificationsReady")
    assert (ready["status"], ready["reason"]) == ("True", "ReceiversFound")


def test_receivers_not_routed_for_an_event_kind_got_nothing(world: World):
    """Checked last: by now every notice of these monitors has been delivered."""
    _, _, operator, receivers = world
    assert receivers.at("/webhook/T0KEN", "promoted") == []  # ci takes slo and drift there
    assert receivers.at("/v2/enqueue", "promoted") == []  # not routed
    assert receivers.at("/slack/T0KEN", "failing") == []  # not routed
    assert receivers.at("/slack/T0KEN", "breaching") == []  # chat takes rollouts only
    assert receivers.at("/teams/T0KEN", "breaching") == []
    assert receivers.at("/v2/enqueue", "drifting") == []  # warnings only, below critical
    # The info-level start went to no critical route.
    assert [p["event_action"] for p in receivers.at("/v2/enqueue", "failing")] == ["trigger"]
    log = operator.log.read_text()
    assert "Traceback" not in log and "T0KEN" not in log and "R0UT1NG" not in log
