"""How drift is judged: which statistic, which threshold, how much data.

``method: auto`` picks what Evidently's data drift preset picks (its default
rules, looked up in ``evidently.legacy.calculations.stattests.registry``):

============================  =====================================  ==========================
reference size ``n``          numeric                                categorical
============================  =====================================  ==========================
``n <= large_sample`` (1000)  KS p-value < 0.05                      chi-square p-value < 0.05
                              (≤ 5 distinct values: as categorical)  (≤ 2 values: z-test)
``n > large_sample``          normed Wasserstein >= 0.1              Jensen-Shannon >= 0.1
                              (≤ 5 distinct values: Jensen-Shannon)  (natural log, see below)
============================  =====================================  ==========================

As in Evidently, ``n`` is the size of the *reference* (non-missing values),
not of the window. Evidently's Jensen-Shannon uses natural logarithms, ours
base 2, so auto compares ours with ``0.1 / sqrt(ln 2)`` ≈ 0.1201 — the same
decision. An explicit method uses its own default threshold unless one is
given (PSI 0.2, Jensen-Shannon 0.1 in base 2, Wasserstein 0.1, KS and
chi-square p-value 0.05).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["auto", "psi", "ks", "chisquare", "jensenshannon", "wasserstein"]
Kind = Literal["numeric", "categorical"]

DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi": 0.2,
    "jensenshannon": 0.1,
    "wasserstein": 0.1,
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
}
# Evidently's 0.1 on natural-log Jensen-Shannon, expressed in base 2.
AUTO_JENSEN_SHANNON_THRESHOLD = 0.1 / math.sqrt(math.log(2.0))
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
# A numeric-only method asked of a categorical feature: its categorical
# counterpart in Evidently's rules, which reads its threshold the same way.
CATEGORICAL_COUNTERPART: dict[str, str] = {"ks": "chisquare", "wasserstein": "jensenshannon"}


class DriftPolicy(BaseModel):
    """What the operator reads from ``spec.drift``; frozen, so shareable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "auto"
    # For an explicit method: p-value methods (ks, chisquare) drift below it,
    # distances (psi, jensenshannon, wasserstein) at or above it.
    threshold: float | None = Field(default=None, gt=0)
    # Per-kind overrides (ModelMonitor spec.drift.numericTest / categoricalTest).
    numeric_method: Method | None = None
    categorical_method: Method | None = None
    numeric_threshold: float | None = Field(default=None, gt=0)
    categorical_threshold: float | None = Field(default=None, gt=0)
    # Fewer non-missing values than this in a window: "insufficient_data".
    min_samples: int = Field(default=100, ge=1)
    # Reference size above which auto switches from tests to distances.
    large_sample: int = Field(default=1000, ge=1)
    # At most this many distinct values: auto treats a numeric like a category.
    discrete_values: int = Field(default=5, ge=1)
    # Report every binned statistic in FeatureDrift.stats (PSI, JS, chi-square,
    # KS, Wasserstein), not only the verdict's: they are computed anyway.
    all_stats: bool = True

    def method_for(self, kind: Kind) -> str:
        chosen = self.numeric_method if kind == "numeric" else self.categorical_method
        method: str = chosen or self.method
        if kind == "categorical":
            method = CATEGORICAL_COUNTERPART.get(method, method)
        return method

    def threshold_for(self, kind: Kind, method: str) -> float:
        """The threshold of an explicit ``method`` for a feature of ``kind``."""
        own = self.numeric_threshold if kind == "numeric" else self.categorical_threshold
        if own is not None:
            return own
        if self.threshold is not None:
            return self.threshold
        return DEFAULT_THRESHOLDS[method]


def drifted(method: str, score: float, threshold: float) -> bool:
    if method.split("_")[0] in P_VALUE_METHODS:
        return score < threshold
    return score >= threshold
