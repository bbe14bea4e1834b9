"""Per-feature and dataset drift verdicts from a window's merged bin counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

import numpy as np

from driftline_operator.stats.distances import bin_points, proportions, wasserstein_samples
from driftline_operator.stats.policy import (
    AUTO_JENSEN_SHANNON_THRESHOLD,
    DEFAULT_THRESHOLDS,
    DriftPolicy,
    Kind,
    drifted,
)
from driftline_operator.stats.rows import (
    cdf_gaps,
    chi_square_rows,
    jensen_shannon_rows,
    ks_rows,
    psi_rows,
    wasserstein_rows,
)
from driftline_operator.stats.tests import counts_array, ks_samples, z_test
from driftline_sidecar.contract.profile import CategoricalProfile, NumericProfile, ReferenceProfile

Status = Literal["ok", "drift", "insufficient_data"]


class Counts(Protocol):
    """A window's counts for one feature (``BinCounts`` or ``BinnedBatch``)."""

    counts: list[int]
    missing: int
    out_of_range: int


@dataclass
class FeatureDrift:
    feature: str
    kind: Kind
    status: Status
    method: str  # the statistic behind the verdict, e.g. "ks" or "ks_samples"
    score: float | None  # its value: a p-value for ks/chisquare/z, else a distance
    threshold: float
    samples: int  # non-missing values in the window
    stats: dict[str, float] = field(default_factory=dict)
    missing_rate: float = 0.0
    missing_rate_change: float = 0.0  # window minus reference
    out_of_range_rate: float = 0.0  # numeric: outside reference [min, max]; categorical: unlisted

    @property
    def drift(self) -> bool:
        return self.status == "drift"


@dataclass
class DatasetDrift:
    features: list[FeatureDrift]
    drifted: list[str]
    drifted_share: float  # of the features with enough data
    drift: bool
    insufficient: list[str]
    prediction: FeatureDrift | None = None


def reference_size(reference: NumericProfile | CategoricalProfile, rows: int) -> int:
    """Non-missing reference values: the ``n`` of Evidently's rules and of KS."""
    return max(1, round(rows * (1.0 - reference.missing_rate)))


def _choose(
    kind: Kind,
    *,
    policy: DriftPolicy,
    n_reference: int,
    occupied_bins: int,
    discrete: bool,
) -> tuple[str, float]:
    """The method and threshold for one feature (see ``policy`` for the rules)."""
    method = policy.method_for(kind)
    if method != "auto":
        return method, policy.threshold_for(kind, method)
    categorical_like = kind == "categorical" or (
        discrete and occupied_bins <= policy.discrete_values
    )
    if n_reference <= policy.large_sample:
        if not categorical_like:
            return "ks", DEFAULT_THRESHOLDS["ks"]
        method = "chisquare" if occupied_bins > 2 else "z"
        return method, DEFAULT_THRESHOLDS[method]
    if categorical_like:
        return "jensenshannon", AUTO_JENSEN_SHANNON_THRESHOLD
    return "wasserstein", DEFAULT_THRESHOLDS["wasserstein"]


