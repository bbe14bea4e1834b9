"""What a model relies on, from SHAP values, and whether that changed.

Per window the explainer's attributions are kept as mergeable counts, like
every other count here: how many rows were explained, the sum of each
feature's |SHAP| (mean |SHAP| is the usual global importance), and each
feature's SHAP values binned into the reference's bins. Pods' and
intervals' windows add up.

The drift statistic is the total variation distance between the normalised
importance vectors (each feature's share of the summed mean |SHAP|):
``0.5 * sum(|share_ref - share_now|)``. It is scale-free (a model whose
outputs all grow does not "rely on other features"), bounded in 0..1, and
reads directly as the share of the model's reliance that moved from some
features to others. Beside it the top-k features by importance are compared
as sets: a new feature among the top ones is the change people notice first.
Per feature, the share moved and the Jensen-Shannon distance between its
SHAP value distributions (the same bins) say which features moved.

The reference is computed once: the reference rows explained against the
same background. A window with fewer explained rows than ``min_explanations``
has "insufficient data", as feature drift below ``minSamples``.

A canary is compared the same way, with stable in the reference's place:
the same sampled rows explained against both models (``PairedAttributions``),
so the distance measures the models, not two samples of traffic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from driftline_operator.stats.distances import jensen_shannon

Verdict = Literal["ok", "drifted", "insufficient data"]
BINS = 10


@dataclass
class AttributionCounts:
    """One window's attributions, as counts that add up across pods and windows."""

    features: list[str]
    edges: dict[str, list[float]]  # per feature: interior bin edges of its SHAP values
    explained: int = 0
    abs_sum: dict[str, float] = field(default_factory=dict)
    bins: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.features:
            self.abs_sum.setdefault(name, 0.0)
            self.bins.setdefault(name, [0] * (len(self.edges[name]) + 1))

    def add(self, values: np.ndarray) -> None:
        """Rows of SHAP values, one column per feature in ``features`` order."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if values.shape[1] != len(self.features):
            raise ValueError(
                f"{values.shape[1]} attributions per row for {len(self.features)} features"
            )
        self.explained += len(values)
        for column, name in enumerate(self.features):
            self.abs_sum[name] += float(np.abs(values[:, column]).sum())
            where = np.searchsorted(self.edges[name], values[:, column], side="right")
            counts = np.bincount(where, minlength=len(self.edges[name]) + 1)
            self.bins[name] = [a + int(b) for a, b in zip(self.bins[name], counts, strict=True)]

    def merge(self, other: AttributionCounts) -> AttributionCounts:
        if other.features != self.features or other.edges != self.edges:
            raise ValueError("attribution counts of different features or bins do not merge")
        merged = AttributionCounts(self.features, self.edges)
        merged.explained = self.explained + other.explained
        for name in self.features:
            merged.abs_sum[name] = self.abs_sum[name] + other.abs_sum[name]
            merged.bins[name] = [
                a + b for a, b in zip(self.bins[name], other.bins[name], strict=True)
            ]
        return merged

    def importance(self) -> dict[str, float]:
        """Mean |SHAP| per feature (0 when nothing was explained)."""
        n = max(self.explained, 1)
        return {name: self.abs_sum[name] / n for name in self.features}


@dataclass(frozen=True)
class AttributionReference:
    """The reference attributions: importance shares and per-feature bins."""

    counts: AttributionCounts

    @classmethod
    def from_values(cls, features: Sequence[str], values: np.ndarray) -> AttributionReference:
        """Bins from the reference attributions' quantiles, as a numeric profile's."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        edges = {}
        for column, name in enumerate(features):
            quantiles = np.quantile(values[:, column], np.linspace(0, 1, BINS + 1)[1:-1])
            edges[name] = np.unique(quantiles).tolist()
        counts = AttributionCounts(list(features), edges)
        counts.add(values)
        return cls(counts)

    def empty(self) -> AttributionCounts:
        """A window to count into, in the reference's bins."""
        return AttributionCounts(self.counts.features, self.counts.edges)


@dataclass(frozen=True)
class FeatureAttribution:
    reference_share: float
    current_share: float
    js_distance: float | None  # None without data in the window


@dataclass(frozen=True)
class AttributionDrift:
    verdict: Verdict
    explained: int
    distance: float | None  # total variation between importance shares
    top_reference: list[str]
    top_current: list[str]
    features: dict[str, FeatureAttribution]

    @property
    def top_changed(self) -> bool:
        return set(self.top_reference) != set(self.top_current)


def shares(importance: Mapping[str, float]) -> dict[str, float]:
    total = sum(importance.values())
    if total <= 0:
        return dict.fromkeys(importance, 0.0)
    return {name: value / total for name, value in importance.items()}


def total_variation(one: Mapping[str, float], other: Mapping[str, float]) -> float:
    """``0.5 * sum(|one - other|)`` over ``one``'s features: the share of reliance moved."""
    return 0.5 * sum(abs(share - other[name]) for name, share in one.items())


def top(share: Mapping[str, float], k: int) -> list[str]:
    return [name for name, _ in sorted(share.items(), key=lambda item: (-item[1], item[0]))[:k]]


def attribution_drift(
    reference: AttributionReference,
    window: AttributionCounts,
    *,
    threshold: float,
    min_explanations: int,
    top_k: int = 3,
) -> AttributionDrift:
    """Has the model's reliance moved? ``threshold`` on the total variation distance."""
    ref_share = shares(reference.counts.importance())
    k = min(top_k, len(ref_share))
    if window.explained < min_explanations:
        return AttributionDrift(
            verdict="insufficient data",
            explained=window.explained,
            distance=None,
            top_reference=top(ref_share, k),
            top_current=[],
            features={
                name: FeatureAttribution(share, 0.0, None) for name, share in ref_share.items()
            },
        )
    now_share = shares(window.importance())
    distance = total_variation(ref_share, now_share)
    features = {
        name: FeatureAttribution(
            ref_share[name],
            now_share[name],
            jensen_shannon(reference.counts.bins[name], window.bins[name]),
        )
        for name in ref_share
    }
    return AttributionDrift(
        verdict="drifted" if distance > threshold else "ok",
        explained=window.explained,
        distance=distance,
        top_reference=top(ref_share, k),
        top_current=top(now_share, k),
        features=features,
    )


@dataclass
class PairedAttributions:
    """The same rows explained against stable and against the candidate,
    counted in the same bins: row i of one is row i of the other."""

    stable: AttributionCounts
    candidate: AttributionCounts

    @classmethod
    def empty(cls, reference: AttributionReference) -> PairedAttributions:
        return cls(reference.empty(), reference.empty())

    @property
    def explained(self) -> int:
        return self.stable.explained

    def add(self, stable: np.ndarray, candidate: np.ndarray) -> None:
        stable, candidate = np.atleast_2d(stable), np.atleast_2d(candidate)
        if stable.shape != candidate.shape:
            raise ValueError(
                f"paired attributions of {stable.shape} and {candidate.shape}: "
                "the same rows must be explained against both models"
            )
        self.stable.add(stable)
        self.candidate.add(candidate)

    def merge(self, other: PairedAttributions) -> PairedAttributions:
        return PairedAttributions(
            self.stable.merge(other.stable), self.candidate.merge(other.candidate)
        )

    def shares(self) -> tuple[dict[str, float], dict[str, float]]:
        """Each model's share of the summed mean |SHAP| per feature: stable's, the candidate's."""
        return shares(self.stable.importance()), shares(self.candidate.importance())

    def distance(self) -> float:
        """Total variation between the two models' importance shares, in 0..1."""
        return total_variation(*self.shares())
