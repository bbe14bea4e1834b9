"""The reference profile: what a model's inputs and outputs looked like in
training, and the binning of live values into the same bins.

The profile is one versioned JSON document (DESIGN.md, "Reference profile").
The sidecar bins live values with it; the operator judges the binned counts
against its expected proportions. Bins are the contract between the two, so
they are defined once, here.

Bin layout
- numeric: ``edges`` are the k strictly increasing interior edges; there are
  k + 1 bins with open ends. Bin ``i`` holds ``edges[i-1] <= x < edges[i]``
  (bin 0 is ``x < edges[0]``, bin k is ``x >= edges[k-1]``).
- categorical: one bin per listed category in order, then one "other" bin for
  every value the profile did not list.
- Missing values (None, NaN, absent) are counted apart and in no bin.
- Out of range: a numeric value outside the reference ``[min, max]`` (it still
  lands in an end bin); a categorical value the profile does not list (it
  still lands in "other"). Both are counted in ``out_of_range``.
- Discrete numeric data (no more distinct values than bins) gets one bin per
  value: ``edges`` are the distinct values but the smallest, and
  ``distinct_values`` says how many there are.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import compress, repeat
from typing import Annotated, Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Final = 1
OTHER = "__other__"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NumericProfile(_Model):
    kind: Literal["numeric"] = "numeric"
    edges: list[float]
    expected: list[float]  # proportion of non-missing values per bin, sums to 1
    min: float
    max: float
    mean: float
    std: float
    missing_rate: float = Field(ge=0.0, le=1.0)
    # Set when the reference had so few distinct values that each has a bin.
    distinct_values: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> NumericProfile:
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("numeric edges must be strictly increasing")
        if len(self.expected) != len(self.edges) + 1:
            raise ValueError(
                f"{len(self.edges)} edges make {len(self.edges) + 1} bins, "
                f"but expected has {len(self.expected)} proportions"
            )
        return self

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1


class CategoricalProfile(_Model):
    kind: Literal["categorical"] = "categorical"
    categories: list[str]
    expected: list[float]  # one per category, then "other"; sums to 1
    missing_rate: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalProfile:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories must be unique")
        if len(self.expected) != len(self.categories) + 1:
            raise ValueError(
                f"{len(self.categories)} categories plus 'other' make "
                f"{len(self.categories) + 1} bins, but expected has {len(self.expected)}"
            )
        return self

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 1


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


# A classifier's score in buckets of 0.05 (upper bounds, Prometheus' le): the
# sidecar's prediction score histogram and the calibration map share them.
SCORE_BOUNDS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(1, 21))


class Calibration(_Model):
    """A binary classifier's labelled reference scores, for estimating its
    accuracy without labels (confidence-based performance estimation, as
    NannyML's CBPE): per score bucket, how often the reference's prediction
    was right. With covariate shift P(label | score) stays, so the live
    score buckets weighted by these rates estimate live accuracy."""

    positive_class: str
    threshold: float = 0.5  # predicted positive at a score at or above it
    bounds: list[float] = Field(default_factory=lambda: list(SCORE_BOUNDS))  # upper, le
    rows: list[int]  # reference rows per bucket (the last is +Inf)
    accuracy: list[float | None]  # share predicted right per bucket; None without rows
    positive_rate: list[float | None]  # share of positives per bucket (the calibration map)

    @model_validator(mode="after")
    def _one_per_bucket(self) -> Calibration:
        n = len(self.bounds) + 1
        if not len(self.rows) == len(self.accuracy) == len(self.positive_rate) == n:
            raise ValueError(f"calibration needs {n} rows, accuracy and positive_rate entries")
        return self


class ClassCalibration(_Model):
    """A multiclass classifier's labelled reference scores, for estimating its
    accuracy without labels as NannyML's CBPE does for multiclass: each
    class's score calibrated one-vs-rest (per score bucket, the share of the
    reference rows whose label was that class), and a live prediction counted
    right with the calibrated probability of its predicted class."""

    bounds: list[float] = Field(default_factory=lambda: list(SCORE_BOUNDS))  # upper, le
    rows: dict[str, list[int]]  # per class: reference rows per bucket of its score
    positive_rate: dict[str, list[float | None]]  # per class and bucket; None without rows

    @model_validator(mode="after")
    def _one_per_bucket(self) -> ClassCalibration:
        n = len(self.bounds) + 1
        if set(self.rows) != set(self.positive_rate) or len(self.rows) < 3:
            raise ValueError("a class calibration needs rows and positive_rate of 3+ classes")
        for name in self.rows:
            if not len(self.rows[name]) == len(self.positive_rate[name]) == n:
                raise ValueError(f"class {name!r}: calibration needs {n} rows and positive_rate")
        return self


class SourceInfo(_Model):
    path: str
    sha256: str
    rows: int


class ReferenceProfile(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str  # RFC 3339
    source: SourceInfo
    features: dict[str, FeatureProfile]
    # The prediction score (or regression output), binned like a feature.
    prediction: FeatureProfile | None = None
    prediction_column: str | None = None
    target_column: str | None = None
    # Binary classifiers profiled with --target and --prediction: see Calibration;
    # multiclass ones profiled with --target and --class-scores: ClassCalibration.
    calibration: Calibration | ClassCalibration | None = None
    # A bounded random sample of rows, column-wise (for exact KS).
    sample: dict[str, list[Any]] = Field(default_factory=dict)
    # The SHAP background: a few feature rows, column-wise, that features are
    # masked with when a prediction is explained. A plain random sample (not
    # k-means centres): its rows weigh the same, as shap's Independent masker
    # and interventional TreeExplainer both assume, and categories stay real.
    background: dict[str, list[Any]] = Field(default_factory=dict)


class BinnedBatch(_Model):
    """Counts of one batch of values in one feature's bins."""

    counts: list[int]
    missing: int = 0
    out_of_range: int = 0  # numeric: outside the reference [min, max]; still binned


