"""Receivers' payload shapes (Teams, PagerDuty Events v2, generic webhook,
Slack) and delivery over real loopback HTTP: retries, timeouts, failures."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from driftline_operator.analysis.metrics import OperatorMetrics
from driftline_operator.rollout import notifications
from driftline_operator.rollout.notifications import Notice, Receiver, ReceiverError
from tests._loopback import serving

DRIFT = Notice(
    namespace="ml",
    monitor="fraud",
    kind="drift",
    signal="drift",
    firing=True,
    severity="warning",
    reason="DriftDetected",
    message="3 of 10 features drifted (30%, threshold 25%): amount psi 0.41",
    numbers={"driftedShare": 0.3, "threshold": 0.25},
)


def test_teams_gets_a_message_with_one_adaptive_card():
    sent = notifications.teams(DRIFT)
    assert sent["type"] == "message"
    [attachment] = sent["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    title, text, facts = card["body"]
    assert title["text"] == "ModelMonitor ml/fraud: DriftDetected"
    assert title["color"] == "Warning"
    assert text["text"] == DRIFT.message and text["wrap"] is True
    assert {"title": "driftedShare", "value": "0.3"} in facts["facts"]
    assert {"title": "Event", "value": "drift"} in facts["facts"]
    recovered = notifications.teams(replace(DRIFT, firing=False, reason="DriftCleared"))
    assert recovered["attachments"][0]["content"]["body"][0]["color"] == "Good"


def test_pagerduty_triggers_and_resolves_the_same_incident():
    trigger = notifications.pagerduty(DRIFT, "R0UT1NG")
    assert trigger["routing_key"] == "R0UT1NG" and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "driftline/ml/fraud/drift"
    event = trigger["payload"]
    assert event["severity"] in ("critical", "error", "warning", "info")
    assert event["summary"].startswith("ModelMonitor ml/fraud: DriftDetected: 3 of 10")
    assert event["source"] == "ml/fraud" and event["component"] == "fraud"
    assert event["custom_details"] == {"signal": "drift", "driftedShare": 0.3, "threshold": 0.25}
    resolve = notifications.pagerduty(replace(DRIFT, firing=False), "R0UT1NG")
    assert resolve == {
        "routing_key": "R0UT1NG",
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    # Another signal of the same monitor is another incident.
    slo = replace(DRIFT, kind="slo", signal="slo/latency")
    assert notifications.pagerduty(slo, "k")["dedup_key"] == "driftline/ml/fraud/slo/latency"
    # PagerDuty's 1024-character summary limit.
    long = notifications.pagerduty(replace(DRIFT, message="x" * 5000), "k")
    assert len(long["payload"]["summary"]) == 1024


def test_the_generic_webhook_is_plain_documented_json():
    sent = notifications.webhook(DRIFT)
    assert sent == {
        "version": "driftline.io/notification/v1",
        "event": "drift",
        "signal": "drift",
        "state": "firing",
        "severity": "warning",
        "namespace": "ml",
        "monitor": "fraud",
        "reason": "DriftDetected",
        "message": DRIFT.message,
        "numbers": {"driftedShare": 0.3, "threshold": 0.25},
        "dedupKey": "driftline/ml/fraud/drift",
    }
    assert json.loads(json.dumps(sent)) == sent


def test_slack_keeps_its_incoming_webhook_shape():
    sent = notifications.slack(DRIFT)
    assert sent["text"].startswith("ModelMonitor ml/fraud: DriftDetected: 3 of 10")
    fields = [f["text"] for f in sent["blocks"][2]["fields"]]
    assert "*driftedShare*\n0.3" in fields and len(fields) <= 10


def test_receivers_are_parsed_from_the_charts_declaration(tmp_path: Path):
    receivers = notifications.parse_receivers(" oncall=pagerduty, team=teams,,", tmp_path)
    assert receivers == {
        "oncall": Receiver("oncall", "pagerduty", tmp_path / "oncall"),
        "team": Receiver("team", "teams", tmp_path / "team"),
    }
    with pytest.raises(ReceiverError, match=r"receiver 'ops=email'.*slack, teams, pagerduty"):
        notifications.parse_receivers("ops=email", tmp_path)
    with pytest.raises(ReceiverError, match="receiver 'a' is declared twice"):
        notifications.parse_receivers("a=slack,a=teams", tmp_path)
    with pytest.raises(ReceiverError, match="receiver 'oncall': cannot read its Secret file"):
        receivers["oncall"].secret()
    (tmp_path / "team").write_text("  \n")
    with pytest.raises(ReceiverError, match=r"receiver 'team': its Secret file .* is empty"):
        receivers["team"].secret()


class Loopback:
    """A real HTTP receiver on 127.0.0.1 answering each POST with the next status."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.statuses: list[int] = []
        self.url = ""
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.paths.append(request.path)
        await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else 202
        return web.Response(status=status, text="nope" if status >= 300 else "ok")


