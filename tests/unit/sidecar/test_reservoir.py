"""The reservoir: uniform over a window's rows, bounded, windowed, and free of PII."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from scipy import stats

from driftline_sidecar.capture import CaptureWorker, Exchange
from driftline_sidecar.contract.config import FeatureConfig, ReservoirConfig, SidecarConfig
from driftline_sidecar.counts import build_layout
from driftline_sidecar.metrics import SidecarMetrics
from driftline_sidecar.reservoir import Reservoir

FEATURES = [FeatureConfig(name="x")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stream(reservoir: Reservoir, n: int, *, batch: int) -> None:
    for start in range(0, n, batch):
        values = list(range(start, min(n, start + batch)))
        reservoir.offer({"x": values}, len(values), protocol="json")


@pytest.mark.parametrize("batch", [1, 7, 250])
def test_every_row_is_kept_with_the_same_probability(batch: int) -> None:
    """Inclusion counts of 250 rows over 4,000 seeded runs of a 20-row reservoir:
    a chi-square test of uniformity (expected 320 each)."""
    n, size, runs = 250, 20, 4000
    kept = np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(12345)
    for _ in range(runs):
        reservoir = Reservoir(
            ReservoirConfig(size=size), FEATURES, seed=int(rng.integers(1 << 32)), clock=Clock()
        )
        stream(reservoir, n, batch=batch)
        rows = reservoir.document().current.rows
        assert len(rows) == size
        values = [row[0] for row in rows]
        assert len(set(values)) == size  # no row twice
        kept[values] += 1
    assert kept.sum() == size * runs
    _, p = stats.chisquare(kept)
    assert p > 0.001, f"inclusion counts not uniform (p = {p:.2g}): {kept.min()}..{kept.max()}"
    # and a biased sampler is caught: the first half kept twice as often as the second
    biased = np.concatenate([kept[: n // 2] * 2, kept[n // 2 :]])
    assert stats.chisquare(biased, biased.sum() / n * np.ones(n)).pvalue < 1e-6


def test_the_sample_never_holds_more_than_its_size() -> None:
    reservoir = Reservoir(ReservoirConfig(size=5), FEATURES, seed=1, clock=Clock())
    for n in (1, 3, 5, 6, 100, 10_000):
        stream(reservoir, n, batch=37)
        assert len(reservoir.document().current.rows) <= 5
    window = reservoir.document().current
    assert window.seen == 1 + 3 + 5 + 6 + 100 + 10_000
    assert len(window.rows) == 5


def test_a_short_stream_is_kept_whole() -> None:
    reservoir = Reservoir(ReservoirConfig(size=10), FEATURES, seed=1, clock=Clock())
    stream(reservoir, 4, batch=3)
    assert sorted(r[0] for r in reservoir.document().current.rows) == [0, 1, 2, 3]


def test_windows_rotate_and_the_last_closed_one_is_kept() -> None:
    clock = Clock()
    reservoir = Reservoir(ReservoirConfig(size=3, window_seconds=60), FEATURES, seed=1, clock=clock)
    stream(reservoir, 10, batch=10)
    clock.now += 61
    reservoir.offer({"x": [100]}, 1, protocol="kserve-v1")
    document = reservoir.document()
    assert document.previous is not None
    assert document.previous.seen == 10
    assert document.previous.end == 1060.0
    assert document.current.start == 1060.0
    assert document.current.rows == [[100]]
    assert document.current.protocol == "kserve-v1"
    clock.now += 200  # windows with no rows between: the previous one is not adjacent
    document = reservoir.document()
    assert document.previous is None
    assert document.current.seen == 0
    assert document.current.start == 1060.0 + 180  # on the grid: 1240 <= 1261 < 1300


def test_pii_fields_never_enter_it_through_the_capture_worker() -> None:
    config = SidecarConfig.model_validate(
        {
            "model": {
                "name": "fraud",
                "protocol": "json",
                "features": [
                    {"name": "amount", "bins": [10.0]},
                    {"name": "email", "type": "categorical", "pii": "hash"},
                    {"name": "country", "type": "categorical"},
                ],
            },
            "prediction_log": {"enabled": False},
            "reservoir": {"size": 50},
        }
    )
    layout = build_layout(config)
    metrics = SidecarMetrics(
        model="fraud",
        version="v1",
        role="stable",
        features=layout.bins_per_feature,
        prediction_bins=layout.prediction.n_bins,
    )
    reservoir = Reservoir(config.reservoir, layout.features, seed=3)
    worker = CaptureWorker(
        config=config, layout=layout, metrics=metrics, reservoir=reservoir, flush_interval=0.0
    )
    secret = "alice@example.com"
    bodies = [
        {"amount": float(i), "email": secret, "country": "NL", "undeclared": "zzz"}
        for i in range(30)
    ]

    async def run() -> None:
        task = asyncio.create_task(worker.run())
        for i, body in enumerate(bodies):
            worker.submit(
                Exchange(
                    request=json.dumps(body).encode(),
                    response=b'{"prediction": 1}',
                    status=200,
                    latency_seconds=0.01,
                    request_id=str(i),
                    ts=0.0,
                )
            )
        await worker.drain()
        task.cancel()

    asyncio.run(run())
    document = reservoir.document()
    assert document.current.features == ["amount", "country"]
    assert document.current.protocol == "json"
    assert sorted(row[0] for row in document.current.rows) == [float(i) for i in range(30)]
    text = document.model_dump_json()
    assert secret not in text and "email" not in text and "zzz" not in text
