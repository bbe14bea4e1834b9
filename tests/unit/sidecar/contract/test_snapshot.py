"""The snapshot contract: windows subtract across time and add across pods."""

import pytest

from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    BinCounts,
    LayoutMismatch,
    ProcessInfo,
    Snapshot,
    delta,
    merge,
    roll,
)


def snapshot(process_id: str, *, ok: int, bins: list[int], taken_at: float = 0.0) -> Snapshot:
    return Snapshot(
        process=ProcessInfo(id=process_id, pid=1, start_time=0.0),
        taken_at=taken_at,
        model="fraud",
        version="v1",
        role="stable",
        requests={"200": ok},
        features={"amount": BinCounts(counts=bins, missing=1)},
    )


def test_delta_subtracts_counts_of_the_same_process():
    earlier = snapshot("a", ok=10, bins=[1, 2, 3], taken_at=1)
    later = snapshot("a", ok=25, bins=[4, 4, 4], taken_at=2)

    window = delta(later, earlier)

    assert window.requests == {"200": 15}
    assert window.features["amount"].counts == [3, 2, 1]
    assert window.features["amount"].missing == 0
    assert window.taken_at == 2


def test_delta_after_a_restart_is_everything_the_new_process_counted():
    earlier = snapshot("a", ok=100, bins=[9, 9, 9])
    later = snapshot("b", ok=5, bins=[1, 2, 2])

    assert delta(later, earlier) == later


def test_merge_adds_pods_and_keeps_histogram_bounds():
    one = snapshot("a", ok=3, bins=[1, 0, 0])
    two = snapshot("b", ok=4, bins=[0, 1, 5])
    two.requests["503"] = 2

    total = merge([one, two])

    assert total.requests == {"200": 7, "503": 2}
    assert total.features["amount"].counts == [1, 1, 5]
    assert total.latency.bounds == one.latency.bounds


def test_merge_refuses_counts_binned_against_different_profiles():
    one = snapshot("a", ok=1, bins=[1, 0, 0])
    two = snapshot("b", ok=1, bins=[1, 0, 0]).model_copy(update={"profile_sha256": "other"})

    with pytest.raises(ValueError, match="different reference profiles"):
        merge([one, two])


def test_shadow_comparison_counts_add_and_subtract_like_the_rest():
    earlier = snapshot("a", ok=1, bins=[0, 0, 0])
    later = snapshot("a", ok=9, bins=[1, 1, 1])
    later.shadow.mirrored, later.shadow.compared, later.shadow.agreed = 8, 7, 6
    later.shadow.shadow_latency.counts[3] = 7

    window = delta(later, earlier)
    both = merge([window, window])

    assert (both.shadow.mirrored, both.shadow.compared, both.shadow.agreed) == (16, 14, 12)
    assert both.shadow.shadow_latency.counts[3] == 14
    assert both.shadow.shadow_latency.bounds == list(LATENCY_BUCKETS)


def test_roll_adds_and_takes_away_windows_like_merging_the_rest_again():
    one = snapshot("a", ok=3, bins=[1, 0, 0], taken_at=1)
    two = snapshot("b", ok=4, bins=[0, 1, 5], taken_at=2)
    two.requests["503"] = 2
    three = snapshot("c", ok=1, bins=[2, 2, 2], taken_at=3)

    rolled = roll(merge([one, two]), added=[three], removed=[one], like=two)
    again = merge([two, three])

    assert rolled.features == again.features
    assert rolled.requests == again.requests
    assert (rolled.taken_at, rolled.process) == (again.taken_at, again.process)


def test_an_optional_part_one_window_lacks_counts_as_zero():
    with_prediction = snapshot("a", ok=1, bins=[1, 0, 0])
    with_prediction.prediction = BinCounts(counts=[4, 1])
    without = snapshot("b", ok=1, bins=[0, 0, 1])

    assert merge([without, with_prediction]).prediction == BinCounts(counts=[4, 1])
    assert merge([with_prediction, without]).prediction == BinCounts(counts=[4, 1])


def test_counts_of_different_lengths_do_not_merge():
    with pytest.raises(LayoutMismatch, match=r"different lengths \(2 and 3\)"):
        merge([snapshot("a", ok=1, bins=[1, 0, 0]), snapshot("b", ok=1, bins=[1, 0])])


def _with_features(process_id: str, features: dict[str, list[int]]) -> Snapshot:
    window = snapshot(process_id, ok=1, bins=[0, 0, 0])
    window.features = {
        name: BinCounts(counts=c, missing=sum(c) % 3) for name, c in features.items()
    }
    return window


@pytest.mark.parametrize("lacking", [False, True])
def test_features_of_different_bin_counts_add_up_per_feature(lacking):
    one = _with_features("a", {"amount": [1, 2, 3], "country": [4, 5], "age": [0, 1, 0]})
    two = _with_features("b", {"amount": [10, 20, 30], "country": [1, 1], "age": [7, 7, 7]})
    if lacking:  # a feature one pod has not counted yet counts as zero there
        del two.features["age"]

    total = merge([one, two])
    window = delta(two, two.model_copy(update={"features": one.features}))

    for name, feature in total.features.items():
        parts = [w.features[name] for w in (one, two) if name in w.features]
        assert feature.counts == [sum(c) for c in zip(*(p.counts for p in parts), strict=True)]
        assert feature.missing == sum(p.missing for p in parts)
    if not lacking:
        assert window.features["country"].counts == [-3, -4]  # two's counts less one's


def test_a_feature_binned_differently_by_one_pod_does_not_merge():
    one = _with_features("a", {"amount": [1, 2, 3], "country": [4, 5]})
    two = _with_features("b", {"amount": [1, 2], "country": [1, 1]})
    with pytest.raises(LayoutMismatch, match=r"different lengths \(2 and 3\)"):
        merge([one, two])


def test_counts_beyond_64_bits_still_add_up_exactly():
    big = 2**63 - 1  # numpy's int64 overflows here: the general path adds them
    one = _with_features("a", {"amount": [big, 0, 1], "country": [4, 5]})
    two = _with_features("b", {"amount": [big, 1, 1], "country": [1, 1]})

    total = merge([one, two])

    assert total.features["amount"].counts == [2 * big, 1, 2]
    assert total.features["country"].counts == [5, 6]
