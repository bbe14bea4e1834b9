"""Every statistic against scipy on the same raw data.

Tolerances for the binned forms (10 quantile bins of the reference):
- chi-square, PSI, Jensen-Shannon are defined on bins: they must match scipy
  (or the textbook formula) to floating-point precision.
- binned KS: the statistic is the raw one restricted to the bin edges, so it
  is <= the raw statistic and, for continuous data in 10 deciles, within 0.02
  of it; the p-value uses the Kolmogorov limit with Stephens' correction and
  must be within 0.01 of scipy's exact p-value for the binned statistic.
- binned Wasserstein: within 15 % of scipy's raw-sample value for location
  shifts of normal data (it cannot see moves inside a bin, so scale changes
  are underestimated; that case is asserted as a lower bound).
"""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from driftline_operator.stats import (
    DriftPolicy,
    TestResult,
    bin_points,
    chi_square,
    jensen_shannon,
    judge_dataset,
    judge_feature,
    ks_binned,
    ks_samples,
    psi,
    wasserstein_binned,
    wasserstein_samples,
    z_test,
)
from driftline_sidecar.contract.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    SourceInfo,
    bin_categorical,
    bin_numeric,
)
from driftline_sidecar.contract.snapshot import BinCounts

RNG_SEED = 20240601


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def numeric_profile(reference: np.ndarray, *, bins: int = 10) -> NumericProfile:
    edges = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    counts = np.asarray(bin_numeric(reference, edges).counts)
    return NumericProfile(
        edges=edges.tolist(),
        expected=(counts / counts.sum()).tolist(),
        min=float(reference.min()),
        max=float(reference.max()),
        mean=float(reference.mean()),
        std=float(reference.std()),
        missing_rate=0.0,
    )


def window(profile: NumericProfile, values: np.ndarray) -> BinCounts:
    batch = bin_numeric(values, profile.edges, low=profile.min, high=profile.max)
    return BinCounts(**batch.model_dump())


# --- chi-square ---------------------------------------------------------------


def test_chi_square_matches_scipy_chisquare_on_the_same_counts(rng):
    categories = ["a", "b", "c", "d"]
    reference = rng.choice(categories, size=5_000, p=[0.4, 0.3, 0.2, 0.1])
    current = rng.choice(categories, size=800, p=[0.35, 0.3, 0.2, 0.15])
    expected = np.asarray(bin_categorical(reference, categories).counts[:-1]) / 5_000
    observed = bin_categorical(current, categories).counts[:-1]

    ours = chi_square(expected, observed)
    theirs = stats.chisquare(observed, expected * sum(observed))

    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)


def test_chi_square_drops_empty_reference_bins_and_flags_filled_ones():
    with_empty = chi_square([0.5, 0.5, 0.0], [40, 60, 0])
    theirs = stats.chisquare([40, 60], [50, 50])
    assert with_empty.p_value == pytest.approx(theirs.pvalue)

    impossible = chi_square([0.5, 0.5, 0.0], [40, 60, 1])
    assert impossible == TestResult(statistic=math.inf, p_value=0.0)


def test_chi_square_of_a_single_possible_bin_is_no_evidence():
    assert chi_square([1.0, 0.0], [25, 0]) == TestResult(statistic=0.0, p_value=1.0)


# --- Kolmogorov-Smirnov -------------------------------------------------------


def test_ks_samples_is_scipy_ks_2samp_without_missing_values(rng):
    reference = rng.normal(size=700)
    current = rng.normal(0.2, 1.0, size=300)
    with_gaps = [*current.tolist(), None, math.nan]

    ours = ks_samples(reference, with_gaps)
    theirs = stats.ks_2samp(reference, current)

    assert ours.statistic == theirs.statistic
    assert ours.p_value == theirs.pvalue


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.3])
def test_ks_binned_statistic_is_a_close_lower_bound_of_the_raw_one(rng, shift):
    reference = rng.normal(size=20_000)
    current = rng.normal(shift, 1.0, size=2_000)
    profile = numeric_profile(reference)

    ours = ks_binned(profile.expected, window(profile, current).counts, reference_size=20_000)
    raw = stats.ks_2samp(reference, current)

    assert ours.statistic <= raw.statistic + 1e-12
    assert raw.statistic - ours.statistic < 0.02


