"""How one replica of the operator runs: a part every replica serves, a part
only the leader runs, and the Lease that says who leads (`election`).

- Serving (every replica, from start to exit): a kopf operator with the
  index of ModelMonitors and the admission webhook (`handlers.SERVING`),
  plus kopf's liveness endpoint. It writes nothing, so any number of
  replicas serve side by side, the chart's Service spreads webhook calls over
  all of them, and a pod is injected the same whichever one answers, before,
  during and after a failover.
- Acting (the Lease's holder only): a second kopf operator with everything
  that writes (`handlers.ACTING`: reconcile, cleanup, the analysis daemon).
  A standby starts it when it takes the Lease over.

Each kopf operator runs in a thread with an event loop of its own: kopf
cancels every task of its loop when it stops, so two operators must not share
one. The main thread keeps the Lease and the signals.

Stopping. SIGTERM: the acting operator stops (its daemons finish their
tick), the Lease is released so a standby takes over at its next attempt,
the webhook is still served for `shutdown_drain_seconds` (the pod leaves the
Service's endpoints meanwhile), then the process exits 0. A lost Lease
(not renewed in time, or another holder): the acting operator is given
until a standby may take over to stop, else the process is ended at once;
either way it exits 1 and the kubelet restarts it as a standby. Either
kopf operator ending by itself ends the replica the same way, with exit
status 1, releasing the Lease if it was held.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Awaitable, Collection
from dataclasses import dataclass
from typing import Any

import kopf

from driftline_operator import kube
from driftline_operator.controller import handlers
from driftline_operator.controller.election import LeadershipLost, LeaseElector, LeaseTiming
from driftline_operator.controller.settings import OperatorConfig

logger = logging.getLogger(__name__)

# How long a stopping acting operator may take on SIGTERM before the replica
# gives up waiting (kopf itself gives daemons their cancellation_timeout).
ACTING_STOP_SECONDS = 20.0


@dataclass(frozen=True)
class Scope:
    """What kopf serves: every namespace, or these ones."""

    namespaces: Collection[str] = ()

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


class _SignalsAreOurs(logging.Filter):
    """Drops kopf's warning that a thread gets no OS signals: the main thread
    takes them and stops each operator through its stop flag."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "OS signals are ignored" not in record.getMessage()


class KopfThread:
    """One kopf operator, run by kopf's own runner in a thread of its own."""

    def __init__(
        self,
        name: str,
        *,
        registry: kopf.OperatorRegistry,
        memo: kopf.Memo,
        scope: Scope,
        liveness: str | None = None,
    ) -> None:
        self.name = name
        self._registry = registry
        self._memo = memo
        self._scope = scope
        self._liveness = liveness
        self._stop_flag = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kopf-{name}", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.exited = asyncio.Event()  # set in the supervisor's loop when the thread ends

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def stop(self) -> None:
        self._stop_flag.set()

    @property
    def started(self) -> bool:
        return self._thread.is_alive() or self.exited.is_set()

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=self._registry,
                    clusterwide=self._scope.clusterwide,
                    namespaces=list(self._scope.namespaces),
                    standalone=True,  # the Lease coordinates replicas, not kopf's peering
                    liveness_endpoint=self._liveness,
                    stop_flag=self._stop_flag,
                    memo=self._memo,
                )
            )
        except BaseException:
            logger.exception(f"The {self.name} kopf operator failed.")
        finally:
            if not self._stop_flag.is_set():
                logger.error(f"The {self.name} kopf operator ended by itself.")
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.exited.set)


def identity(config: OperatorConfig) -> str:
    """This process's name in the Lease: the pod's name (or the host's) and a
    suffix of its own, so a restarted container is a new candidate."""
    return f"{config.pod_name or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def elector_for(config: OperatorConfig) -> LeaseElector | None:
    if config.lease_name is None:
        return None
    assert config.namespace is not None  # settings refuse a Lease without a namespace
    return LeaseElector(
        kube.connect(),
        namespace=config.namespace,
        name=config.lease_name,
        identity=identity(config),
        timing=LeaseTiming(
            duration=config.lease_duration_seconds,
            renew_deadline=config.lease_renew_deadline_seconds,
            retry_period=config.lease_retry_period_seconds,
        ),
    )


async def run(config: OperatorConfig, *, scope: Scope, liveness: str, dev: bool) -> int:
    """Run this replica until SIGTERM/SIGINT (0) or until it must stop (1)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    logging.getLogger("kopf._core.reactor.running").addFilter(_SignalsAreOurs())
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopping.set)

    serving = KopfThread(
        "serving",
        registry=handlers.SERVING,
        memo=kopf.Memo(config=config, dev=dev),
        scope=scope,
        liveness=liveness,
    )
    # A shard acts in its own namespaces (if it names them), and serves all.
    acting_scope = Scope(namespaces=config.shard_namespaces) if config.shard_namespaces else scope
    acting = KopfThread(
        "acting", registry=handlers.ACTING, memo=kopf.Memo(config=config), scope=acting_scope
    )
    elector = elector_for(config)
    serving.start()
    try:
        return await _lead_or_stand_by(
            elector, serving=serving, acting=acting, stopping=stopping, config=config
        )
    finally:
        if stopping.is_set() and config.shutdown_drain_seconds:
            logger.info(f"Serving the webhook {config.shutdown_drain_seconds:g}s more.")
            await _first(serving.exited.wait(), asyncio.sleep(config.shutdown_drain_seconds))
        serving.stop()
        await serving.exited.wait()


async def _lead_or_stand_by(
    elector: LeaseElector | None,
    *,
    serving: KopfThread,
    acting: KopfThread,
    stopping: asyncio.Event,
    config: OperatorConfig,
) -> int:
    if elector is not None:
        acquiring = asyncio.create_task(elector.acquire(stopping))
        await _first(acquiring, serving.exited.wait())
        if not acquiring.done() or acquiring.cancelled():
            return 1  # the serving operator ended: this replica is of no use
        if not acquiring.result():
            return 0  # stopped while standing by
    acting.start()
    keeping = elector.keep(stopping) if elector is not None else stopping.wait()
    try:
        await _first(keeping, serving.exited.wait(), acting.exited.wait())
    except LeadershipLost as lost:
        logger.error(f"Lost the leadership, stopping: {lost}")
        acting.stop()
        margin = config.lease_duration_seconds - config.lease_renew_deadline_seconds
        if not await _within(acting.exited.wait(), margin):
            logger.error("The acting operator did not stop before a standby may act: exiting.")
            logging.shutdown()
            os._exit(1)
        return 1
    acting.stop()
    if not await _within(acting.exited.wait(), ACTING_STOP_SECONDS):
        logger.error(f"The acting operator did not stop within {ACTING_STOP_SECONDS:g}s.")
        logging.shutdown()
        os._exit(1)  # the Lease expires on its own: a standby takes over after its duration
    if elector is not None:
        await asyncio.to_thread(elector.release)
    return 0 if stopping.is_set() else 1


async def _first(*awaitables: Awaitable[Any]) -> Any:
    """The result of whichever awaitable finishes first (its exception, if it
    raised); the others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _within(awaitable: Awaitable[Any], seconds: float) -> bool:
    """Whether `awaitable` finished within `seconds`."""
    try:
        await asyncio.wait_for(awaitable, max(seconds, 0.0))
    except TimeoutError:
        return False
    return True
