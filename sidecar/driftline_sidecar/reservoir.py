"""A bounded, uniform sample of the rows the sidecar captured, per window.

Reservoir sampling with Li's Algorithm L ("Reservoir-sampling algorithms of
time complexity O(n(1 + log(N/n)))", ACM TOMS 1994): after the first ``size``
rows, the gap to the next row kept is drawn directly, so a row that is not
kept costs nothing but a comparison, and a batch from the capture worker
costs one slice per kept row. Every row of a window ends up in the sample with
the same probability ``size / seen``.

Only declared features not marked PII are held: the columns are chosen once,
when the reservoir is made, and a PII column is never copied.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from driftline_sidecar.contract.config import FeatureConfig, ReservoirConfig
from driftline_sidecar.contract.reservoir import ReservoirDocument, ReservoirWindow


class _Sample:
    """One window's reservoir (Algorithm L)."""

    def __init__(self, size: int, rng: np.random.Generator, start: float) -> None:
        self.size = size
        self.start = start
        self.end: float | None = None
        self.seen = 0
        self.protocol: str | None = None
        self.rows: list[list[Any]] = []
        self._rng = rng
        self._w = self._next_w()
        self._next = size + self._gap()  # 0-based index of the next row kept once full

    def _next_w(self) -> float:
        return math.exp(math.log(self._uniform()) / self.size)

    def _gap(self) -> int:
        w = self._w
        if w >= 1.0:  # log(1 - w) undefined; the chance of it is nil but not zero
            return 0
        return math.floor(math.log(self._uniform()) / math.log1p(-w))

    def _uniform(self) -> float:
        u = float(self._rng.random())
        return u if u > 0.0 else 5e-324  # random() is in [0, 1): never take log(0)

    def offer(self, columns: Sequence[Sequence[Any]], n: int) -> None:
        """Rows ``0..n-1`` of ``columns`` (one sequence per held feature)."""
        first = self.seen
        end = first + n
        take = min(n, self.size - len(self.rows))  # filling up: every row is kept
        for i in range(take):
            self.rows.append([column[i] for column in columns])
        while self._next < end:
            i = self._next - first
            self.rows[int(self._rng.integers(self.size))] = [column[i] for column in columns]
            self._w *= self._next_w()
            self._next += self._gap() + 1
        self.seen = end

    def window(self, features: list[str]) -> ReservoirWindow:
        return ReservoirWindow(
            start=self.start,
            end=self.end,
            seen=self.seen,
            protocol=self.protocol,
            features=features,
            rows=[list(row) for row in self.rows],
        )


class Reservoir:
    """The open window's sample and the last closed one's."""

    def __init__(
        self,
        config: ReservoirConfig,
        features: Sequence[FeatureConfig],
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self.features = [f.name for f in features if f.pii == "none"]
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._current = _Sample(config.size, self._rng, clock())
        self._previous: _Sample | None = None

    def offer(self, columns: Mapping[str, Sequence[Any]], n: int, *, protocol: str) -> None:
        """A batch of ``n`` captured rows, as columns by feature name (a held
        feature absent from ``columns`` is missing in every row)."""
        if n <= 0 or not self.features:
            return
        self._rotate()
        absent = [None] * n
        held = [columns.get(name, absent) for name in self.features]
        self._current.offer(held, n)
        self._current.protocol = protocol

    def document(self) -> ReservoirDocument:
        self._rotate()
        previous = self._previous
        return ReservoirDocument(
            size=self._config.size,
            window_seconds=self._config.window_seconds,
            current=self._current.window(self.features),
            previous=previous.window(self.features) if previous is not None else None,
        )

    def _rotate(self) -> None:
        now = self._clock()
        length = self._config.window_seconds
        if now - self._current.start < length:
            return
        closed = self._current
        # Windows sit on a fixed grid from the first: a quiet spell skips whole windows.
        closed.end = closed.start + length
        start = closed.start + length * math.floor((now - closed.start) / length)
        self._previous = closed if start == closed.end else None  # else empty windows between
        self._current = _Sample(self._config.size, self._rng, start)
