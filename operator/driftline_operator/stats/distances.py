"""Distances between a reference distribution and a window's, from bin counts.

Every function takes per-bin numbers in the same bin order (the layout in
``driftline_sidecar.profile``) and accepts proportions or counts: both sides
are normalised here, so merged counts from any number of pods go straight in.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import distance
from scipy.stats import wasserstein_distance

from driftline_operator.stats.rows import cdf_gaps, psi_rows, wasserstein_rows
from driftline_operator.stats.samples import clean_sample


def proportions(values: ArrayLike, *, name: str = "counts") -> np.ndarray:
    """``values`` scaled to sum to 1; raises on negatives or an all-zero input."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence of bin values")
    total = float(array.sum())  # inf or nan when any value is
    if not math.isfinite(total) or array.min() < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {array.tolist()}")
    if total <= 0:
        raise ValueError(f"{name} are all zero: there is nothing to compare")
    return array / total


def _pair(expected: ArrayLike, observed: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = proportions(expected, name="expected")
    q = proportions(observed, name="observed")
    if p.size != q.size:
        raise ValueError(
            f"expected has {p.size} bins but observed has {q.size}: "
            "the counts were binned against another reference profile"
        )
    return p, q


def psi(expected: ArrayLike, observed: ArrayLike, *, epsilon: float = 1e-4) -> float:
    """Population stability index, ``sum((q - p) * ln(q / p))``.

    Smoothing: a bin empty on either side would make the log infinite, so each
    proportion is floored at ``epsilon`` (1e-4, as Evidently does) before the
    sum, without renormalising. A bin the reference never saw that now holds a
    share ``q`` therefore adds about ``q * ln(q / 1e-4)``: large, but finite.
    """
    p, q = _pair(expected, observed)
    return float(psi_rows(p[None], q[None], epsilon=epsilon)[0])


def jensen_shannon(expected: ArrayLike, observed: ArrayLike) -> float:
    """Jensen-Shannon distance with base-2 logarithms, so it lies in [0, 1].

    Evidently uses natural logarithms (range [0, sqrt(ln 2)] ≈ [0, 0.833]);
    multiply this value by ``sqrt(ln 2)`` to compare with its numbers.
    """
    p, q = _pair(expected, observed)
    value = float(distance.jensenshannon(p, q, base=2.0))
    # Identical inputs can give a tiny negative under the square root -> nan.
    return 0.0 if math.isnan(value) else min(value, 1.0)


def bin_points(edges: ArrayLike, *, low: float, high: float) -> np.ndarray:
    """One representative point per numeric bin, for distances over bins.

    Interior bins are represented by their midpoints. The open end bins have
    no width of their own: bin 0 is placed one width of its neighbour below
    ``edges[0]`` (near the conditional mean of a bell-shaped tail: for a
    normal cut at its 10 % quantile the tail's mean lies 0.47 sd out, the
    neighbouring decile is 0.44 sd wide), but never below the reference
    minimum ``low`` — then at the midpoint of ``[low, edges[0]]``, which is
    right for flat data. The last bin mirrors this against ``high``. With one
    edge, the "neighbour" is half of ``[low, high]``.
    """
    e = [float(edge) for edge in np.asarray(edges, dtype=np.float64)]
    if not e:
        return np.array([0.5 * (low + high)])
    nominal = (high - low) / 2 if math.isfinite(high - low) and high > low else 1.0
    below = e[0] - (e[1] - e[0] if len(e) > 1 else nominal)
    above = e[-1] + (e[-1] - e[-2] if len(e) > 1 else nominal)
    if math.isfinite(low) and below < low:
        below = (low + e[0]) / 2
    if math.isfinite(high) and above > high:
        above = (high + e[-1]) / 2
    middles = [(a + b) / 2 for a, b in pairwise(e)]
    return np.array([below, *middles, above])


def wasserstein_binned(
    edges: ArrayLike,
    expected: ArrayLike,
    observed: ArrayLike,
    *,
    reference_std: float,
    low: float,
    high: float,
) -> float:
    """First Wasserstein distance between binned distributions, divided by the
    reference standard deviation (Evidently's "normed" Wasserstein, whose
    drift threshold is 0.1).

    Each bin's mass sits at its representative point (``bin_points``), and
    the distance is ``sum |F_p - F_q| * gap`` over the gaps between
    consecutive points: exact for those point masses, and for raw data a
    close estimate whenever the bins are narrow where the mass is. The
    standard deviation is floored at 0.001 as Evidently does.
    """
    p, q = _pair(expected, observed)
    points = bin_points(edges, low=low, high=high)
    if points.size != p.size:
        raise ValueError(f"{np.size(edges)} edges make {points.size} bins, counts have {p.size}")
    std = np.array([reference_std], dtype=np.float64)
    return float(wasserstein_rows(cdf_gaps(p[None], q[None]), np.diff(points)[None], std)[0])


def wasserstein_samples(reference: ArrayLike, current: ArrayLike) -> float:
    """Normed Wasserstein distance on raw samples (scipy), as Evidently computes it."""
    ref = clean_sample(reference, name="reference")
    cur = clean_sample(current, name="current")
    return float(wasserstein_distance(ref, cur)) / max(float(np.std(ref)), 0.001)
