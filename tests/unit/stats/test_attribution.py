"""Attribution counts merge; attribution drift is the total variation between
importance shares, with an insufficient-data rule and a top-k comparison."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import distance

from driftline_operator.stats.attribution import AttributionReference, attribution_drift

FEATURES = ["a", "b", "c", "d"]


def attributions(rng: np.random.Generator, n: int, scale: list[float]) -> np.ndarray:
    return rng.normal(size=(n, len(scale))) * np.asarray(scale)


def test_counts_of_parts_merge_into_the_counts_of_the_whole() -> None:
    rng = np.random.default_rng(1)
    reference = AttributionReference.from_values(FEATURES, attributions(rng, 400, [3, 2, 1, 0.5]))
    values = attributions(rng, 90, [1, 1, 1, 1])
    whole, first, second = reference.empty(), reference.empty(), reference.empty()
    whole.add(values)
    first.add(values[:40])
    second.add(values[40:])
    merged = first.merge(second)
    assert merged.explained == whole.explained == 90
    assert merged.bins == whole.bins
    assert merged.abs_sum == pytest.approx(whole.abs_sum)
    assert merged.importance()["a"] == pytest.approx(np.abs(values[:, 0]).mean())
    assert sum(merged.bins["c"]) == 90


def test_the_same_reliance_is_not_flagged_and_a_moved_one_is() -> None:
    rng = np.random.default_rng(2)
    scale = [3.0, 2.0, 1.0, 0.5]
    reference = AttributionReference.from_values(FEATURES, attributions(rng, 1000, scale))
    same = reference.empty()
    same.add(attributions(rng, 200, [2 * s for s in scale]))  # louder, same shares
    verdict = attribution_drift(reference, same, threshold=0.1, min_explanations=50)
    assert verdict.verdict == "ok"
    assert verdict.distance is not None and verdict.distance < 0.05
    assert not verdict.top_changed

    moved = reference.empty()
    moved_values = attributions(rng, 200, [0.5, 2.0, 1.0, 3.0])  # a and d swapped
    moved.add(moved_values)
    verdict = attribution_drift(reference, moved, threshold=0.1, min_explanations=50)
    assert verdict.verdict == "drifted"
    ref_share = np.abs(reference.counts.abs_sum["a"]) / sum(reference.counts.abs_sum.values())
    assert verdict.features["a"].reference_share == pytest.approx(ref_share)
    now = np.abs(moved_values).mean(axis=0)
    before = np.array([reference.counts.abs_sum[f] for f in FEATURES])
    expected = 0.5 * np.abs(before / before.sum() - now / now.sum()).sum()
    assert verdict.distance == pytest.approx(expected)
    assert verdict.top_reference == ["a", "b", "c"]
    assert verdict.top_current == ["d", "b", "c"] and verdict.top_changed
    js = verdict.features["a"].js_distance
    p, q = reference.counts.bins["a"], moved.bins["a"]
    assert js == pytest.approx(distance.jensenshannon(p, q, base=2.0))


def test_too_few_explanations_are_insufficient_data() -> None:
    rng = np.random.default_rng(3)
    reference = AttributionReference.from_values(FEATURES, attributions(rng, 100, [1, 1, 1, 1]))
    window = reference.empty()
    window.add(attributions(rng, 49, [5, 0, 0, 0]))
    verdict = attribution_drift(reference, window, threshold=0.1, min_explanations=50)
    assert verdict.verdict == "insufficient data" and verdict.distance is None
    assert verdict.explained == 49


def test_counts_in_other_bins_do_not_merge() -> None:
    rng = np.random.default_rng(4)
    one = AttributionReference.from_values(FEATURES, attributions(rng, 100, [1, 1, 1, 1]))
    other = AttributionReference.from_values(FEATURES, attributions(rng, 100, [2, 1, 1, 1]))
    with pytest.raises(ValueError, match="do not merge"):
        one.empty().merge(other.empty())
    with pytest.raises(ValueError, match="3 attributions per row for 4 features"):
        one.empty().add(np.zeros((2, 3)))
