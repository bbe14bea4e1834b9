"""Numeric features binned together (``NumericColumns``) agree with each one's ``Binning.bin``."""

import math

from hypothesis import given
from hypothesis import strategies as st

from driftline_sidecar.counts import Binning, NumericColumns

VALUES = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
    st.sampled_from([-1.0, 0.0, 1.0, 1.5, "a string", True]),  # edges hit exactly; not numbers
)
EDGES = st.lists(st.floats(-2, 2), max_size=12, unique=True).map(sorted)
BOUNDS = st.sampled_from([(-math.inf, math.inf), (-1.0, 1.0), (0.0, 2.0)])


@given(st.data(), st.lists(st.tuples(EDGES, BOUNDS), min_size=1, max_size=5), st.integers(1, 40))
def test_binned_together_as_one_by_one(
    data: st.DataObject, specs: list[tuple[list[float], tuple[float, float]]], rows: int
) -> None:
    binnings = [
        Binning(f"f{i}", "numeric", edges=tuple(edges), low=low, high=high)
        for i, (edges, (low, high)) in enumerate(specs)
    ]
    columns = [data.draw(st.lists(VALUES, min_size=rows, max_size=rows)) for _ in binnings]

    together = NumericColumns(binnings).bin(columns)

    alone = [binning.bin(column) for binning, column in zip(binnings, columns, strict=True)]
    assert together == [(b.counts, b.missing, b.out_of_range) for b in alone]
