"""What the sidecar bins, and the cumulative counts it reports.

``Layout`` decides, once at start, which features are binned and into which
bins: the reference profile's when one is loaded, the config's fixed bins
otherwise. ``take_snapshot`` reads the counts back from the Prometheus
registry, so ``/v1/snapshot`` and ``/metrics`` are one set of numbers.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from driftline_sidecar.contract.config import FeatureConfig, SidecarConfig
from driftline_sidecar.contract.profile import (
    BinnedBatch,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    bin_categorical,
    bin_numeric,
)
from driftline_sidecar.contract.reader import snapshot_from_samples
from driftline_sidecar.contract.snapshot import ProcessInfo, Snapshot
from driftline_sidecar.metrics import SidecarMetrics

# Scores of a classifier binned in deciles while no profile says otherwise.
DEFAULT_SCORE_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Binning:
    """One feature's (or the prediction's) bins."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    low: float = -math.inf  # values outside [low, high] count as out of range
    high: float = math.inf

    @property
    def n_bins(self) -> int:
        return len(self.categories if self.kind == "categorical" else self.edges) + 1

    def bin(self, values: Sequence[Any]) -> BinnedBatch:
        if self.kind == "categorical":
            return bin_categorical(values, self.categories)
        return bin_numeric(_numbers(values), self.edges, low=self.low, high=self.high)


def _numbers(values: Sequence[Any]) -> Sequence[float | None]:
    # A string or bool where a number belongs is a schema violation the
    # extractor counts; here it is simply not a value.
    if set(map(type, values)) <= _PLAIN_NUMBERS:  # the usual case, checked at C speed
        return values
    return [v if isinstance(v, int | float) and not isinstance(v, bool) else None for v in values]


_PLAIN_NUMBERS = frozenset({int, float, type(None)})


class NumericColumns:
    """Several numeric features binned in one pass of numpy calls, as each one's
    ``Binning.bin`` would: per feature the calls cost about as much for 30
    values as for 3,000, so a capture batch pays them once, not per feature."""

    def __init__(self, binnings: Sequence[Binning]) -> None:
        assert all(b.kind == "numeric" for b in binnings)
        self.binnings = tuple(binnings)
        widest = max((len(b.edges) for b in binnings), default=0)
        # Padded with NaN: no value is >= NaN, so a padding edge counts for none.
        self._edges = np.full((len(binnings), 1, widest), np.nan)
        for i, binning in enumerate(binnings):
            self._edges[i, 0, : len(binning.edges)] = binning.edges
        sizes = [b.n_bins for b in binnings]
        self._starts = np.cumsum([0, *sizes])  # each feature's first bin in one flat tally
        self._low = np.array([[b.low] for b in binnings])
        self._high = np.array([[b.high] for b in binnings])

    def bin(self, columns: Sequence[Sequence[Any]]) -> list[tuple[list[int], int, int]]:
        """Per binning, from its column (all of one length): the counts per bin,
        missing and out of range, as ``Binning.bin`` gives them."""
        values = np.array([_numbers(c) for c in columns], dtype=np.float64)  # None: NaN
        missing = np.isnan(values)
        # A value's bin is how many edges are <= it (searchsorted, side="right").
        codes = (values[:, :, None] >= self._edges).sum(axis=2) + self._starts[:-1, None]
        total = int(self._starts[-1])
        tally = np.bincount(np.where(missing, total, codes).ravel(), minlength=total + 1)
        outside = ((values < self._low) | (values > self._high)).sum(axis=1)
        counts, starts = tally.tolist(), self._starts.tolist()
        return [
            (counts[start:end], n_missing, n_outside)
            for start, end, n_missing, n_outside in zip(
                starts, starts[1:], missing.sum(axis=1).tolist(), outside.tolist(), strict=False
            )
        ]


def _from_profile(name: str, profile: NumericProfile | CategoricalProfile) -> Binning:
    if isinstance(profile, CategoricalProfile):
        return Binning(name, "categorical", categories=tuple(profile.categories))
    return Binning(name, "numeric", edges=tuple(profile.edges), low=profile.min, high=profile.max)


@dataclass(frozen=True)
class Layout:
    """The features to extract and bin, and the prediction's bins."""

    features: tuple[FeatureConfig, ...]  # what the extractor looks for
    binnings: tuple[Binning, ...]  # one per feature, same order
    prediction: Binning
    profile_sha256: str = ""

    @property
    def bins_per_feature(self) -> dict[str, int]:
        return {b.name: b.n_bins for b in self.binnings}


def build_layout(
    config: SidecarConfig, profile: ReferenceProfile | None = None, profile_sha256: str = ""
) -> Layout:
    """Configured features binned against the profile where it knows them;
    with no features configured, the profile's own features."""
    features = list(config.model.features)
    if not features and profile is not None:
        features = [FeatureConfig(name=n, type=p.kind) for n, p in profile.features.items()]
    binnings = []
    for feature in features:
        known = profile.features.get(feature.name) if profile is not None else None
        if known is not None:
            if known.kind != feature.type:
                raise ValueError(
                    f"model.features[{feature.name}]: type {feature.type} but the reference "
                    f"profile has it {known.kind}; fix the type in the config or rebuild the profile"
                )
            binnings.append(_from_profile(feature.name, known))
        elif feature.type == "categorical":
            binnings.append(Binning(feature.name, "categorical"))  # all in "other" until profiled
        else:
            binnings.append(Binning(feature.name, "numeric", edges=tuple(feature.bins or ())))
    return Layout(
        features=tuple(features),
        binnings=tuple(binnings),
        prediction=_prediction_binning(config, profile),
        profile_sha256=profile_sha256,
    )


def _prediction_binning(config: SidecarConfig, profile: ReferenceProfile | None) -> Binning:
    if profile is not None and profile.prediction is not None:
        return _from_profile("prediction", profile.prediction)
    edges = config.model.prediction.bins
    if edges is None and config.model.prediction.task == "classification":
        edges = list(DEFAULT_SCORE_EDGES)
    return Binning("prediction", "numeric", edges=tuple(edges or ()))


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def new_process_info() -> ProcessInfo:
    return ProcessInfo(id=uuid.uuid4().hex, pid=os.getpid(), start_time=time.time())


def take_snapshot(metrics: SidecarMetrics, *, process: ProcessInfo) -> Snapshot:
    """The cumulative counts, read from the registry that ``/metrics`` renders."""
    samples = (sample for family in metrics.registry.collect() for sample in family.samples)
    return snapshot_from_samples(samples, process=process, taken_at=time.time())
