"""Between wire rows and the numeric matrix shap works on, and the background.

shap masks numbers, so categorical features become integer codes (the
profile's categories first, new values appended as they are met) and go back
to their names on the wire. Features marked PII never reach the explainer
(the reservoir leaves them out); the model still needs them, so they are sent
as the background's first row holds them and are not explained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline_sidecar.contract.config import FeatureConfig
from driftline_sidecar.contract.profile import CategoricalProfile, ReferenceProfile


class BackgroundError(ValueError):
    """A profile without what explanations need; the message says what to do."""


@dataclass
class Columns:
    """The wire's features and the explained ones, and how values map between them."""

    features: list[FeatureConfig]  # every declared feature, in wire order
    explained: list[int]  # wire positions of the explained features, in matrix order
    fixed: dict[int, Any] = field(default_factory=dict)  # wire position -> value sent
    categories: dict[int, list[str]] = field(default_factory=dict)  # matrix column -> names

    @property
    def names(self) -> list[str]:
        return [self.features[i].name for i in self.explained]

    def matrix(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """Rows of explained-feature values (in ``names`` order) as numbers."""
        table = np.full((len(rows), len(self.explained)), np.nan)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                names = self.categories.get(c)
                if names is None:
                    table[r, c] = _float(value)
                elif value is not None:
                    label = str(value)
                    if label not in names:
                        names.append(label)
                    table[r, c] = names.index(label)
        return table

    def wire(self, matrix: np.ndarray) -> list[list[Any]]:
        """The matrix as rows of every feature's value, as the model takes them."""
        width = len(self.features)
        rows: list[list[Any]] = []
        for values in matrix.tolist():
            row: list[Any] = [None] * width
            for position, value in self.fixed.items():
                row[position] = value
            for c, position in enumerate(self.explained):
                value = values[c]
                names = self.categories.get(c)
                if value != value:  # NaN: missing, sent as null
                    row[position] = None
                elif names is not None:
                    row[position] = names[int(value)] if 0 <= value < len(names) else None
                else:
                    row[position] = value
            rows.append(row)
        return rows


def from_profile(
    profile: ReferenceProfile, features: Sequence[FeatureConfig]
) -> tuple[Columns, np.ndarray]:
    """The columns of ``features`` and the profile's background as a matrix."""
    background = profile.background
    rows = len(next(iter(background.values()), []))
    if rows == 0:
        raise BackgroundError(
            "the reference profile holds no SHAP background; rebuild it with "
            "driftline profile build (a --background-size above 0)"
        )
    explained = [i for i, f in enumerate(features) if f.pii == "none"]
    absent = [features[i].name for i in explained if features[i].name not in background]
    if absent:
        raise BackgroundError(
            f"the reference profile's background has no column for {', '.join(absent)}; "
            "rebuild the profile from data holding every declared feature"
        )
    fixed = {
        i: background[f.name][0] if f.name in background else None
        for i, f in enumerate(features)
        if f.pii != "none"
    }
    columns = Columns(features=list(features), explained=explained, fixed=fixed)
    for c, i in enumerate(explained):
        feature = profile.features.get(features[i].name)
        if features[i].type == "categorical":
            known = feature.categories if isinstance(feature, CategoricalProfile) else []
            columns.categories[c] = list(known)
    names = columns.names
    matrix = columns.matrix([[background[n][r] for n in names] for r in range(rows)])
    return columns, matrix


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)
