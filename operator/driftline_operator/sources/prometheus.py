"""The sidecars' counters as Prometheus scraped them, turned back into snapshots.

One instant query per collection returns every ``driftline_*`` series of the
monitor's pods (matched by the ``instance`` label, which is ``<pod ip>:<admin
port>`` under Prometheus' pod and endpoint discovery and the Prometheus
Operator's ServiceMonitor). The series of each instance are read into the
same cumulative ``Snapshot`` the sidecar's ``/v1/snapshot`` would have
answered, by the same reader (``driftline_sidecar.contract.reader``),
``process_start_time_seconds`` standing in for the process id and
``driftline_sidecar_info{profile_sha256}`` telling the reference profile, and
``WindowTracker`` differences two collections exactly as it does for the
sidecar source. So both sources give the same integer window for the same
traffic, and one analysis serves both.

Why not ``increase(x[interval])``: Prometheus extrapolates ``increase`` to the
ends of the range (a 30 s range over two 15 s scrapes doubles the one
observed step), so it returns fractional, estimated counts; and successive
ranges evaluated by a timer overlap or leave gaps. Differencing cumulative
values between consecutive collections counts every request exactly once.
Counter resets are detected per pod by a new process start time, as
``increase`` detects them by a decrease.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import aiohttp
from prometheus_client.samples import Sample

from driftline_operator.sources import Collection, PodTarget
from driftline_sidecar.contract.metric_names import PREFIX
from driftline_sidecar.contract.reader import snapshot_from_samples
from driftline_sidecar.contract.snapshot import ProcessInfo, Snapshot

Series = tuple[dict[str, str], float]  # (labels, value)


class PrometheusError(Exception):
    """Prometheus did not answer a query: the whole collection failed."""


def instance_matcher(targets: Sequence[PodTarget]) -> str:
    """``instance=~`...``` matching exactly the targets (a PromQL raw string)."""
    escaped = [_escape(t.address) for t in targets]
    return f"instance=~`{'|'.join(escaped)}`"


def _escape(text: str) -> str:
    return "".join("\\" + c if c in ".[]()*+?{}|^$\\" else c for c in text)


class PrometheusSource:
    def __init__(
        self, url: str, *, timeout: float = 5.0, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session
        self._owns_session = session is None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def query(self, promql: str, *, at: float) -> list[Series]:
        """An instant query's vector as (labels, value) pairs."""
        try:
            async with self._client().get(
                f"{self.url}/api/v1/query",
                params={"query": promql, "time": f"{at:.3f}"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                document = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            raise PrometheusError(f"{self.url}: query {promql!r} failed: {error!r}") from error
        if document.get("status") != "success":
            raise PrometheusError(f"{self.url}: query {promql!r}: {document.get('error')}")
        return [(s["metric"], float(s["value"][1])) for s in document["data"]["result"]]

    async def collect(self, targets: Sequence[PodTarget], *, now: float) -> Collection:
        collection = Collection(taken_at=now)
        if not targets:
            return collection
        match = instance_matcher(targets)
        try:
            counters, starts, up, scraped = await asyncio.gather(
                self.query(f'{{__name__=~"{PREFIX}.+",{match}}}', at=now),
                self.query(f"process_start_time_seconds{{{match}}}", at=now),
                self.query(f"up{{{match}}}", at=now),
                self.query(f"timestamp(up{{{match}}})", at=now),
            )
        except PrometheusError as error:
            collection.unreachable = {t.name: str(error) for t in targets}
            return collection
        by_instance: dict[str, list[Series]] = defaultdict(list)
        for labels, value in counters:
            by_instance[labels.get("instance", "")].append((labels, value))
        start = {labels.get("instance"): value for labels, value in starts}
        health = {labels.get("instance"): value for labels, value in up}
        when = {labels.get("instance"): value for labels, value in scraped}
        for target in targets:
            instance = target.address
            if instance not in health:
                collection.unreachable[target.name] = (
                    f"Prometheus at {self.url} has no scrape of {instance} "
                    "(is it scraping the sidecar's admin port?)"
                )
            elif health[instance] != 1.0:
                collection.unreachable[target.name] = f"Prometheus could not scrape {instance}"
            elif not by_instance.get(instance):
                collection.unreachable[target.name] = f"no driftline_* series from {instance}"
            else:
                collection.snapshots[target.name] = to_snapshot(
                    by_instance[instance],
                    instance=instance,
                    started=start.get(instance, 0.0),
                    taken_at=when.get(instance, now),
                )
        return collection

    async def is_online(self) -> bool:
        try:
            return bool(await self.query("vector(1)", at=0.0))
        except PrometheusError:
            return False

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None


def to_snapshot(
    series: Sequence[Series], *, instance: str, started: float, taken_at: float
) -> Snapshot:
    """One pod's ``driftline_*`` series as the cumulative snapshot the sidecar
    would answer, read by the sidecar's own reader."""
    return snapshot_from_samples(
        (Sample(labels["__name__"], labels, value) for labels, value in series),
        process=ProcessInfo(id=f"{instance}@{started:.3f}", pid=0, start_time=started),
        taken_at=taken_at,
    )
