"""Per-feature and dataset drift verdicts from a window's merged bin counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

import numpy as np

from driftline_operator.stats.distances import (
    bin_points,
    jensen_shannon_kernel,
    proportions,
    psi_kernel,
    wasserstein_samples,
)
from driftline_operator.stats.policy import (
    AUTO_JENSEN_SHANNON_THRESHOLD,
    DEFAULT_THRESHOLDS,
    DriftPolicy,
    Kind,
    drifted,
)
from driftline_operator.stats.tests import (
    TestResult,
    chi_square_kernel,
    counts_array,
    ks_samples,
    smirnov_p_value,
    z_test,
)
from driftline_sidecar.profile import CategoricalProfile, NumericProfile, ReferenceProfile

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
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Proportions, their CDF at the edges, and the gaps between bin points:
    fixed per profile, so computed once rather than every window."""
    p = proportions(expected, name="reference expected")
    gaps = None if edges is None else np.diff(bin_points(edges, low=low, high=high))
    return p, p.cumsum()[:-1], gaps


@dataclass
class _Bins:
    """One feature's reference and window, checked once for all statistics."""

    reference: NumericProfile | CategoricalProfile
    p: np.ndarray  # reference proportions
    cdf_p: np.ndarray  # reference CDF at the bin edges
    point_gaps: np.ndarray | None  # numeric: distances between bin points
    observed: np.ndarray  # window counts
    q: np.ndarray  # window proportions
    n_reference: int

    @classmethod
    def of(
        cls, reference: NumericProfile | CategoricalProfile, observed: np.ndarray, n_reference: int
    ) -> _Bins:
        numeric = isinstance(reference, NumericProfile)
        p, cdf_p, gaps = _reference_arrays(
            tuple(reference.expected),
            tuple(reference.edges) if numeric else None,
            reference.min if numeric else 0.0,
            reference.max if numeric else 0.0,
        )
        q = observed / observed.sum()
        return cls(reference, p, cdf_p, gaps, observed, q, n_reference)

    def ks(self) -> TestResult:
        gap = np.abs(self.cdf_p - self.q.cumsum()[:-1])
        statistic = float(gap.max()) if gap.size else 0.0
        n = float(self.observed.sum())
        effective_n = n * self.n_reference / (n + self.n_reference)
        return TestResult(statistic, smirnov_p_value(statistic, effective_n))

    def wasserstein(self) -> float:
        assert isinstance(self.reference, NumericProfile) and self.point_gaps is not None
        cdf_gap = np.abs(self.cdf_p - self.q.cumsum()[:-1])
        return float(cdf_gap @ self.point_gaps) / max(self.reference.std, 0.001)

    def all_stats(self) -> dict[str, float]:
        chi2 = chi_square_kernel(self.p, self.observed)
        stats = {
            "psi": psi_kernel(self.p, self.q),
            "jensenshannon": jensen_shannon_kernel(self.p, self.q),
            "chisquare_statistic": chi2.statistic,
            "chisquare_p_value": chi2.p_value,
        }
        if self.point_gaps is not None:
            ks = self.ks()
            stats["ks_statistic"] = ks.statistic
            stats["ks_p_value"] = ks.p_value
            stats["wasserstein"] = self.wasserstein()
        return stats

    def single(self, method: str) -> tuple[str, float]:
        """The stats key and value of one binned statistic."""
        if method == "psi":
            return "psi", psi_kernel(self.p, self.q)
        if method == "jensenshannon":
            return "jensenshannon", jensen_shannon_kernel(self.p, self.q)
        if method == "chisquare":
            return "chisquare_p_value", chi_square_kernel(self.p, self.observed).p_value
        if method == "ks" and self.point_gaps is not None:
            return "ks_p_value", self.ks().p_value
        if method == "wasserstein" and self.point_gaps is not None:
            return "wasserstein", self.wasserstein()
        raise ValueError(f"no statistic {method!r} for a {self.reference.kind} feature")


def _score(
    method: str,
    bins: _Bins,
    *,
    sample: Sequence[Any] | None,
    reference_sample: Sequence[Any] | None,
    stats: dict[str, float],
) -> tuple[str, float]:
    """The verdict's statistic, on raw samples where both sides have them."""
    raw = sample is not None and reference_sample is not None
    if method == "ks" and raw:
        result = ks_samples(reference_sample, sample)  # type: ignore[arg-type]
        stats["ks_samples_statistic"] = result.statistic
        stats["ks_samples_p_value"] = result.p_value
        return "ks_samples", result.p_value
    if method == "wasserstein" and raw:
        stats["wasserstein_samples"] = wasserstein_samples(reference_sample, sample)  # type: ignore[arg-type]
        return "wasserstein_samples", stats["wasserstein_samples"]
    if method == "z":
        result = z_test(bins.p, bins.observed, reference_size=bins.n_reference)
        stats["z_statistic"] = result.statistic
        stats["z_p_value"] = result.p_value
        return "z", result.p_value
    key = {"ks": "ks_p_value", "chisquare": "chisquare_p_value"}.get(method, method)
    if key not in stats:
        key, stats[key] = bins.single(method)
    return method, stats[key]


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
    observed = np.asarray(counts.counts, dtype=np.float64)
    if observed.size != reference.n_bins:
        raise ValueError(
            f"feature {name!r}: the window has {observed.size} bins but the reference "
            f"profile has {reference.n_bins}; the counts were binned against another profile"
        )
    kind: Kind = reference.kind
    samples = int(observed.sum())
    seen = samples + counts.missing
    missing_rate = counts.missing / seen if seen else 0.0
    if reference_rows is None:
        reference_rows = len(reference_sample) if reference_sample else policy.large_sample + 1
    n_reference = reference_size(reference, reference_rows)
    expected = np.asarray(reference.expected)
    occupied = int(np.count_nonzero((expected > 0) | (observed > 0)))
    discrete = isinstance(reference, NumericProfile) and reference.distinct_values is not None
    method, threshold = _choose(
        kind, policy=policy, n_reference=n_reference, occupied_bins=occupied, discrete=discrete
    )
    result = FeatureDrift(
        feature=name,
        kind=kind,
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
        return result
    bins = _Bins.of(reference, counts_array(observed, bins=reference.n_bins), n_reference)
    stats = bins.all_stats() if policy.all_stats else {}
    result.method, score = _score(
        method,
        bins,
        sample=sample,
        reference_sample=reference_sample,
        stats=stats,
    )
    result.score = score
    result.stats = stats
    result.status = "drift" if drifted(method, score, threshold) else "ok"
    return result


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
    verdicts = []
    for name, reference in profile.features.items():
        window = features.get(name) or _empty(reference.n_bins)
        verdicts.append(
            judge_feature(
                name,
                reference,
                window,
                policy=policy,
                sample=samples.get(name),
                reference_sample=profile.sample.get(name),
                reference_rows=rows,
            )
        )
    prediction_verdict = None
    if profile.prediction is not None and prediction is not None:
        column = profile.prediction_column or "prediction"
        prediction_verdict = judge_feature(
            column,
            profile.prediction,
            prediction,
            policy=policy,
            sample=samples.get(column),
            reference_sample=profile.sample.get(column),
            reference_rows=rows,
        )
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