@lru_cache(maxsize=4096)
def _reference_arrays(
    expected: tuple[float, ...], edges: tuple[float, ...] | None, low: float, high: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reference proportions and the gaps between bin points: fixed per
    profile, so computed once rather than every window."""
    p = proportions(expected, name="reference expected")
    gaps = None if edges is None else np.diff(bin_points(edges, low=low, high=high))
    return p, gaps


@dataclass
class _Pending:
    """A feature with enough data, waiting for its group's statistics."""

    verdict: FeatureDrift
    reference: NumericProfile | CategoricalProfile
    observed: np.ndarray
    n_reference: int
    sample: Sequence[Any] | None
    reference_sample: Sequence[Any] | None

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        reference = self.reference
        if isinstance(reference, NumericProfile):
            edges = tuple(reference.edges)
            return _reference_arrays(tuple(reference.expected), edges, reference.min, reference.max)
        return _reference_arrays(tuple(reference.expected), None, 0.0, 0.0)


def _group_stats(group: list[_Pending]) -> list[dict[str, float]]:
    """Every binned statistic for features of one kind and bin count, at once."""
    arrays = [item.arrays() for item in group]
    P = np.stack([p for p, _ in arrays])
    C = np.stack([item.observed for item in group])
    Q = C / C.sum(axis=1, keepdims=True)
    chi2, chi2_p = chi_square_rows(P, C)
    columns = {
        "psi": psi_rows(P, Q),
        "jensenshannon": jensen_shannon_rows(P, Q),
        "chisquare_statistic": chi2,
        "chisquare_p_value": chi2_p,
    }
    if isinstance(group[0].reference, NumericProfile):
        gaps = cdf_gaps(P, Q)
        sizes = np.array([item.n_reference for item in group], dtype=np.float64)
        columns["ks_statistic"], columns["ks_p_value"] = ks_rows(
            P, C, reference_size=sizes, gaps=gaps
        )
        # A group holds one kind: every item is numeric and has its bin points' gaps.
        point_gaps = np.stack([g for _, g in arrays if g is not None])
        std = np.array(
            [item.reference.std for item in group if isinstance(item.reference, NumericProfile)]
        )
        columns["wasserstein"] = wasserstein_rows(gaps, point_gaps, std)
    keys = list(columns)
    rows = np.column_stack([columns[key] for key in keys]).tolist()
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _score(item: _Pending, method: str, stats: dict[str, float]) -> tuple[str, float]:
    """The verdict's statistic, on raw samples where both sides have them."""
    reference_sample, sample = item.reference_sample, item.sample
    if method == "ks" and reference_sample is not None and sample is not None:
        result = ks_samples(reference_sample, sample)
        stats["ks_samples_statistic"] = result.statistic
        stats["ks_samples_p_value"] = result.p_value
        return "ks_samples", result.p_value
    if method == "wasserstein" and reference_sample is not None and sample is not None:
        value = wasserstein_samples(reference_sample, sample)
        stats["wasserstein_samples"] = value
        return "wasserstein_samples", value
    if method == "z":
        p, _ = item.arrays()
        result = z_test(p, item.observed, reference_size=item.n_reference)
        stats["z_statistic"] = result.statistic
        stats["z_p_value"] = result.p_value
        return "z", result.p_value
    key = {"ks": "ks_p_value", "chisquare": "chisquare_p_value"}.get(method, method)
    if key not in stats:
        raise ValueError(f"no statistic {method!r} for a {item.reference.kind} feature")
    return method, stats[key]


def _prepare(
    name: str,
    reference: NumericProfile | CategoricalProfile,
    counts: Counts,
    *,
    policy: DriftPolicy,
    sample: Sequence[Any] | None,
    reference_sample: Sequence[Any] | None,
    reference_rows: int | None,
) -> tuple[FeatureDrift, _Pending | None]:
    # A handful of bins: plain Python is quicker on them than numpy calls.
    observed = counts.counts
    if len(observed) != reference.n_bins:
        raise ValueError(
            f"feature {name!r}: the window has {len(observed)} bins but the reference "
            f"profile has {reference.n_bins}; the counts were binned against another profile"
        )
    samples = int(sum(observed))
    seen = samples + counts.missing
    missing_rate = counts.missing / seen if seen else 0.0
    if reference_rows is None:
        reference_rows = len(reference_sample) if reference_sample else policy.large_sample + 1
    n_reference = reference_size(reference, reference_rows)
    occupied = sum(e > 0 or o > 0 for e, o in zip(reference.expected, observed, strict=True))
    discrete = isinstance(reference, NumericProfile) and reference.distinct_values is not None
    method, threshold = _choose(
        reference.kind,
        policy=policy,
        n_reference=n_reference,
        occupied_bins=occupied,
        discrete=discrete,
    )
    verdict = FeatureDrift(
        feature=name,
        kind=reference.kind,
        status="insufficient_data",
        method=method,
        score=None,
        threshold=threshold,
        samples=samples,
        missing_rate=missing_rate,
        missing_rate_change=missing_rate - reference.missing_rate if seen else 0.0,
        out_of_range_rate=counts.out_of_range / samples if samples else 0.0,
    )
    if samples < policy.min_samples:
        return verdict, None
    array = counts_array(observed, bins=reference.n_bins)
    pending = _Pending(verdict, reference, array, n_reference, sample, reference_sample)
    return verdict, pending


def _judge(pending: list[_Pending], *, policy: DriftPolicy) -> None:
    """Fill in the verdicts of features with enough data, grouped so that
    each group's statistics are a handful of numpy calls."""
    groups: dict[tuple[str, int], list[_Pending]] = {}
    for item in pending:
        groups.setdefault((item.reference.kind, item.observed.size), []).append(item)
    for group in groups.values():
        for item, stats in zip(group, _group_stats(group), strict=True):
            verdict = item.verdict
            method, score = _score(item, verdict.method, stats)
            if not policy.all_stats:
                stats = {k: v for k, v in stats.items() if k.startswith(method) or k == method}
                stats = stats or {verdict.method: score}
            verdict.stats = stats
            verdict.status = "drift" if drifted(verdict.method, score, verdict.threshold) else "ok"
            verdict.method, verdict.score = method, score


def judge_feature(
    name: str,
    reference: NumericProfile | CategoricalProfile,
    counts: Counts,
    *,
    policy: DriftPolicy,
    sample: Sequence[Any] | None = None,
    reference_sample: Sequence[Any] | None = None,
    reference_rows: int | None = None,
) -> FeatureDrift:
    """Judge one feature's window against its reference.

    ``sample`` is a raw sample of the window's values and ``reference_sample``
    the profile's; with both, KS and Wasserstein run exactly on them instead of
    on the bins. ``reference_rows`` is the profile's row count (the ``n`` of the
    auto rules and of the binned KS p-value); without it, the reference sample
    size stands in, else ``policy.large_sample + 1``.
    """
    verdict, pending = _prepare(
        name,
        reference,
        counts,
        policy=policy,
        sample=sample,
        reference_sample=reference_sample,
        reference_rows=reference_rows,
    )
    if pending is not None:
        _judge([pending], policy=policy)
    return verdict


def judge_dataset(
    profile: ReferenceProfile,
    features: Mapping[str, Counts],
    *,
    policy: DriftPolicy,
    share_threshold: float = 0.5,
    prediction: Counts | None = None,
    samples: Mapping[str, Sequence[Any]] | None = None,
) -> DatasetDrift:
    """Judge every profiled feature, then the dataset: drift when the share of
    drifted features (among those with enough data) reaches ``share_threshold``
    (Evidently's rule: ``share >= 0.5`` by default).

    A profiled feature absent from ``features`` has no data ("insufficient");
    counts for features the profile does not know are ignored. ``samples`` are
    raw window samples by feature (see ``judge_feature``). The prediction is
    judged the same way when both the profile and ``prediction`` have it.
    """
    samples = samples or {}
    rows = profile.source.rows
    entries: list[tuple[str, NumericProfile | CategoricalProfile, Counts]] = [
        (name, reference, features.get(name) or _empty(reference.n_bins))
        for name, reference in profile.features.items()
    ]
    if profile.prediction is not None and prediction is not None:
        entries.append((profile.prediction_column or "prediction", profile.prediction, prediction))
    verdicts, pending = [], []
    for name, reference, counts in entries:
        verdict, item = _prepare(
            name,
            reference,
            counts,
            policy=policy,
            sample=samples.get(name),
            reference_sample=profile.sample.get(name),
            reference_rows=rows,
        )
        verdicts.append(verdict)
        if item is not None:
            pending.append(item)
    _judge(pending, policy=policy)
    prediction_verdict = verdicts.pop() if len(entries) > len(profile.features) else None
    judged = [v for v in verdicts if v.status != "insufficient_data"]
    drifted_names = [v.feature for v in judged if v.drift]
    share = len(drifted_names) / len(judged) if judged else 0.0
    return DatasetDrift(
        features=verdicts,
        drifted=drifted_names,
        drifted_share=share,
        drift=bool(judged) and share >= share_threshold,
        insufficient=[v.feature for v in verdicts if v.status == "insufficient_data"],
        prediction=prediction_verdict,
    )


@dataclass
class _EmptyCounts:
    counts: list[int]
    missing: int = 0
    out_of_range: int = 0


def _empty(n_bins: int) -> Counts:
    return _EmptyCounts(counts=[0] * n_bins)