@pytest_asyncio.fixture
async def loopback() -> AsyncIterator[Loopback]:
    receiver = Loopback()
    async with serving(web.post("/{tail:.*}", receiver.handle)) as receiver.url:
        yield receiver


def delivered(metrics: OperatorMetrics, receiver: str, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "driftline_operator_notifications_total",
        {"namespace": "ml", "monitor": "fraud", "receiver": receiver, "outcome": outcome},
    )


@pytest.mark.asyncio
async def test_each_type_is_posted_to_its_url_read_from_the_mounted_file(
    loopback: Loopback, tmp_path: Path
):
    (tmp_path / "team").write_text(f"{loopback.url}/teams/T0KEN\n")
    (tmp_path / "oncall").write_text("R0UT1NG\n")
    (tmp_path / "any").write_text(f"{loopback.url}/hook")
    receivers = notifications.parse_receivers("team=teams,oncall=pagerduty,any=webhook", tmp_path)
    metrics = OperatorMetrics()
    log = logging.getLogger("test-notifications")
    for name in ("team", "oncall", "any"):
        assert await notifications.deliver(
            receivers[name], DRIFT, logger=log, metrics=metrics,
            pagerduty_url=f"{loopback.url}/v2/enqueue",
        )  # fmt: skip
        assert delivered(metrics, name, "delivered") == 1.0
    assert loopback.paths == ["/teams/T0KEN", "/v2/enqueue", "/hook"]
    teams, pager, hook = loopback.bodies
    assert teams["type"] == "message"
    assert pager["routing_key"] == "R0UT1NG" and pager["event_action"] == "trigger"
    assert hook["event"] == "drift" and hook["state"] == "firing"


@pytest.mark.asyncio
async def test_a_5xx_is_retried_and_a_4xx_is_not(loopback: Loopback, tmp_path: Path):
    (tmp_path / "any").write_text(f"{loopback.url}/hook")
    [receiver] = notifications.parse_receivers("any=webhook", tmp_path).values()
    metrics = OperatorMetrics()
    log = logging.getLogger("test-notifications")
    loopback.statuses = [503, 429]
    assert await notifications.deliver(receiver, DRIFT, logger=log, metrics=metrics)
    assert len(loopback.bodies) == 3
    loopback.statuses = [400]
    assert not await notifications.deliver(receiver, DRIFT, logger=log, metrics=metrics)
    assert len(loopback.bodies) == 4  # not retried
    assert delivered(metrics, "any", "delivered") == 1.0
    assert delivered(metrics, "any", "failed") == 1.0


@pytest.mark.asyncio
async def test_failures_are_logged_and_counted_never_raised_nor_leak_the_url(
    loopback: Loopback, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    (tmp_path / "team").write_text(f"{loopback.url}/teams/S3CRET")
    receivers = notifications.parse_receivers("team=teams,gone=slack", tmp_path)
    metrics = OperatorMetrics()
    log = logging.getLogger("test-notifications")
    loopback.statuses = [500, 500, 500]
    with caplog.at_level(logging.WARNING, logger="test-notifications"):
        assert not await notifications.deliver(
            receivers["team"], DRIFT, logger=log, metrics=metrics
        )
        assert not await notifications.deliver(
            receivers["gone"], DRIFT, logger=log, metrics=metrics
        )
    assert len(loopback.bodies) == 3  # bounded: ATTEMPTS tries
    assert "receiver 'team' (teams) was not delivered" in caplog.text
    assert "receiver 'gone': cannot read its Secret file" in caplog.text
    assert "S3CRET" not in caplog.text
    assert delivered(metrics, "team", "failed") == delivered(metrics, "gone", "failed") == 1.0
    metrics.forget("ml", "fraud")
    assert delivered(metrics, "team", "failed") is None


@pytest.mark.asyncio
async def test_a_receiver_that_hangs_times_out(loopback: Loopback, tmp_path: Path):
    (tmp_path / "any").write_text(f"{loopback.url}/hook")
    [receiver] = notifications.parse_receivers("any=webhook", tmp_path).values()
    metrics = OperatorMetrics()
    loopback.delay = 30.0
    sent = await notifications.deliver(
        receiver, DRIFT, logger=logging.getLogger("test-notifications"), metrics=metrics,
        timeout=0.2, attempts=2,
    )  # fmt: skip
    assert sent is False and len(loopback.bodies) == 2
    assert delivered(metrics, "any", "failed") == 1.0


@pytest.mark.asyncio
async def test_a_malformed_url_is_reported_without_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    (tmp_path / "team").write_text("hooks.example/S3CRET")
    [receiver] = notifications.parse_receivers("team=slack", tmp_path).values()
    log = logging.getLogger("test-notifications")
    with caplog.at_level(logging.WARNING, logger="test-notifications"):
        sent = await notifications.deliver(receiver, DRIFT, logger=log, metrics=OperatorMetrics())
    assert sent is False
    assert "holds no valid URL" in caplog.text and "S3CRET" not in caplog.text
