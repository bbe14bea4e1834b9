"""Leader election through a coordination.k8s.io Lease: only its holder acts.

Why a Lease, not kopf's peering. Kopf's peering (KopfPeering resources,
`--peering`, `--priority`) is a pause switch, not an election: an operator
that sees a peer of higher priority pauses, and peers of *equal* priority all
pause, themselves included (kopf issue #51), so replicas of one Deployment
need distinct priorities (kopf's docs suggest `--priority=$RANDOM`). A peer
that dies without saying goodbye keeps pausing the others until its record's
`lifetime` runs out (60 s by default). And a paused kopf closes its
watch-streams, so its indices go stale: a paused replica would answer the
admission webhook from an index that no longer (or never) saw the
ModelMonitors, and a pod sent to it would start without its sidecar.

So a replica runs two kopf operators (`replica`): one that every replica
runs (the index of ModelMonitors and the webhook, which write nothing) and
one that only the Lease's holder runs (handlers, daemons: everything that
writes). The Lease is the one client-go's leaderelection package keeps, with
its rules:

- the holder renews every `retry_period`; if it cannot for `renew_deadline`,
  or finds another holder, it has lost and must stop acting;
- a standby takes the Lease over when it has seen no change to it for
  `duration` (its own clock: it never compares timestamps written by another
  machine), or at once when the holder released it (no holder);
- every write is a PUT guarded by the resourceVersion just read, so of two
  candidates only one wins;
- `renew_deadline < duration`: the old leader gives up before a standby may
  take over, so two never act at once while the API server answers.

Failover after a SIGKILL therefore takes between `duration` and
`duration + retry_period` (15 to 17 s with the defaults); after a SIGTERM
the leader releases the Lease as it stops, and a standby takes it at its
next attempt (within `retry_period`). `bench/failover.py` measures both.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from driftline_operator import kube

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's three durations, in seconds (defaults 15, 10 and 2)."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeadershipLost(Exception):
    """The holder could not renew the Lease in time, or found another holder."""


def _micro_time(now: datetime.datetime | None = None) -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds, in UTC."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """One candidate for one Lease (`namespace`/`name`), named `identity`."""

    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._timing = timing
        self._clock = clock
        # The Lease as last seen (its resourceVersion) and when, on our clock.
        self._observed_version: str | None = None
        self._observed_at = 0.0

    @property
    def lease(self) -> str:
        return f"Lease {self._namespace}/{self._name}"

    # -- one attempt ------------------------------------------------------------------

    def attempt(self) -> str | None:
        """Acquire or renew the Lease once: None when this candidate holds it
        now, else why not (who holds it, or the API's error)."""
        try:
            return self._attempt()
        except ApiException as error:
            if error.status == 409:
                return "another candidate wrote the Lease first"
            return f"the API server answered {error.status} {error.reason}"
        except (urllib3.exceptions.HTTPError, OSError) as error:
            return f"the API server could not be reached: {error}"

    def _attempt(self) -> str | None:
        current = kube.read(self._api, kube.LEASES, self._namespace, self._name)
        now = _micro_time()
        if current is None:
            created = kube.create(self._api, kube.LEASES, self._manifest(acquired=now, renewed=now))
            self._observe(created)
            return None
        metadata = current.get("metadata") or {}
        spec = current.get("spec") or {}
        version = metadata.get("resourceVersion")
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, self._clock()
        holder = spec.get("holderIdentity") or None
        ours = holder == self.identity
        if holder is not None and not ours:
            duration = spec.get("leaseDurationSeconds") or self._timing.duration
            if self._clock() < self._observed_at + duration:
                return f"held by {holder}"
        transitions = int(spec.get("leaseTransitions") or 0)
        manifest = self._manifest(
            acquired=spec.get("acquireTime", now) if ours else now,
            renewed=now,
            transitions=transitions if ours else transitions + 1,
        )
        manifest["metadata"] = {**metadata, "resourceVersion": version}
        self._observe(kube.replace(self._api, kube.LEASES, manifest))
        return None

    def _observe(self, written: dict[str, Any]) -> None:
        self._observed_version = (written.get("metadata") or {}).get("resourceVersion")
        self._observed_at = self._clock()

    def _manifest(self, *, acquired: str, renewed: str, transitions: int = 0) -> dict[str, Any]:
        return {
            "apiVersion": kube.LEASES.group_version,
            "kind": kube.LEASES.kind,
            "metadata": {"name": self._name, "namespace": self._namespace},
            "spec": {
                "holderIdentity": self.identity,
                # Whole seconds, as the API wants; never shorter than asked.
                "leaseDurationSeconds": max(1, int(-(-self._timing.duration // 1))),
                "acquireTime": acquired,
                "renewTime": renewed,
                "leaseTransitions": transitions,
            },
        }

    # -- the loops ----------------------------------------------------------------------

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Try every `retry_period` until this candidate holds the Lease (True)
        or `stopping` is set (False)."""
        reported: str | None = None
        while not stopping.is_set():
            problem = await asyncio.to_thread(self.attempt)
            if problem is None:
                logger.info(f"{self.identity} holds {self.lease}: acting.")
                return True
            if problem != reported:
                logger.info(f"Standing by: {self.lease} is not ours ({problem}).")
                reported = problem
            await _wait(stopping, self._timing.retry_period)
        return False

    async def keep(self, stopping: asyncio.Event) -> None:
        """Renew every `retry_period` until `stopping` is set; raise
        `LeadershipLost` once another holds the Lease or `renew_deadline` has
        passed since the last renewal (a hung request counts against it)."""
        renewed = self._clock()
        while not await _wait(stopping, self._timing.retry_period):
            left = renewed + self._timing.renew_deadline - self._clock()
            try:
                problem = await asyncio.wait_for(asyncio.to_thread(self.attempt), max(left, 0.0))
            except TimeoutError:
                problem = "no answer from the API server"
            if problem is None:
                renewed = self._clock()
                continue
            if problem.startswith("held by"):
                raise LeadershipLost(f"{self.lease} is {problem}")
            if self._clock() - renewed >= self._timing.renew_deadline:
                raise LeadershipLost(
                    f"{self.lease} not renewed for {self._timing.renew_deadline:g}s: {problem}"
                )
            logger.warning(f"Could not renew {self.lease} ({problem}); retrying.")

    def release(self) -> bool:
        """Give the Lease up at once (no holder, so a standby takes it at its
        next attempt); False when it was not ours or could not be written."""
        try:
            current = kube.read(self._api, kube.LEASES, self._namespace, self._name)
            spec = (current or {}).get("spec") or {}
            if current is None or spec.get("holderIdentity") != self.identity:
                return False
            released = {key: value for key, value in spec.items() if key != "holderIdentity"}
            released.update(leaseDurationSeconds=1, renewTime=_micro_time())
            kube.replace(self._api, kube.LEASES, {**current, "spec": released})
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            logger.warning(f"Could not release {self.lease}: {error}")
            return False
        logger.info(f"{self.identity} released {self.lease}.")
        return True


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; whether it is set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True
