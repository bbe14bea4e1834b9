"""Canary-versus-stable and shadow judgements, checked against scipy and statsmodels."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from driftline_operator.api.spec import Comparison, Slo
from driftline_operator.rollout.compare import (
    StableBaseline,
    compare,
    histogram_quantile,
    homogeneity_p_value,
    judge_alone,
    judge_shadow,
    score_distance,
    two_proportion_p_value,
)
from driftline_operator.stats.attribution import AttributionReference, PairedAttributions
from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    BinCounts,
    Histogram,
    ProcessInfo,
    ShadowCounts,
    Snapshot,
)


def histogram(latencies_s: list[float] | np.ndarray) -> Histogram:
    index = np.searchsorted(LATENCY_BUCKETS, latencies_s, side="left")
    counts = np.bincount(index, minlength=len(LATENCY_BUCKETS) + 1)
    return Histogram(counts=counts.tolist(), sum=float(np.sum(latencies_s)))


def window(
    *,
    ok: int,
    errors: int = 0,
    latency_s: float = 0.02,
    scores: list[int] | None = None,
    role: str = "stable",
) -> Snapshot:
    n = ok + errors
    spread = np.linspace(0.5, 1.5, n) * latency_s  # a spread of latencies around the centre
    return Snapshot(
        process=ProcessInfo(id=role, pid=1, start_time=0.0),
        taken_at=0.0,
        model="fraud",
        version="v1" if role == "stable" else "v2",
        role=role,  # type: ignore[arg-type]
        requests={"200": ok, "503": errors} if errors else {"200": ok},
        latency=histogram(spread),
        prediction=BinCounts(counts=scores) if scores is not None else None,
    )


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(10, 1000, 25, 1000), (3, 200, 4, 180), (0, 500, 7, 500), (50, 400, 30, 400)],
)
def test_two_proportion_p_value_matches_the_chi_square_test(x1, n1, x2, n2):
    # A 2x2 chi-square without continuity correction is the two-sided z-test
    # squared; the one-sided p is half of it on the side of the difference.
    _, two_sided, _, _ = stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    one_sided = two_proportion_p_value(x1, n1, x2, n2)
    expected = two_sided / 2 if x2 / n2 > x1 / n1 else 1 - two_sided / 2
    assert one_sided == pytest.approx(expected, rel=1e-9)


def test_two_proportion_p_value_matches_statsmodels():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    _, expected = proportion.proportions_ztest(
        [25, 10], [1000, 1000], alternative="larger", prop_var=False
    )
    assert two_proportion_p_value(10, 1000, 25, 1000) == pytest.approx(expected, rel=1e-9)


def test_no_errors_on_either_side_is_not_significant():
    assert two_proportion_p_value(0, 100, 0, 100) == 1.0


def test_score_distance_is_scipy_jensen_shannon_in_base_2():
    a, b = [10, 30, 50, 10], [40, 30, 20, 10]
    assert score_distance(a, b) == pytest.approx(distance.jensenshannon(a, b, base=2))
    assert score_distance(a, a) == pytest.approx(0.0, abs=1e-7)
    assert score_distance([1, 0], [0, 1]) == pytest.approx(1.0)


def test_histogram_quantile_interpolates_inside_the_bucket():
    h = Histogram(bounds=[0.1, 0.2, 0.4], counts=[50, 30, 20, 0])
    assert histogram_quantile(h, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(h, 0.65) == pytest.approx(0.15)
    assert histogram_quantile(h, 0.9) == pytest.approx(0.3)
    assert histogram_quantile(Histogram(bounds=[0.1], counts=[0, 0]), 0.5) is None
    assert histogram_quantile(Histogram(bounds=[0.1], counts=[0, 5]), 0.5) == 0.1


def test_histogram_quantile_is_close_to_the_sample_quantile():
    latencies = np.random.default_rng(7).lognormal(np.log(0.03), 0.4, 20_000)
    estimate = histogram_quantile(histogram(latencies), 0.95)
    true = np.quantile(latencies, 0.95)
    # Buckets bound the resolution: the estimate lies in the true value's bucket.
    upper = int(np.searchsorted(LATENCY_BUCKETS, true))
    assert LATENCY_BUCKETS[upper - 1] <= estimate <= LATENCY_BUCKETS[upper]
    assert estimate == pytest.approx(true, rel=0.15)


COMPARISON = Comparison(max_error_rate_increase=0.01, max_latency_increase="20ms")


def test_healthy_canary_is_ok_with_every_number():
    verdict = compare(
        window(ok=1000, errors=2), window(ok=500, errors=1, role="canary"), COMPARISON
    )
    assert verdict.verdict == "ok"
    assert [c.name for c in verdict.checks] == ["errorRate", "latency", "scoreDrift"]
    errors = verdict.checks[0]
    assert errors.stable == pytest.approx(2 / 1002)
    assert errors.candidate == pytest.approx(1 / 501)
    assert verdict.stable_requests == 1002 and verdict.candidate_requests == 501


def test_significantly_more_errors_beyond_the_margin_fails():
    verdict = compare(
        window(ok=1000, errors=5), window(ok=470, errors=30, role="canary"), COMPARISON
    )
    assert verdict.verdict == "fail"
    assert [c.name for c in verdict.failed] == ["errorRate"]
    assert verdict.failed[0].p_value == pytest.approx(two_proportion_p_value(5, 1005, 30, 500))
    assert "z-test" in verdict.failed[0].message
    assert "CanaryWorse" in verdict.reason and "30/500" in verdict.reason


def test_a_few_extra_errors_on_a_small_canary_are_noise():
    # 2/60 = 3.3 % against 0.5 %: beyond the margin, but two errors prove nothing.
    # (The z-test would say p=0.004; with so few expected errors Fisher's exact
    # test is the one to trust.)
    stable, canary = window(ok=995, errors=5), window(ok=58, errors=2, role="canary")
    verdict = compare(stable, canary, COMPARISON)
    p = verdict.checks[0].p_value
    assert (
        verdict.checks[0].candidate - verdict.checks[0].stable > COMPARISON.max_error_rate_increase
    )
    assert p is not None and p > 0.05
    assert p == pytest.approx(stats.fisher_exact([[2, 58], [5, 995]], alternative="greater").pvalue)
    assert "Fisher exact" in verdict.checks[0].message
    assert verdict.verdict == "ok"


def test_latency_regression_fails():
    verdict = compare(window(ok=500), window(ok=500, latency_s=0.2, role="canary"), COMPARISON)
    assert [c.name for c in verdict.failed] == ["latency"]
    assert verdict.failed[0].candidate > verdict.failed[0].stable + 0.02


def test_score_drift_between_versions_fails():
    stable = window(ok=500, scores=[100, 200, 150, 50])
    canary = window(ok=500, scores=[20, 60, 170, 250], role="canary")
    verdict = compare(stable, canary, COMPARISON)
    assert [c.name for c in verdict.failed] == ["scoreDrift"]
    assert verdict.failed[0].candidate == pytest.approx(
        distance.jensenshannon([100, 200, 150, 50], [20, 60, 170, 250], base=2)
    )


def test_classes_are_compared_when_there_is_no_score():
    stable, canary = window(ok=500), window(ok=500, role="canary")
    stable.classes.update({"fraud": 50, "ok": 450})
    canary.classes.update({"fraud": 400, "ok": 100})
    verdict = compare(stable, canary, COMPARISON)
    assert [c.name for c in verdict.failed] == ["scoreDrift"]


def test_too_few_requests_is_insufficient_data_not_a_verdict():
    verdict = compare(window(ok=1000), window(ok=10, errors=10, role="canary"), COMPARISON)
    assert verdict.verdict == "insufficient_data"
    assert verdict.reason.startswith("InsufficientData")
    assert "20" in verdict.reason


def test_canary_must_meet_the_slos_on_its_own():
    slos = [
        Slo(name="p95", metric="latency", quantile=0.95, max="25ms"),
        Slo(name="availability", metric="successRate", objective="99%"),
    ]
    # Stable is just as slow and as failing: the comparison passes, the SLOs do not.
    stable = window(ok=900, errors=100, latency_s=0.05)
    canary = window(ok=450, errors=50, latency_s=0.05, role="canary")
    verdict = compare(stable, canary, COMPARISON, slos)
    assert verdict.verdict == "fail"
    assert [c.name for c in verdict.failed] == ["slo/p95", "slo/availability"]


def test_judge_alone_for_guard():
    slos = [Slo(name="availability", metric="successRate", objective="99.9%")]
    assert judge_alone(window(ok=10), slos).verdict == "insufficient_data"
    assert judge_alone(window(ok=1000), slos).verdict == "ok"
    # one error in 1000 is within 99.9 %; 20 is a significant breach
    assert judge_alone(window(ok=999, errors=1), slos).verdict == "ok"
    broken = judge_alone(window(ok=980, errors=20), slos)
    assert broken.verdict == "fail" and broken.reason.startswith("SLOBreach")


def test_shadow_fit_when_disagreement_is_confidently_small():
    fit = judge_shadow(ShadowCounts(compared=2000, agreed=1980, mirrored=2000), COMPARISON)
    assert fit.verdict == "ok"
    disagreement = fit.checks[0]
    ci = stats.binomtest(20, 2000).proportion_ci(confidence_level=0.9)
    assert disagreement.candidate == pytest.approx(0.01)
    assert f"{ci.high:.2%}" in disagreement.message


def test_shadow_unfit_and_undecided():
    unfit = judge_shadow(ShadowCounts(compared=1000, agreed=850), COMPARISON)
    assert unfit.verdict == "fail" and unfit.reason.startswith("ShadowWorse")
    # 4 % observed against a 5 % margin on 100 requests: the CI straddles it
    undecided = judge_shadow(ShadowCounts(compared=100, agreed=96), COMPARISON)
    assert undecided.verdict == "insufficient_data"
    assert judge_shadow(ShadowCounts(compared=10, agreed=10), COMPARISON).verdict == (
        "insufficient_data"
    )


def test_shadow_regression_and_errors():
    margins = Comparison(max_score_difference=0.5)
    close = ShadowCounts(compared=200, abs_difference_sum=40.0)
    far = ShadowCounts(compared=200, abs_difference_sum=400.0)
    assert judge_shadow(close, margins, task="regression").verdict == "ok"
    assert judge_shadow(far, margins, task="regression").verdict == "fail"
    erroring = ShadowCounts(compared=500, agreed=500, mirrored=600, shadow_errors=100)
    verdict = judge_shadow(erroring, COMPARISON)
    assert [c.name for c in verdict.failed] == ["errorRate"]


def test_score_drift_by_chance_in_small_windows_is_not_a_failure():
    rng = np.random.default_rng(3)
    chance_failures = 0
    for _ in range(200):
        stable = rng.multinomial(900, [0.1] * 10).tolist()
        canary = rng.multinomial(100, [0.1] * 10).tolist()
        check = compare(
            window(ok=900, scores=stable), window(ok=100, scores=canary, role="canary"), COMPARISON
        ).checks[-1]
        assert check.name == "scoreDrift"
        chance_failures += check.verdict == "fail"
    # By distance alone most of these would fail (JS ~0.13 > 0.1); with the
    # significance test about alpha (5 %) of healthy windows do, well under 10 %.
    assert chance_failures <= 200 * 0.10


def test_homogeneity_p_value_is_scipy_chi2_contingency():
    a, b = [30, 50, 0, 20], [10, 40, 0, 50]
    expected = stats.chi2_contingency([[30, 50, 20], [10, 40, 50]], correction=False).pvalue
    assert homogeneity_p_value(a, b) == pytest.approx(expected)
    assert homogeneity_p_value([5, 0], [7, 0]) == 1.0


def test_at_full_weight_the_canary_is_judged_against_stables_last_full_window():
    baseline = StableBaseline(min_requests=50)
    full, empty = window(ok=500), window(ok=0)

    assert baseline.choose(full, weight=50) == (full, False)
    assert baseline.choose(empty, weight=50) == (empty, False)  # below 100 %: no substitute
    assert baseline.choose(empty, weight=100) == (full, True)
    assert baseline.choose(None, weight=100) == (full, True)
    assert StableBaseline().choose(None, weight=100) == (None, False)


# -- what the candidate relies on ----------------------------------------------


def paired(stable_scale: list[float], candidate_scale: list[float], n: int) -> PairedAttributions:
    rng = np.random.default_rng(5)
    signs = rng.choice([-1.0, 1.0], size=(n, len(stable_scale)))  # |SHAP| is the scale
    reference = AttributionReference.from_values(["a", "b", "c"], signs * stable_scale)
    pairs = PairedAttributions.empty(reference)
    pairs.add(signs * stable_scale, signs * candidate_scale)
    return pairs


RELIANCE = Comparison(max_attribution_distance=0.2)


def test_attributions_are_not_compared_unless_asked():
    moved = paired([3, 1, 0.5], [0.5, 1, 3], 50)
    stable, canary = window(ok=500), window(ok=500, role="canary")
    verdict = compare(stable, canary, COMPARISON, attributions=moved, min_explanations=10)
    assert "attributions" not in [c.name for c in verdict.checks]
    assert verdict == compare(stable, canary, COMPARISON)


def test_a_candidate_relying_on_other_features_fails():
    moved = paired([3, 1, 0.5], [0.5, 1, 3], 50)
    verdict = compare(
        window(ok=500),
        window(ok=500, role="canary"),
        RELIANCE,
        attributions=moved,
        min_explanations=10,
    )
    assert verdict.verdict == "fail"
    check = verdict.failed[0]
    assert check.name == "attributions" and check.limit == 0.2
    # shares (0.667, 0.222, 0.111) against (0.111, 0.222, 0.667): 0.556 of the reliance moved
    assert check.candidate == pytest.approx(5 / 9)
    assert "top stable a, b, c; canary c, b, a" in check.message
    assert verdict.reason.startswith("CanaryWorse: attributions:")


def test_the_same_reliance_louder_passes():
    louder = paired([3, 1, 0.5], [6, 2, 1], 50)  # every attribution doubled: same shares
    verdict = compare(
        window(ok=500),
        window(ok=500, role="canary"),
        RELIANCE,
        attributions=louder,
        min_explanations=10,
    )
    assert verdict.verdict == "ok"
    assert verdict.checks[-1].name == "attributions"
    assert verdict.checks[-1].candidate == pytest.approx(0.0, abs=1e-12)
    assert verdict.reason.endswith(
        "reliance: total variation 0.000 between the attribution "
        "shares on 50 rows explained against both (top stable a, b, c; "
        "canary a, b, c); allowed 0.200"
    )


@pytest.mark.parametrize("explained", [None, 9])
def test_too_few_rows_explained_on_both_holds_the_canary(explained):
    pairs = None if explained is None else paired([3, 1, 0.5], [0.5, 1, 3], explained)
    verdict = compare(
        window(ok=500),
        window(ok=500, role="canary"),
        RELIANCE,
        attributions=pairs,
        min_explanations=10,
    )
    assert verdict.verdict == "insufficient_data"
    assert verdict.reason == (
        f"InsufficientExplanations: attributions: insufficient explanations: {explained or 0} "
        "rows explained against both models, need 10 (spec.explain.minExplanations)"
    )


def test_a_failure_elsewhere_is_not_held_for_explanations():
    verdict = compare(
        window(ok=1000, errors=5),
        window(ok=470, errors=30, role="canary"),
        RELIANCE,
        attributions=None,
        min_explanations=10,
    )
    assert verdict.verdict == "fail"
    assert [c.name for c in verdict.failed] == ["errorRate"]


def test_paired_attributions_need_the_same_rows_on_both_sides():
    pairs = paired([1, 1, 1], [1, 1, 1], 5)
    with pytest.raises(ValueError, match="the same rows must be explained against both"):
        pairs.add(np.ones((3, 3)), np.ones((2, 3)))