# Large batches are counted edge by edge over cache-sized chunks: with the
# few edges of a profile, k comparisons per value beat a binary search
# (~500 M values/s against ~50 M/s for searchsorted + bincount).
_CHUNK = 1 << 16
_SEARCH_BELOW = 4096  # values: smaller batches take one searchsorted call
_SEARCH_ABOVE = 32  # edges: more edges and the binary search wins again


def bin_numeric(
    values: Sequence[Any] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    *,
    low: float = -np.inf,
    high: float = np.inf,
) -> BinnedBatch:
    """Bin a batch of numbers. None/NaN count as missing; values outside
    ``[low, high]`` count as out of range and still land in the end bins."""
    array = np.asarray(values, dtype=np.float64).ravel()  # None becomes NaN
    e = np.asarray(edges, dtype=np.float64)
    missing = int(np.count_nonzero(np.isnan(array)))
    if array.size < _SEARCH_BELOW or e.size > _SEARCH_ABOVE:
        # NaN sorts after every edge: it lands in the top bin, taken out below.
        counts = np.bincount(np.searchsorted(e, array, side="right"), minlength=e.size + 1)
        counts[-1] -= missing
    else:
        at_or_above = np.zeros(e.size, dtype=np.int64)  # NaN compares False: not counted
        for start in range(0, array.size, _CHUNK):
            chunk = array[start : start + _CHUNK]
            for i, edge in enumerate(e):
                at_or_above[i] += np.count_nonzero(chunk >= edge)
        present = array.size - missing
        counts = -np.diff(np.concatenate(([present], at_or_above, [0])))
    out_of_range = int(np.count_nonzero(array < low)) + int(np.count_nonzero(array > high))
    return BinnedBatch(counts=counts.tolist(), missing=missing, out_of_range=out_of_range)


def bin_categorical(values: Iterable[Any], categories: Sequence[str]) -> BinnedBatch:
    """Bin a batch of category values (compared as ``str(value)``); unlisted
    ones go to the last ("other") bin and are also counted as out of range."""
    codes = _category_codes(tuple(categories))
    batch = _as_list(values)
    # One dict probe per value at C speed; only values these categories have
    # not seen yet (and every non-string) are looked at in Python.
    found = list(map(codes.get, batch, repeat(codes.unseen)))
    tally, is_unseen = _tally(found, codes.unseen)
    counts, missing = tally[: codes.missing], tally[codes.missing]
    if tally[codes.unseen]:
        unseen = list(compress(batch, is_unseen()))
        # Keyed by type too: 1, 1.0 and True are one dict key but three strings.
        for (_, value), count in Counter(zip(map(type, unseen), unseen, strict=True)).items():
            code = codes.learn(value)
            if code == codes.missing:
                missing += count
            else:
                counts[code] += count
    return BinnedBatch(counts=counts, missing=missing, out_of_range=counts[codes.other])


def _as_list(values: Iterable[Any]) -> list[Any] | tuple[Any, ...]:
    if isinstance(values, np.ndarray):
        scalars: list[Any] = values.tolist()  # np.str_ hashes slowly, np.float64 NaN too
        return scalars
    return values if isinstance(values, list | tuple) else list(values)


def _tally(found: list[int], unseen: int) -> tuple[list[int], Callable[[], list[bool]]]:
    """How many values got each code, and (on demand) which got ``unseen``."""
    if len(found) < _TALLY_IN_NUMPY:
        tally = [0] * (unseen + 1)
        for code in found:
            tally[code] += 1
        return tally, lambda: [code == unseen for code in found]
    # bytes() packs small ints at C speed, where numpy converts them one by one.
    array = np.frombuffer(bytes(found), np.uint8) if unseen < 256 else np.array(found, np.intp)
    return np.bincount(array, minlength=unseen + 1).tolist(), lambda: (array == unseen).tolist()


_TALLY_IN_NUMPY = 256  # values: fewer are counted faster in a Python loop
_REMEMBERED = 4096  # distinct values per list of categories
_REMEMBERED_CHARS = 128  # longer strings are looked at every time, never kept


class _CategoryCodes(dict[Any, int]):
    """Value -> bin for one list of k categories: ``0..k-1`` the listed ones,
    then ``other`` and ``missing``. ``unseen`` is no bin: the answer to look
    up for a value the dict does not hold yet. Only strings (and None) are
    keys, because ``1 == 1.0 == True`` as keys while their strings differ."""

    def __init__(self, categories: tuple[str, ...]) -> None:
        super().__init__((category, i) for i, category in enumerate(categories))
        self.position = dict(self)
        self.other = len(categories)
        self.missing = self.other + 1
        self.unseen = self.other + 2
        self[None] = self.missing

    def learn(self, value: Any) -> int:
        """The bin of ``value``, remembered when it is a short string."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.missing
        if not isinstance(value, str):
            return self.position.get(str(value), self.other)
        code = self.position.get(value, self.other)
        if len(value) <= _REMEMBERED_CHARS and len(self) < _REMEMBERED:
            self[value] = code
        return code


@lru_cache(maxsize=64)
def _category_codes(categories: tuple[str, ...]) -> _CategoryCodes:
    return _CategoryCodes(categories)


def load_profile(path: str) -> ReferenceProfile:
    with open(path, encoding="utf-8") as f:
        return ReferenceProfile.model_validate_json(f.read())
