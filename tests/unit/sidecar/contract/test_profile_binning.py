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
