"""Analysis benchmark: CPU per interval for one ModelMonitor, 20 pods x 50 features.

    .venv/bin/python bench/analysis.py [--pods 20] [--features 50] [--intervals 25]

Everything ``MonitorRunner.run`` does except the network: the snapshots come
from memory (an in-memory source answering parsed snapshots), the drift
window is in steady state (10m of 30s intervals: 20 windows merged), every
feature numeric with 10 bins plus a prediction score, and four SLOs. Prints
the median CPU time (``time.process_time``) per interval for each stage,
next to the target of issue 14 (<= 10 ms; issue 4 asked < 200 ms), and as a
ratio to the baseline: parsing the 20 snapshot JSON documents, which any
analysis has to do.
The garbage collector is tuned as the operator tunes it
(``controller.main.tune_garbage_collector``) unless ``--default-gc``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from driftline_operator.analysis.judge import Analysis, DriftWindow, Memory, analyze
from driftline_operator.analysis.metrics import OperatorMetrics
from driftline_operator.analysis.runner import MonitorRunner
from driftline_operator.analysis.windows import Window, WindowTracker
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.controller.main import tune_garbage_collector
from driftline_operator.sources import Collection, PodTarget
from driftline_sidecar.contract.profile import NumericProfile, ReferenceProfile, SourceInfo
from driftline_sidecar.contract.snapshot import LATENCY_BUCKETS, BinCounts, ProcessInfo, Snapshot

TARGET_MS = 10.0  # issue 14: 3,000 such monitors per core at a 30 s interval
INTERVAL = 30.0
BINS = 10
RATE = 50.0  # requests per second per pod
T = TypeVar("T")


def profile(features: int) -> ReferenceProfile:
    edges = [float(e) for e in np.linspace(-2, 2, BINS - 1)]
    numeric = NumericProfile(
        edges=edges, expected=[1 / BINS] * BINS, min=-4, max=4, mean=0, std=1, missing_rate=0.0
    )
    return ReferenceProfile(
        created_at="2024-01-01T00:00:00Z",
        source=SourceInfo(path="train.parquet", sha256="0" * 64, rows=100_000),
        features={f"feature_{i:02d}": numeric for i in range(features)},
        prediction=numeric,
    )


def spec() -> ModelMonitorSpec:
    return ModelMonitorSpec.model_validate(
        {
            "selector": {"matchLabels": {"app": "fraud"}},
            "model": {"name": "fraud"},
            "drift": {"window": "10m", "minSamples": 100},
            "slos": [
                {"name": "p95", "metric": "latency", "quantile": 0.95, "max": "200ms"},
                {"name": "availability", "metric": "successRate", "objective": "99.9%"},
                {"name": "drift", "metric": "driftedFeatureShare", "max": 0.3},
                {"name": "scores", "metric": "predictionDrift", "max": 0.1},
            ],
        }
    )


class Fleet:
    """Cumulative snapshots of ``pods`` sidecars, advanced one interval at a time."""

    def __init__(self, pods: int, features: int, *, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.pods = [f"fraud-{i:02d}" for i in range(pods)]
        self.features = features
        self.now = 1_700_000_000.0
        self.current = {pod: self._empty(pod) for pod in self.pods}

    def _empty(self, pod: str) -> Snapshot:
        return Snapshot(
            process=ProcessInfo(id=pod, pid=1, start_time=self.now - 3600),
            taken_at=self.now,
            model="fraud",
            version="v1",
            role="stable",
            requests={"200": 0, "500": 0},
            features={
                f"feature_{i:02d}": BinCounts(counts=[0] * BINS) for i in range(self.features)
            },
            prediction=BinCounts(counts=[0] * BINS),
        )

    def advance(self) -> dict[str, str]:
        """One interval of traffic on every pod; returns the JSON each pod would answer."""
        self.now += INTERVAL
        documents = {}
        n = int(RATE * INTERVAL)
        for pod, before in self.current.items():
            data = before.model_dump()
            data["taken_at"] = self.now
            data["requests"]["200"] += n - 1
            data["requests"]["500"] += 1
            latency = np.searchsorted(
                LATENCY_BUCKETS, self.rng.lognormal(np.log(0.02), 0.5, n), side="left"
            )
            counts = np.bincount(latency, minlength=len(LATENCY_BUCKETS) + 1)
            data["latency"]["counts"] = (np.asarray(data["latency"]["counts"]) + counts).tolist()
            data["latency"]["sum"] += 0.02 * n
            for feature in data["features"].values():
                feature["counts"] = (
                    np.asarray(feature["counts"]) + self.rng.multinomial(n, [1 / BINS] * BINS)
                ).tolist()
            data["prediction"]["counts"] = (
                np.asarray(data["prediction"]["counts"])
                + self.rng.multinomial(n, [1 / BINS] * BINS)
            ).tolist()
            snapshot = Snapshot.model_validate(data)
            self.current[pod] = snapshot
            documents[pod] = snapshot.model_dump_json()
        return documents


class MemorySource:
    """A metrics source answering documents prepared in memory (parsing them, as
    the sidecar source does)."""

    def __init__(self) -> None:
        self.documents: dict[str, str] = {}

    async def collect(self, targets: Sequence[PodTarget], *, now: float) -> Collection:
        snapshots = {t.name: Snapshot.model_validate_json(self.documents[t.name]) for t in targets}
        return Collection(taken_at=now, snapshots=snapshots)

    async def is_online(self) -> bool:
        return True

    async def close(self) -> None:
        pass


def cpu_ms(work: Callable[[], T]) -> tuple[float, T]:
    start = time.process_time()
    result = work()
    return (time.process_time() - start) * 1000, result


# -- the benchmark ---------------------------------------------------------------


STAGES = (
    "parse 20 snapshot JSON documents (baseline)",
    "windows: delta x pods + merge per role",
    "drift window: add + merge 20 intervals",
    "analyze: drift (50+1 features), SLOs, status",
    "MonitorRunner.run, all of it (no network)",
)


class Bench:
    def __init__(self, pods: int, features: int) -> None:
        self.fleet = Fleet(pods, features)
        self.reference = profile(features)
        self.spec = spec()
        self.targets = [PodTarget(name=p, ip="10.0.0.1", admin_port=9090) for p in self.fleet.pods]
        self.source = MemorySource()
        self.runner = MonitorRunner(
            "bench", "fraud", metrics=OperatorMetrics(), source_factory=lambda m, t: self.source
        )
        self.tracker, self.ring = WindowTracker(), DriftWindow(seconds=600)
        self.loop = asyncio.new_event_loop()
        self.last: Analysis | None = None

    def interval(self) -> tuple[float, ...]:
        documents = self.fleet.advance()
        self.source.documents = documents
        now = self.fleet.now
        t_parse, parsed = cpu_ms(
            lambda: {p: Snapshot.model_validate_json(d) for p, d in documents.items()}
        )
        t_windows, windows = cpu_ms(
            lambda: self.tracker.advance(Collection(taken_at=now, snapshots=parsed)).roles
        )
        t_ring, drift_window = cpu_ms(lambda: self._ring(windows))
        t_analyze, self.last = cpu_ms(
            lambda: analyze(
                spec=self.spec,
                windows=windows,
                drift_window=drift_window,
                profile=self.reference,
                previous=Memory(),
                now=now,
            )
        )
        t_run, _ = cpu_ms(
            lambda: self.loop.run_until_complete(
                self.runner.run(spec=self.spec, pods=self.targets, profile=self.reference, now=now)
            )
        )
        return t_parse, t_windows, t_ring, t_analyze, t_run

    def _ring(self, windows: dict[str, Window]) -> Window | None:
        if "stable" in windows:
            self.ring.add(windows["stable"])
        return self.ring.merged()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--intervals", type=int, default=25)
    parser.add_argument(
        "--default-gc", action="store_true", help="CPython's collector settings, not the operator's"
    )
    args = parser.parse_args()
    if not args.default_gc:
        tune_garbage_collector()
    bench = Bench(args.pods, args.features)
    for _ in range(20):  # fill the 10-minute drift window first: 20 x 30s
        bench.interval()
    runs = [bench.interval() for _ in range(args.intervals)]
    bench.loop.close()

    assert bench.last is not None
    drift = bench.last.status.drift
    print(
        f"one ModelMonitor, {args.pods} pods x {args.features} numeric features ({BINS} bins) "
        f"+ prediction score, {int(RATE * INTERVAL)} requests/pod/interval, drift window "
        f"{bench.ring.covered:.0f}s; "
        f"median CPU ms per interval over {args.intervals} intervals"
    )
    print(f"  (last verdict: drift {drift.status}, {drift.drifted} drifted features; "
          f"gc thresholds {gc.get_threshold()})")  # fmt: skip
    medians = [statistics.median(column) for column in zip(*runs, strict=True)]
    for name, median in zip(STAGES, medians, strict=True):
        print(f"  {name:<48} {median:8.1f} ms   {median / medians[0]:5.1f}x baseline")
    verdict = "meets" if medians[-1] <= TARGET_MS else "MISSES"
    print(f"  target: <= {TARGET_MS:.0f} ms CPU per interval -> {medians[-1]:.1f} ms, {verdict} it")


if __name__ == "__main__":
    main()
