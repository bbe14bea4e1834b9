"""Notices delivered in the background, so an analysis tick never waits for a receiver.

One queue and one worker task per receiver, shared by every monitor: a slow or
unreachable receiver (5 s timeout, 3 tries, backoff: up to ~20 s a notice)
delays only its own notices, never a tick nor another receiver, and a
receiver gets a monitor's notices in the order they were decided, so a
PagerDuty resolve never overtakes the trigger it closes. A full queue drops
the newest notice, logged and counted as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from driftline_operator.analysis.metrics import OPERATOR_METRICS, OperatorMetrics
from driftline_operator.api.spec import NotificationRoute
from driftline_operator.rollout.notices import recipients
from driftline_operator.rollout.notifications import PAGERDUTY_EVENTS_URL, Notice, Receiver, deliver

QUEUE_SIZE = 100  # notices waiting per receiver


class Notifier:
    def __init__(
        self,
        receivers: Mapping[str, Receiver],
        *,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        pagerduty_url: str = PAGERDUTY_EVENTS_URL,
        metrics: OperatorMetrics = OPERATOR_METRICS,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.receivers = dict(receivers)
        self._logger = logger
        self._pagerduty_url = pagerduty_url
        self._metrics = metrics
        self._queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[Notice]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def send(self, routes: Iterable[NotificationRoute], notices: Iterable[Notice]) -> None:
        """Queue each notice for the receivers its routes name; returns at once.
        A route to a receiver the operator lacks is skipped (the monitor's
        NotificationsReady condition says so)."""
        routes = list(routes)
        for notice in notices:
            for name in recipients(routes, notice):
                receiver = self.receivers.get(name)
                if receiver is None:
                    continue
                try:
                    self._queue(receiver).put_nowait(notice)
                except asyncio.QueueFull:
                    self._metrics.count_notification(
                        notice.namespace, notice.monitor, name, delivered=False
                    )
                    self._logger.warning(
                        f"ModelMonitor {notice.namespace}/{notice.monitor}: the {notice.kind} "
                        f"notification to receiver {name!r} was dropped: "
                        f"{self._queue_size} notices are waiting for it."
                    )

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the queued notices to be delivered."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for queue in list(self._queues.values()):
                    await queue.join()

    async def close(self, *, timeout: float = 5.0) -> None:
        """Deliver what is queued within `timeout`, then stop the workers."""
        await self.drain(timeout)
        for worker in self._workers.values():
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        self._queues.clear()

    def _queue(self, receiver: Receiver) -> asyncio.Queue[Notice]:
        queue = self._queues.get(receiver.name)
        if queue is None:
            queue = self._queues[receiver.name] = asyncio.Queue(self._queue_size)
            self._workers[receiver.name] = asyncio.create_task(
                self._work(receiver, queue), name=f"notifications to {receiver.name}"
            )
        return queue

    async def _work(self, receiver: Receiver, queue: asyncio.Queue[Notice]) -> None:
        while True:
            notice = await queue.get()
            try:
                await deliver(
                    receiver,
                    notice,
                    logger=self._logger,
                    pagerduty_url=self._pagerduty_url,
                    metrics=self._metrics,
                )
            except Exception:  # deliver reports its own failures; this is a bug
                self._logger.exception(f"Notification to receiver {receiver.name!r} failed.")
            finally:
                queue.task_done()
