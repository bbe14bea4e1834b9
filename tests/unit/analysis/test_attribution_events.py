"""Events of attribution drift: posted when the verdict changes, not every interval."""

from __future__ import annotations

import numpy as np

from driftline_operator.analysis.explanations import verdict_events
from driftline_operator.stats.attribution import AttributionReference, attribution_drift

REFERENCE = AttributionReference.from_values(["a", "b"], np.array([[1.0, 0.1], [2.0, 0.2]]))


def judged(rows: list[list[float]], *, at_least: int = 5):  # type: ignore[no-untyped-def]
    counts = REFERENCE.empty()
    if rows:
        counts.add(np.array(rows))
    return attribution_drift(REFERENCE, counts, threshold=0.15, min_explanations=at_least)


def test_a_change_of_verdict_is_an_event_and_a_held_one_is_not() -> None:
    moved, alike, thin = judged([[0.1, 1.0]] * 10), judged([[1.5, 0.15]] * 10), judged([])
    [warning] = verdict_events("ok", moved)
    assert (warning.type, warning.reason) == ("Warning", "AttributionDrifted")
    assert "top b, a (reference a, b)" in warning.message and "10 rows explained" in warning.message
    assert verdict_events("drifted", moved) == []
    [back] = verdict_events("drifted", alike)
    assert (back.type, back.reason) == ("Normal", "AttributionDriftResolved")
    assert verdict_events(None, alike) == []  # the first verdict, fine: nothing to say
    assert verdict_events("drifted", thin) == []  # too few rows say nothing either way
