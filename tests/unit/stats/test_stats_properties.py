"""Properties of the drift statistics over many generated cases (hypothesis).

Derandomized: the examples are the same on every run, so CI cannot flake.
"""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from driftline_operator.stats import DriftPolicy, judge_feature
from driftline_sidecar.contract.profile import CategoricalProfile, NumericProfile
from driftline_sidecar.contract.snapshot import BinCounts, ProcessInfo, Snapshot, delta, merge

PROPERTIES = settings(derandomize=True, max_examples=40, deadline=None)

EDGES = stats.norm.ppf(np.linspace(0, 1, 11)[1:-1]).tolist()  # deciles of N(0, 1)
NORMAL = NumericProfile(
    edges=EDGES, expected=[0.1] * 10, min=-4.0, max=4.0, mean=0.0, std=1.0, missing_rate=0.0
)
CATEGORIES = CategoricalProfile(
    categories=["a", "b", "c", "d"], expected=[0.4, 0.3, 0.2, 0.1, 0.0], missing_rate=0.0
)


def shifted_proportions(shift: float) -> list[float]:
    """Decile proportions of N(shift, 1) in the N(0, 1) decile bins."""
    cdf = stats.norm.cdf(np.asarray(EDGES), loc=shift)
    return np.diff(np.concatenate(([0.0], cdf, [1.0]))).tolist()


def snapshot(process: str, counts: list[int], *, missing: int = 0) -> Snapshot:
    return Snapshot(
        process=ProcessInfo(id=process, pid=1, start_time=0.0),
        taken_at=0.0,
        model="m",
        version="v1",
        role="stable",
        features={"x": BinCounts(counts=counts, missing=missing)},
    )


def comparable(verdict) -> tuple:
    return (verdict.status, verdict.method, verdict.score, verdict.samples, verdict.stats)


pod_counts = st.lists(st.integers(min_value=0, max_value=400), min_size=10, max_size=10)


@PROPERTIES
@given(
    pods=st.lists(pod_counts, min_size=2, max_size=6),
    order=st.randoms(use_true_random=False),
    reference_rows=st.sampled_from([500, 50_000]),
)
def test_merging_pods_in_any_order_gives_the_same_statistics(pods, order, reference_rows):
    windows = [snapshot(f"pod-{i}", counts) for i, counts in enumerate(pods)]
    shuffled = list(windows)
    order.shuffle(shuffled)
    policy = DriftPolicy(min_samples=1)

    verdicts = [
        judge_feature(
            "x", NORMAL, merge(group).features["x"], policy=policy, reference_rows=reference_rows
        )
        for group in (windows, shuffled, windows[::-1])
    ]

    if sum(map(sum, pods)) == 0:
        assert all(v.status == "insufficient_data" for v in verdicts)
    else:
        first = comparable(verdicts[0])
        for other in verdicts[1:]:
            assert comparable(other)[:2] == first[:2]
            assert math.isclose(other.score, first[2], rel_tol=1e-9, abs_tol=1e-12)
            assert other.stats.keys() == first[4].keys()
            for key, value in first[4].items():
                assert math.isclose(other.stats[key], value, rel_tol=1e-9, abs_tol=1e-12), key


@PROPERTIES
@given(earlier=pod_counts, increments=pod_counts, restarted=st.integers(0, 200))
def test_a_window_is_the_later_snapshot_minus_the_earlier_and_a_restart_starts_over(
    earlier, increments, restarted
):
    later = [a + b for a, b in zip(earlier, increments, strict=True)]
    window = delta(snapshot("p1", later), snapshot("p1", earlier))
    after_restart = delta(snapshot("p2", [restarted] * 10), snapshot("p1", later))

    assert window.features["x"].counts == increments
    assert after_restart.features["x"].counts == [restarted] * 10


@PROPERTIES
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(min_value=20_000, max_value=200_000),
    method=st.sampled_from(["auto", "psi", "jensenshannon", "wasserstein"]),
)
def test_identical_distributions_never_drift_at_large_n(seed, n, method):
    rng = np.random.default_rng(seed)
    policy = DriftPolicy(method=method)
    numeric = BinCounts(counts=rng.multinomial(n, NORMAL.expected).tolist())
    categorical = BinCounts(counts=rng.multinomial(n, CATEGORIES.expected).tolist())

    for profile, counts in ((NORMAL, numeric), (CATEGORIES, categorical)):
        verdict = judge_feature("x", profile, counts, policy=policy, reference_rows=100_000)
        assert verdict.status == "ok", verdict


@PROPERTIES
@given(
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(min_value=0.5, max_value=3.0),
    n=st.integers(min_value=1, max_value=2_000),
    reference_rows=st.sampled_from([800, 100_000]),
)
def test_a_shifted_distribution_is_detected_once_n_passes_the_guard(seed, shift, n, reference_rows):
    rng = np.random.default_rng(seed)
    policy = DriftPolicy(min_samples=200)
    counts = BinCounts(counts=rng.multinomial(n, shifted_proportions(shift)).tolist())

    verdict = judge_feature("x", NORMAL, counts, policy=policy, reference_rows=reference_rows)

    if n < policy.min_samples:
        assert verdict.status == "insufficient_data" and verdict.score is None
    else:
        assert verdict.method == ("ks" if reference_rows <= 1_000 else "wasserstein")
        assert verdict.status == "drift", verdict


@PROPERTIES
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(min_value=300, max_value=5_000),
    moved=st.floats(min_value=0.3, max_value=0.6),
)
def test_a_moved_category_share_is_detected_once_n_passes_the_guard(seed, n, moved):
    rng = np.random.default_rng(seed)
    shares = np.asarray(CATEGORIES.expected)
    shares[0] -= moved * shares[0]
    shares[3] += moved * CATEGORIES.expected[0]
    counts = BinCounts(counts=rng.multinomial(n, shares).tolist())

    for reference_rows in (900, 100_000):
        verdict = judge_feature(
            "c", CATEGORIES, counts, policy=DriftPolicy(), reference_rows=reference_rows
        )
        assert verdict.status == "drift", verdict