@pytest.mark.parametrize(("n", "m"), [(60, 40), (500, 300), (20_000, 2_000)])
def test_ks_binned_p_value_matches_scipy_for_the_same_statistic(rng, n, m):
    expected = np.full(10, 0.1)
    observed = rng.multinomial(m, [0.07, 0.08, 0.09, 0.1, 0.1, 0.1, 0.11, 0.11, 0.12, 0.12])

    ours = ks_binned(expected, observed, reference_size=n)
    effective = round(n * m / (n + m))
    exact = stats.kstwo.sf(ours.statistic, effective)  # what ks_2samp's asymp mode uses

    assert ours.p_value == pytest.approx(exact, abs=0.01)


def test_ks_binned_equals_the_raw_test_when_each_value_has_its_own_bin(rng):
    values = np.arange(6, dtype=float)
    reference = rng.choice(values, size=3_000, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
    current = rng.choice(values, size=3_000, p=[0.2, 0.2, 0.2, 0.2, 0.1, 0.1])
    edges = values[1:]
    expected = np.asarray(bin_numeric(reference, edges).counts) / 3_000

    ours = ks_binned(expected, bin_numeric(current, edges).counts, reference_size=3_000)

    assert ours.statistic == pytest.approx(stats.ks_2samp(reference, current).statistic)


# --- distances ----------------------------------------------------------------


def test_jensen_shannon_is_scipy_base_2_on_normalised_counts():
    expected = [0.5, 0.3, 0.2]
    observed = [30, 50, 20]

    assert jensen_shannon(expected, observed) == pytest.approx(
        distance.jensenshannon([0.5, 0.3, 0.2], [0.3, 0.5, 0.2], base=2)
    )
    assert jensen_shannon(expected, [50, 30, 20]) == 0.0
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)


def test_psi_is_the_textbook_formula_with_empty_bins_floored():
    p = np.array([0.25, 0.25, 0.5])
    q = np.array([0.2, 0.3, 0.5])
    textbook = float(np.sum((q - p) * np.log(q / p)))

    assert psi(p, q * 1000) == pytest.approx(textbook)
    assert psi(p, p) == 0.0
    # An empty reference bin: q * ln(q / 1e-4) dominates, finite.
    assert psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) == pytest.approx(
        2 * (-0.1 * math.log(0.8)) + (0.2 - 1e-4) * math.log(0.2 / 1e-4)
    )


