"""Significance tests from bin counts (and the exact KS test on raw samples).

The p-values come from the same formulas scipy uses, called through the
fast special functions: the judging loop runs them for every feature of every
window, and ``scipy.stats.chisquare`` / ``kstwo.sf`` carry 0.2 ms of argument
handling each (and ``kstwo.sf`` takes 0.5 s at a million samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from scipy.stats import ks_2samp

from driftline_operator.stats.distances import proportions
from driftline_operator.stats.rows import chi_square_rows, ks_rows
from driftline_operator.stats.samples import clean_sample


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class, despite the name

    statistic: float
    p_value: float


def counts_array(observed: ArrayLike, *, bins: int | None = None) -> np.ndarray:
    """Checked observed counts as floats (non-negative, not all zero)."""
    array = np.asarray(observed, dtype=np.float64)
    total = array.sum() if array.ndim == 1 and array.size else math.nan
    if not math.isfinite(total) or array.min() < 0:
        raise ValueError(f"observed counts must be finite and non-negative, got {array.tolist()}")
    if total <= 0:
        raise ValueError("observed counts are all zero: there is nothing to test")
    if bins is not None and array.size != bins:
        raise ValueError(f"expected has {bins} bins but observed has {array.size}")
    return array


def chi_square(expected_proportions: ArrayLike, observed_counts: ArrayLike) -> TestResult:
    """Pearson's goodness-of-fit test of the window's counts against the
    reference proportions (``scipy.stats.chisquare`` with ``f_exp = p * n``).

    Bins the reference never saw: empty ones carry no information and are
    dropped (one degree of freedom less each); a filled one cannot come from
    the reference at all, so the statistic is infinite and the p-value 0.
    """
    p = proportions(expected_proportions, name="expected proportions")
    observed = counts_array(observed_counts, bins=p.size)
    statistic, p_value = chi_square_rows(p[None], observed[None])
    return TestResult(statistic=float(statistic[0]), p_value=float(p_value[0]))


def ks_binned(
    expected_proportions: ArrayLike, observed_counts: ArrayLike, *, reference_size: int
) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test from binned data.

    The statistic is the largest gap between the two CDFs at the bin edges —
    the raw-sample statistic evaluated only where the bins allow, so never
    larger than it (equal when every bin holds one distinct value). The
    p-value treats the reference as a sample of ``reference_size`` values and
    uses ``rows.smirnov_p_values`` at the effective size ``n·m/(n+m)``; it is
    therefore conservative against the exact test on the raw samples.
    """
    if reference_size <= 0:
        raise ValueError(f"reference_size must be positive, got {reference_size}")
    p = proportions(expected_proportions, name="expected proportions")
    observed = counts_array(observed_counts, bins=p.size)
    statistic, p_value = ks_rows(p[None], observed[None], reference_size=np.array([reference_size]))
    return TestResult(statistic=float(statistic[0]), p_value=float(p_value[0]))


def ks_samples(reference: ArrayLike, current: ArrayLike) -> TestResult:
    """The exact two-sample KS test on raw values (``scipy.stats.ks_2samp``);
    None, NaN and infinities are dropped first."""
    result = ks_2samp(clean_sample(reference, name="reference"), clean_sample(current))
    return TestResult(statistic=float(result.statistic), p_value=float(result.pvalue))


def z_test(
    expected_proportions: ArrayLike, observed_counts: ArrayLike, *, reference_size: int
) -> TestResult:
    """Two-proportion z-test for a binary feature (Evidently's test for
    categoricals with at most two values): the share of the first occupied
    bin in the reference against the window, pooled variance, two-sided."""
    p = proportions(expected_proportions, name="expected proportions")
    observed = counts_array(observed_counts, bins=p.size)
    occupied = np.flatnonzero((p > 0) | (observed > 0))
    if occupied.size > 2:
        raise ValueError(f"the z-test compares two values, these counts hold {occupied.size}")
    if occupied.size < 2:  # one value on both sides: nothing changed
        return TestResult(statistic=0.0, p_value=1.0)
    n1, n2 = float(reference_size), float(observed.sum())
    p1 = float(p[occupied[0]])
    p2 = float(observed[occupied[0]]) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return TestResult(statistic=z, p_value=float(2 * special.ndtr(-abs(z))))
