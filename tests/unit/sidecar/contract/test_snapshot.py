"""The snapshot contract: windows subtract across time and add across pods."""

import pytest

from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    BinCounts,
    ProcessInfo,
    Snapshot,
    delta,
    merge,
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