def wasserstein_binned_and_exact(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Our binned distance from a profile of ``reference``, and scipy's on the raw samples
    (both in reference standard deviations)."""
    profile = numeric_profile(reference)
    ours = wasserstein_binned(
        profile.edges,
        profile.expected,
        window(profile, current).counts,
        reference_std=profile.std,
        low=profile.min,
        high=profile.max,
    )
    return ours, stats.wasserstein_distance(reference, current) / reference.std()


@pytest.mark.parametrize("shift", [0.1, 0.25, 0.5, 1.0])
def test_wasserstein_binned_is_within_15_percent_of_scipy_for_shifts(rng, shift):
    reference = rng.normal(size=50_000)
    current = rng.normal(shift, 1.0, size=10_000)
    ours, raw = wasserstein_binned_and_exact(reference, current)

    assert ours == pytest.approx(raw, rel=0.15)


def test_wasserstein_binned_underestimates_a_scale_change_but_still_sees_it(rng):
    reference = rng.normal(size=50_000)
    current = rng.normal(0.0, 1.5, size=10_000)
    ours, raw = wasserstein_binned_and_exact(reference, current)

    assert 0.1 < ours <= raw


def test_wasserstein_is_exact_for_point_masses_at_the_bin_points():
    edges = [0.0, 1.0, 2.0]
    points = bin_points(edges, low=-5.0, high=5.0)
    p = np.array([0.1, 0.4, 0.4, 0.1])
    q = np.array([0.3, 0.3, 0.2, 0.2])

    ours = wasserstein_binned(edges, p, q, reference_std=1.0, low=-5.0, high=5.0)
    exact = stats.wasserstein_distance(points, points, u_weights=p, v_weights=q)

    assert points.tolist() == [-1.0, 0.5, 1.5, 3.0]
    assert ours == pytest.approx(exact)


def test_wasserstein_samples_is_evidentlys_normed_scipy_distance(rng):
    reference = rng.normal(size=1_000)
    current = rng.normal(0.3, 1.0, size=500)

    assert wasserstein_samples(reference, current) == pytest.approx(
        stats.wasserstein_distance(reference, current) / np.std(reference)
    )


def test_z_test_matches_the_two_proportion_formula():
    result = z_test([0.6, 0.4, 0.0], [500, 500, 0], reference_size=1_000)
    pooled = (0.6 * 1_000 + 0.5 * 1_000) / 2_000
    z = (0.6 - 0.5) / math.sqrt(pooled * (1 - pooled) * (2 / 1_000))

    assert result.statistic == pytest.approx(z)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: psi([0.5, 0.5], [1, 2, 3]), "binned against another reference profile"),
        (lambda: psi([0.5, 0.5], [0, 0]), "all zero"),
        (lambda: jensen_shannon([0.5, -0.5], [1, 1]), "non-negative"),
        (lambda: chi_square([0.5, 0.5], [1, math.nan]), "finite"),
        (lambda: ks_binned([0.5, 0.5], [1, 1], reference_size=0), "reference_size"),
        (lambda: ks_samples([None, math.nan], [1.0]), "reference sample holds no finite"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- verdicts -------------------------------------------------------------------


def test_auto_uses_ks_on_small_references_and_wasserstein_on_large(rng):
    reference = rng.normal(size=5_000)
    profile = numeric_profile(reference)
    counts = window(profile, rng.normal(0.3, 1.0, size=400))

    small = judge_feature("x", profile, counts, policy=DriftPolicy(), reference_rows=800)
    large = judge_feature("x", profile, counts, policy=DriftPolicy(), reference_rows=5_000)

    assert (small.method, small.threshold, small.status) == ("ks", 0.05, "drift")
    assert small.score == small.stats["ks_p_value"] < 0.05
    assert (large.method, large.threshold, large.status) == ("wasserstein", 0.1, "drift")
    assert large.score == large.stats["wasserstein"]


def test_auto_uses_exact_ks_when_both_raw_samples_exist(rng):
    reference = rng.normal(size=800)
    current = rng.normal(0.4, 1.0, size=300)
    profile = numeric_profile(reference)

    verdict = judge_feature(
        "x",
        profile,
        window(profile, current),
        policy=DriftPolicy(),
        sample=current.tolist(),
        reference_sample=reference.tolist(),
        reference_rows=800,
    )

    assert verdict.method == "ks_samples"
    assert verdict.score == pytest.approx(stats.ks_2samp(reference, current).pvalue)
    assert verdict.status == "drift"


def test_auto_for_categoricals_follows_evidently():
    profile = CategoricalProfile(
        categories=["a", "b", "c"], expected=[0.5, 0.3, 0.2, 0.0], missing_rate=0
    )
    binary = CategoricalProfile(categories=["yes", "no"], expected=[0.7, 0.3, 0.0], missing_rate=0)
    counts = BinCounts(counts=[100, 100, 100, 0])

    small = judge_feature("c", profile, counts, policy=DriftPolicy(), reference_rows=900)
    large = judge_feature("c", profile, counts, policy=DriftPolicy(), reference_rows=9_000)
    z = judge_feature(
        "b", binary, BinCounts(counts=[140, 60, 0]), policy=DriftPolicy(), reference_rows=500
    )

    assert (small.method, small.status) == ("chisquare", "drift")
    assert large.method == "jensenshannon"
    assert large.threshold == pytest.approx(0.1 / math.sqrt(math.log(2)))
    assert large.score == pytest.approx(jensen_shannon([0.5, 0.3, 0.2, 0], [1, 1, 1, 0]))
    assert (z.method, z.status) == ("z", "ok")


def test_explicit_method_and_threshold_and_per_kind_override(rng):
    profile = numeric_profile(rng.normal(size=5_000))
    counts = window(profile, rng.normal(0.5, 1.0, size=1_000))
    categorical = CategoricalProfile(categories=["a"], expected=[0.9, 0.1], missing_rate=0)

    default_psi = judge_feature("x", profile, counts, policy=DriftPolicy(method="psi"))
    strict = judge_feature("x", profile, counts, policy=DriftPolicy(method="psi", threshold=5.0))
    ks_on_category = judge_feature(
        "c", categorical, BinCounts(counts=[900, 100]), policy=DriftPolicy(method="ks")
    )

    assert (default_psi.method, default_psi.threshold, default_psi.status) == ("psi", 0.2, "drift")
    assert strict.status == "ok"
    assert ks_on_category.method == "chisquare"  # KS has no meaning for categories
    assert ks_on_category.status == "ok"


def test_too_few_samples_is_insufficient_data_not_a_verdict():
    profile = CategoricalProfile(categories=["a"], expected=[0.9, 0.1], missing_rate=0.1)

    verdict = judge_feature(
        "c", profile, BinCounts(counts=[0, 99], missing=99), policy=DriftPolicy(min_samples=100)
    )

    assert verdict.status == "insufficient_data"
    assert verdict.score is None and verdict.stats == {}
    assert verdict.missing_rate == pytest.approx(0.5)
    assert verdict.missing_rate_change == pytest.approx(0.4)


def test_counts_from_another_profile_are_refused():
    profile = CategoricalProfile(categories=["a"], expected=[0.9, 0.1], missing_rate=0)

    with pytest.raises(ValueError, match="feature 'c': the window has 3 bins"):
        judge_feature("c", profile, BinCounts(counts=[1, 2, 3]), policy=DriftPolicy())


def test_dataset_verdict_is_the_share_of_drifted_features(rng):
    a = numeric_profile(rng.normal(size=5_000))
    b = numeric_profile(rng.normal(size=5_000))
    c = CategoricalProfile(categories=["x", "y"], expected=[0.5, 0.5, 0.0], missing_rate=0)
    score = numeric_profile(rng.uniform(size=5_000))
    profile = ReferenceProfile(
        created_at="2024-06-01T00:00:00Z",
        source=SourceInfo(path="train.csv", sha256="0" * 64, rows=5_000),
        features={"a": a, "b": b, "c": c, "d": c},
        prediction=score,
        prediction_column="score",
    )
    windows = {
        "a": window(a, rng.normal(1.0, 1.0, size=2_000)),  # drifted
        "b": window(b, rng.normal(size=2_000)),
        "c": BinCounts(counts=[1_000, 1_000, 0], out_of_range=0),
        "unknown": BinCounts(counts=[1]),
    }

    result = judge_dataset(
        profile,
        windows,
        policy=DriftPolicy(),
        share_threshold=0.3,
        prediction=window(score, rng.uniform(size=2_000)),
    )

    assert [f.feature for f in result.features] == ["a", "b", "c", "d"]
    assert result.drifted == ["a"]
    assert result.insufficient == ["d"]
    assert result.drifted_share == pytest.approx(1 / 3)
    assert result.drift is True
    assert result.prediction is not None
    assert (result.prediction.feature, result.prediction.status) == ("score", "ok")
    assert judge_dataset(profile, windows, policy=DriftPolicy()).drift is False


def test_verdict_stats_are_the_public_statistics(rng):
    reference = rng.normal(size=5_000)
    profile = numeric_profile(reference)
    counts = window(profile, rng.normal(0.2, 1.1, size=700))

    verdict = judge_feature("x", profile, counts, policy=DriftPolicy(), reference_rows=5_000)

    expected, observed = profile.expected, counts.counts
    ks = ks_binned(expected, observed, reference_size=5_000)
    chi2 = chi_square(expected, observed)
    assert verdict.stats == pytest.approx(
        {
            "psi": psi(expected, observed),
            "jensenshannon": jensen_shannon(expected, observed),
            "chisquare_statistic": chi2.statistic,
            "chisquare_p_value": chi2.p_value,
            "ks_statistic": ks.statistic,
            "ks_p_value": ks.p_value,
            "wasserstein": wasserstein_binned(
                profile.edges,
                expected,
                observed,
                reference_std=profile.std,
                low=profile.min,
                high=profile.max,
            ),
        },
        rel=1e-9,
    )


def test_all_stats_off_reports_only_the_verdicts_statistic(rng):
    profile = numeric_profile(rng.normal(size=5_000))
    counts = window(profile, rng.normal(size=700))

    verdict = judge_feature(
        "x", profile, counts, policy=DriftPolicy(all_stats=False), reference_rows=800
    )

    assert verdict.method == "ks"
    assert set(verdict.stats) == {"ks_statistic", "ks_p_value"}
    assert verdict.score == verdict.stats["ks_p_value"]
