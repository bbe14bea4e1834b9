"""The background delivery of notices over real loopback HTTP: routed
receivers get them in order, a stuck receiver holds up no other, a full
queue drops (counted), closing delivers what is queued."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from driftline_operator.analysis.metrics import OperatorMetrics
from driftline_operator.api.spec import NotificationRoute
from driftline_operator.rollout.notifications import Notice, parse_receivers
from driftline_operator.rollout.notifier import Notifier
from tests._loopback import serving

BREACH = Notice(
    namespace="ml",
    monitor="fraud",
    kind="slo",
    signal="slo/p95",
    firing=True,
    severity="critical",
    reason="SLOBreached",
    message="SLO p95: 412ms > 200ms",
)
RECOVERY = replace(BREACH, firing=False, reason="SLORecovered")
LOG = logging.getLogger("test-notifier")


@dataclass
class Hooks:
    """Webhook receivers at /<name> on 127.0.0.1; /stuck answers once `release` is set."""

    url: str = ""
    got: dict[str, list[dict]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "stuck":
            await self.release.wait()
        async with self.arrived:
            self.got.setdefault(name, []).append(await request.json())
            self.arrived.notify_all()
        return web.Response(text="ok")

    async def wait_for(self, name: str, count: int) -> list[dict]:
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.got.get(name, [])) >= count)
        return self.got[name]


@pytest_asyncio.fixture
async def hooks(tmp_path: Path) -> AsyncIterator[Hooks]:
    receiver = Hooks()
    async with serving(web.post("/{name}", receiver.handle)) as receiver.url:
        yield receiver
        receiver.release.set()


def notifier(hooks: Hooks, tmp_path: Path, metrics: OperatorMetrics, **options: int) -> Notifier:
    names = ("first", "second", "stuck")
    for name in names:
        (tmp_path / name).write_text(f"{hooks.url}/{name}")
    declared = ",".join(f"{name}=webhook" for name in names)
    receivers = parse_receivers(declared, tmp_path)
    return Notifier(receivers, logger=LOG, metrics=metrics, **options)


def counted(metrics: OperatorMetrics, receiver: str, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "driftline_operator_notifications_total",
        {"namespace": "ml", "monitor": "fraud", "receiver": receiver, "outcome": outcome},
    )


@pytest.mark.asyncio
async def test_routed_receivers_get_each_notice_in_order(hooks: Hooks, tmp_path: Path):
    metrics = OperatorMetrics()
    sender = notifier(hooks, tmp_path, metrics)
    routes = [
        NotificationRoute(receiver="first", events=["slo"]),
        NotificationRoute(receiver="second", events=["drift", "rollout"]),
        NotificationRoute(receiver="missing"),  # not installed: skipped
    ]
    sender.send(routes, [BREACH, RECOVERY])
    await sender.close()
    states = [(b["signal"], b["state"]) for b in hooks.got["first"]]
    assert states == [("slo/p95", "firing"), ("slo/p95", "resolved")]
    assert "second" not in hooks.got  # not routed for SLOs
    assert counted(metrics, "first", "delivered") == 2.0
    assert counted(metrics, "missing", "delivered") is None


@pytest.mark.asyncio
async def test_a_stuck_receiver_holds_up_no_other(hooks: Hooks, tmp_path: Path):
    sender = notifier(hooks, tmp_path, OperatorMetrics())
    routes = [NotificationRoute(receiver="stuck"), NotificationRoute(receiver="first")]
    sender.send(routes, [BREACH])
    sender.send(routes, [RECOVERY])
    assert len(await hooks.wait_for("first", 2)) == 2
    assert "stuck" not in hooks.got  # still waiting for its first answer
    hooks.release.set()
    stuck = await hooks.wait_for("stuck", 2)
    assert [b["state"] for b in stuck] == ["firing", "resolved"]  # the resolve came second
    await sender.close()


@pytest.mark.asyncio
async def test_a_full_queue_drops_and_counts_the_newest(
    hooks: Hooks, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    metrics = OperatorMetrics()
    sender = notifier(hooks, tmp_path, metrics, queue_size=1)
    routes = [NotificationRoute(receiver="first")]
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        sender.send(routes, [BREACH, RECOVERY])  # the worker has not started yet
    assert "the slo notification to receiver 'first' was dropped" in caplog.text
    assert counted(metrics, "first", "failed") == 1.0
    await sender.close()
    assert [b["state"] for b in hooks.got["first"]] == ["firing"]
    assert counted(metrics, "first", "delivered") == 1.0


@pytest.mark.asyncio
async def test_close_gives_up_on_a_stuck_receiver_after_its_timeout(hooks: Hooks, tmp_path: Path):
    sender = notifier(hooks, tmp_path, OperatorMetrics())
    sender.send([NotificationRoute(receiver="stuck")], [BREACH])
    await sender.close(timeout=0.2)  # returns; the stuck delivery is cancelled
    assert "stuck" not in hooks.got
