"""Binning live values into a reference profile's bins (the layout in profile.py)."""

import math

import numpy as np
import pytest

from driftline_sidecar.contract.profile import bin_categorical, bin_numeric


def test_numeric_bins_are_closed_on_the_left_with_open_ends():
    batch = bin_numeric([-5.0, 0.0, 0.5, 1.0, 2.0, 99.0], edges=[0.0, 1.0])

    assert batch.counts == [1, 2, 3]
    assert batch.missing == 0


def test_missing_values_are_counted_apart_and_out_of_range_still_binned():
    batch = bin_numeric([None, math.nan, 0.5, 10.0], edges=[1.0], low=0.0, high=5.0)

    assert batch.counts == [1, 1]
    assert batch.missing == 2
    assert batch.out_of_range == 1


def test_numeric_binning_agrees_with_numpy_histogram():
    rng = np.random.default_rng(7)
    values = rng.normal(size=10_000)
    edges = np.quantile(values, np.linspace(0.1, 0.9, 9))

    counts = bin_numeric(values, edges).counts
    expected, _ = np.histogram(values, bins=[-np.inf, *edges, np.inf])

    assert counts == expected.tolist()


def test_unlisted_categories_go_to_other():
    batch = bin_categorical(["DE", "FR", "XX", None, "DE"], ["DE", "FR"])

    assert batch.counts == [2, 1, 1]
    assert batch.missing == 1


def test_unlisted_categories_are_reported_as_out_of_range():
    batch = bin_categorical(["DE", "XX", "YY", "FR"], ["DE", "FR"])

    assert batch.counts == [1, 1, 2]
    assert batch.out_of_range == 2


def test_categorical_binning_compares_values_as_strings_and_counts_nan_missing():
    values = [1, 2, 2, 3, float("nan"), np.float64("nan"), None]
    batch = bin_categorical(values, ["1", "2"])

    assert batch.counts == [1, 2, 1]
    assert batch.missing == 3


def test_categorical_binning_of_a_numpy_array_matches_a_python_loop():
    rng = np.random.default_rng(3)
    values = rng.choice(["a", "b", "c", "d"], size=5_000)
    batch = bin_categorical(values, ["a", "c"])

    listed = [int(np.count_nonzero(values == v)) for v in ("a", "c")]
    assert batch.counts == [*listed, 5_000 - sum(listed)]


def test_discrete_numeric_bins_one_value_each():
    # edges are the distinct values but the smallest: bin i holds value i
    batch = bin_numeric([0, 0, 1, 2, 2, 2], edges=[1, 2], low=0, high=2)

    assert batch.counts == [2, 1, 3]
    assert batch.out_of_range == 0


@pytest.mark.parametrize("size", [10, 5_000, 300_000])
@pytest.mark.parametrize("n_edges", [1, 9, 50])
def test_every_binning_path_agrees_with_numpy_histogram(size, n_edges):
    # Small batches and many edges take searchsorted, large ones the chunked
    # comparisons; values sit exactly on edges, and NaN / inf are mixed in.
    rng = np.random.default_rng(size + n_edges)
    values = rng.integers(0, 60, size).astype(float)
    values[::97] = np.nan
    values[::101] = np.inf
    values[::103] = -np.inf
    edges = np.sort(rng.choice(np.arange(1.0, 60.0), n_edges, replace=False))

    batch = bin_numeric(values, edges, low=5.0, high=50.0)

    present = values[~np.isnan(values)]
    expected, _ = np.histogram(present, bins=[-np.inf, *edges, np.inf])
    assert batch.counts == expected.tolist()
    assert batch.missing == size - present.size
    assert batch.out_of_range == np.count_nonzero((present < 5.0) | (present > 50.0))


def _binned_one_by_one(values, categories):
    """The contract spelled out value by value: the reference for the fast path."""
    counts, missing = [0] * (len(categories) + 1), 0
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing += 1
        else:
            text = str(value)
            counts[categories.index(text) if text in categories else -1] += 1
    return counts, missing


def test_categorical_binning_tells_one_from_true_and_from_one_point_zero():
    # 1 == 1.0 == True as dict keys, but their strings differ
    batch = bin_categorical([1, True, 1.0, "True", "1", True], ["1", "True", "1.0"])

    assert batch.counts == [2, 3, 1, 0]


@pytest.mark.parametrize("size", [10, 5_000])
@pytest.mark.parametrize("n_categories", [3, 300])
def test_categorical_binning_agrees_with_a_value_by_value_count(size, n_categories):
    rng = np.random.default_rng(size + n_categories)
    categories = [f"v{i}" for i in range(n_categories)]
    pool = [*categories, "unlisted", "", 7, 7.0, False, None, float("nan"), "x" * 500]
    values = [pool[i] for i in rng.integers(0, len(pool), size)]
    expected_counts, expected_missing = _binned_one_by_one(values, categories)

    for _ in range(2):  # the second time, the values seen are remembered
        batch = bin_categorical(values, categories)
        assert batch.counts == expected_counts
        assert batch.missing == expected_missing
        assert batch.out_of_range == expected_counts[-1]


def test_categorical_binning_stays_exact_past_the_values_it_remembers():
    values = [f"id-{i}" for i in range(20_000)] + ["a"] * 10
    batch = bin_categorical(values, ["a", "id-19999"])
    again = bin_categorical(iter(values), ["a", "id-19999"])  # any iterable

    assert batch.counts == again.counts == [10, 1, 19_999]


def test_categorical_binning_is_exact_whether_or_not_a_batch_holds_only_known_values():
    rng = np.random.default_rng(7)
    categories = ["1", "True", "a", "b"]
    known = [categories[i] for i in rng.integers(0, 4, 1_000)] + [None] * 10
    batches = [
        known,
        known,  # every value known now
        [*known, "new"],  # one value never seen: counted, then remembered
        [*known, "new"],
        [*known, 1, True, 1.0, float("nan")],  # non-strings are never remembered
        known,
    ]
    for values in batches:
        expected_counts, expected_missing = _binned_one_by_one(values, categories)
        batch = bin_categorical(values, categories)
        assert (batch.counts, batch.missing) == (expected_counts, expected_missing)
