"""The sidecars' counters as Prometheus scraped them, turned back into snapshots.

One instant query per collection returns every ``driftline_*`` series of the
monitor's pods (matched by the ``instance`` label, which is ``<pod ip>:<admin
port>`` under Prometheus' pod and endpoint discovery and the Prometheus
Operator's ServiceMonitor). The series of each instance are folded into the
same cumulative ``Snapshot`` the sidecar's ``/v1/snapshot`` would have
answered, ``process_start_time_seconds`` standing in for the process id and
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
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import aiohttp
from prometheus_client.samples import Sample

from driftline_operator.sources import Collection, PodTarget
from driftline_sidecar.contract.reader import shadow_counts_from_samples
from driftline_sidecar.contract.snapshot import (
    BinCounts,
    CaptureCounts,
    Histogram,
    ProcessInfo,
    Snapshot,
)

P = "driftline_"
Series = tuple[dict[str, str], float]  # (labels, value)
# CaptureCounts field <- (metric, label, label value)
_CAPTURE: dict[str, tuple[str, str | None, str | None]] = {
    "records": ("capture_records_total", None, None),
    "bodies_parsed": ("capture_bodies_parsed_total", None, None),
    "unparsed": ("capture_skipped_total", "reason", "unparsed"),
    "too_large": ("capture_skipped_total", "reason", "too_large"),
    "dropped": ("capture_dropped_total", "queue", "capture"),
    "log_dropped": ("capture_dropped_total", "queue", "log"),
    "unknown_fields": ("schema_violations_total", "kind", "unknown_field"),
    "wrong_type": ("schema_violations_total", "kind", "wrong_type"),
    "missing_fields": ("schema_violations_total", "kind", "missing_field"),
}


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
                self.query(f'{{__name__=~"{P}.+",{match}}}', at=now),
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
    would answer (the shadow section read by the sidecar's own reader)."""
    values: dict[str, list[tuple[dict[str, str], int]]] = defaultdict(list)
    sums: dict[str, float] = {}
    for labels, value in series:
        name = labels["__name__"].removeprefix(P)
        if name.endswith("_sum"):
            sums[name.removesuffix("_sum")] = value
        elif math.isfinite(value):
            values[name].append((labels, round(value)))
    identity = next(labels for labels, _ in series)
    info = next((labels for labels, _ in series if labels["__name__"] == P + "sidecar_info"), {})

    def total(name: str, label: str | None = None, wanted: str | None = None) -> int:
        return sum(v for labels, v in values[name] if label is None or labels.get(label) == wanted)

    def by(name: str, label: str) -> dict[str, int]:
        found: dict[str, int] = defaultdict(int)
        for labels, v in values[name]:
            found[labels[label]] += v
        return dict(found)

    def histogram(name: str) -> Histogram:
        cumulative = sorted(
            ((float(labels["le"]), v) for labels, v in values[name + "_bucket"]),
            key=lambda pair: pair[0],
        )
        if not cumulative:
            return Histogram()
        bounds = [le for le, _ in cumulative if math.isfinite(le)]
        counts = [
            b - a for (_, a), (_, b) in zip([(0.0, 0), *cumulative], cumulative, strict=False)
        ]
        return Histogram(bounds=bounds, counts=counts, sum=sums.get(name, 0.0))

    def binned(bins: Mapping[str, int], missing: int, out_of_range: int) -> BinCounts:
        counts = [0] * (max((int(b) for b in bins), default=-1) + 1)
        for b, v in bins.items():
            counts[int(b)] = v
        return BinCounts(counts=counts, missing=missing, out_of_range=out_of_range)

    feature_bins: dict[str, dict[str, int]] = defaultdict(dict)
    for labels, v in values["feature_bin_total"]:
        feature_bins[labels["feature"]][labels["bin"]] = v
    prediction_bins = by("prediction_bin_total", "bin")
    return Snapshot(
        process=ProcessInfo(id=f"{instance}@{started:.3f}", pid=0, start_time=started),
        taken_at=taken_at,
        model=identity.get("model", ""),
        version=identity.get("version", ""),
        role=identity.get("role", "stable"),  # type: ignore[arg-type]
        profile_sha256=info.get("profile_sha256", ""),
        requests={code: n for code, n in by("requests_total", "code").items() if n},
        latency=histogram("request_duration_seconds"),
        upstream_latency=histogram("upstream_duration_seconds"),
        request_bytes=total("request_bytes_total"),
        response_bytes=total("response_bytes_total"),
        capture=CaptureCounts(**{k: total(*where) for k, where in _CAPTURE.items()}),
        features={
            name: binned(
                bins,
                total("feature_missing_total", "feature", name),
                total("feature_out_of_range_total", "feature", name),
            )
            for name, bins in feature_bins.items()
        },
        prediction=(
            binned(
                prediction_bins,
                total("prediction_missing_total"),
                total("prediction_out_of_range_total"),
            )
            if prediction_bins
            else None
        ),
        classes={label: n for label, n in by("prediction_class_total", "class").items() if n},
        shadow=shadow_counts_from_samples(Sample(ls["__name__"], ls, v) for ls, v in series),
    )
