"""Building a reference profile from training data (``driftline profile build``).

The profile's bins are computed here once and then used unchanged by the
sidecar (live values) and the operator (judging); the expected proportions
come from the very ``bin_numeric`` / ``bin_categorical`` the sidecar runs, so
the reference and the live counts cannot disagree about a boundary.

Type inference follows Evidently's (``evidently.core.datasets``), so a user
sees the same split there and here: floats are numeric; integers are
categorical when they take at most 10 distinct values, numeric otherwise;
booleans and text are categorical. A text column with more than
``max_categories`` distinct values, over half of them unique, is an
identifier or free text, and is refused rather than guessed at.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from driftline_operator.cli.errors import UsageError
from driftline_sidecar.contract.profile import (
    SCORE_BOUNDS,
    BinnedBatch,
    Calibration,
    CategoricalProfile,
    ClassCalibration,
    NumericProfile,
    ReferenceProfile,
    SourceInfo,
    bin_categorical,
    bin_numeric,
)

INTEGER_CATEGORY_LIMIT = 10  # Evidently's INTEGER_CARDINALITY_LIMIT
READERS = {
    ".csv": "CSV",
    ".parquet": "Parquet",
    ".pq": "Parquet",
    ".jsonl": "JSON lines",
    ".ndjson": "JSON lines",
    ".json": "JSON lines",
}
Kind = Literal["numeric", "categorical"]


class ProfileError(UsageError, ValueError):
    """Training data the profile cannot be built from; the message says why."""


@dataclass(frozen=True)
class ProfileOptions:
    features: Sequence[str] | None = None  # None: every column but target and prediction
    categorical: Sequence[str] = ()
    numeric: Sequence[str] = ()
    target: str | None = None
    prediction: str | None = None
    # A multiclass model's score per class: class -> the column of its probability.
    class_scores: Mapping[str, str] = field(default_factory=dict)
    bins: int = 10
    max_categories: int = 20
    sample_size: int = 1000
    background_size: int = 10  # SHAP background rows: explanation cost grows with it
    seed: int = 0
    declared: dict[str, Kind] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ProfileError(f"--bins must be at least 2, got {self.bins}")
        if self.max_categories < 1:
            raise ProfileError(f"--max-categories must be at least 1, got {self.max_categories}")
        if self.background_size < 0:
            raise ProfileError(
                f"--background-size must not be negative, got {self.background_size}"
            )
        if self.sample_size < 0:
            raise ProfileError(f"--sample-size must not be negative, got {self.sample_size}")
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise ProfileError(f"column {both[0]!r} is declared both categorical and numeric")
        self.declared.update(dict.fromkeys(self.categorical, "categorical"))
        self.declared.update(dict.fromkeys(self.numeric, "numeric"))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read CSV, Parquet or JSON lines, chosen by the file's extension."""
    path = Path(path)
    fmt = READERS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(READERS))
        raise ProfileError(f"{path}: unknown data format {path.suffix!r}; use one of {known}")
    if not path.is_file():
        raise ProfileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ProfileError(f"{path}: the file is empty")
    try:
        if fmt == "CSV":
            frame = pd.read_csv(path)
        elif fmt == "Parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True)
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as error:
        raise ProfileError(f"{path}: cannot read it as {fmt}: {error}") from None
    if frame.empty:
        raise ProfileError(f"{path}: the file holds no data rows")
    return frame


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_profile_from_file(path: str | Path, options: ProfileOptions) -> ReferenceProfile:
    frame = read_table(path)
    source = SourceInfo(path=str(path), sha256=file_sha256(path), rows=len(frame))
    return build_profile(frame, source=source, options=options)


def build_profile(
    frame: pd.DataFrame, *, source: SourceInfo, options: ProfileOptions
) -> ReferenceProfile:
    if frame.empty:
        raise ProfileError(f"{source.path}: the data has no rows")
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    scores = list(options.class_scores.values())
    named = [options.target, options.prediction, *options.declared, *(options.features or ())]
    for name in [*named, *scores]:
        if name is not None and name not in columns:
            raise ProfileError(
                f"column {name!r} is not in {source.path}; its columns are {', '.join(columns)}"
            )
    apart = [*named[:2], *scores]  # not features unless named as such
    features = list(options.features or (c for c in columns if c not in apart))
    if not features:
        raise ProfileError(f"{source.path}: no feature columns left to profile")
    profiles = {name: profile_column(frame[name], name=name, options=options) for name in features}
    prediction = None
    if options.prediction is not None:
        prediction = profile_column(
            frame[options.prediction], name=options.prediction, options=options
        )
    sampled = [*features, *(c for c in named[:2] if c is not None)]
    return ReferenceProfile(
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        source=source,
        features=profiles,
        prediction=prediction,
        prediction_column=options.prediction,
        target_column=options.target,
        calibration=reference_calibration(frame, options),
        sample=sample_rows(frame[sampled], size=options.sample_size, seed=options.seed),
        background=sample_rows(
            frame[features].dropna(), size=options.background_size, seed=options.seed + 1
        ),
    )


def reference_calibration(
    frame: pd.DataFrame, options: ProfileOptions
) -> Calibration | ClassCalibration | None:
    if options.target is None:
        return None
    if options.class_scores:
        found = class_calibration(
            frame[options.target], frame[list(options.class_scores.values())], options.class_scores
        )
        if found is None:
            raise ProfileError(
                f"--class-scores: columns {', '.join(options.class_scores.values())} need "
                f"probabilities in [0, 1] of 3 or more classes that --target {options.target} holds"
            )
        return found
    if options.prediction is not None:
        return calibration(frame[options.target], frame[options.prediction])
    return None


def class_calibration(
    target: pd.Series, scores: pd.DataFrame, columns: Mapping[str, str]
) -> ClassCalibration | None:
    """Each class's score calibrated one-vs-rest on the labelled reference
    (``ClassCalibration``): per bucket of the class's score, the share of rows
    labelled that class. None unless there are 3+ classes of probabilities."""
    if len(columns) < 3:
        return None
    numbers = scores.apply(pd.to_numeric, errors="coerce")
    rows = pd.concat([target.rename("__y__"), numbers], axis=1).dropna()
    if (
        rows.empty
        or not ((numbers.loc[rows.index] >= 0) & (numbers.loc[rows.index] <= 1)).all().all()
    ):
        return None
    label = rows["__y__"].astype(str).to_numpy()
    bounds = np.asarray(SCORE_BOUNDS)
    counts: dict[str, list[int]] = {}
    rates: dict[str, list[float | None]] = {}
    for name, column in columns.items():
        bucket = np.searchsorted(bounds, rows[column].to_numpy(), side="left")
        n = np.bincount(bucket, minlength=bounds.size + 1)
        hits = np.bincount(bucket, weights=label == str(name), minlength=bounds.size + 1)
        counts[str(name)] = n.tolist()
        rates[str(name)] = [float(h / k) if k else None for h, k in zip(hits, n, strict=True)]
    return ClassCalibration(bounds=list(SCORE_BOUNDS), rows=counts, positive_rate=rates)


def calibration(
    target: pd.Series, score: pd.Series, *, threshold: float = 0.5, positive: object = None
) -> Calibration | None:
    """The calibration map of a binary classifier's labelled reference scores
    (``Calibration``), or None when the target has not two classes or the
    scores are not probabilities. The positive class (the one the score is
    the probability of) is ``positive``; by default 1 (or True) for 0/1
    labels, else the class whose rows score higher on average."""
    rows = pd.DataFrame({"y": target, "s": pd.to_numeric(score, errors="coerce")}).dropna()
    classes = rows["y"].unique()
    if len(classes) != 2 or rows.empty or not rows["s"].between(0.0, 1.0).all():
        return None
    if positive is None:
        numeric = {float(c) for c in classes if isinstance(c, int | float | np.number)}
        if numeric == {0.0, 1.0}:
            positive = next(c for c in classes if float(c) == 1.0)
        else:
            positive = rows.groupby("y")["s"].mean().idxmax()
    bounds = np.asarray(SCORE_BOUNDS)
    bucket = np.searchsorted(bounds, rows["s"].to_numpy(), side="left")  # le: upper bound included
    is_positive = (rows["y"] == positive).to_numpy()
    right = is_positive == (rows["s"].to_numpy() >= threshold)
    n = np.bincount(bucket, minlength=bounds.size + 1)
    correct = np.bincount(bucket, weights=right, minlength=bounds.size + 1)
    positives = np.bincount(bucket, weights=is_positive, minlength=bounds.size + 1)
    return Calibration(
        positive_class=str(positive),
        threshold=threshold,
        bounds=list(SCORE_BOUNDS),
        rows=n.tolist(),
        accuracy=[float(c / k) if k else None for c, k in zip(correct, n, strict=True)],
        positive_rate=[float(p / k) if k else None for p, k in zip(positives, n, strict=True)],
    )


def profile_column(
    series: pd.Series, *, name: str, options: ProfileOptions
) -> NumericProfile | CategoricalProfile:
    present = series.dropna()
    if present.empty:
        raise ProfileError(f"column {name!r}: every value is missing")
    kind = options.declared.get(name) or infer_kind(present, name=name, options=options)
    if kind == "numeric":
        return profile_numeric(series, name=name, bins=options.bins)
    return profile_categorical(series, name=name, max_categories=options.max_categories)


def infer_kind(present: pd.Series, *, name: str, options: ProfileOptions) -> Kind:
    """Numeric or categorical, for a column without missing values."""
    dtype = present.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_float_dtype(dtype):
        return "numeric"
    if pd.api.types.is_integer_dtype(dtype):
        return "categorical" if present.nunique() <= INTEGER_CATEGORY_LIMIT else "numeric"
    _refuse_mixed_types(present, name=name)
    distinct = present.nunique()
    if distinct > options.max_categories and distinct > 0.5 * len(present):
        raise ProfileError(
            f"column {name!r}: {distinct} distinct text values in {len(present)} rows looks "
            "like an identifier or free text, not a feature; leave it out with --features, "
            "or declare it with --categorical to keep its top categories"
        )
    return "categorical"


def _refuse_mixed_types(present: pd.Series, *, name: str) -> None:
    """Numbers and text in one column: JSON with both, or a CSV column of
    numbers with stray words in it (often a missing-value marker).

    Checked on the distinct values, weighted by their counts: a column of a
    million rows holds a few dozen categories."""
    if pd.api.types.infer_dtype(present, skipna=True) != "string":  # not all text
        others = [v for v in present if not isinstance(v, str)]
        if others and len(others) < len(present):
            kinds = {type(v).__name__ for v in others}
            text = next(v for v in present if isinstance(v, str))
            raise ProfileError(
                f"column {name!r}: mixed types ({', '.join(sorted(kinds))} and text such as "
                f"{text!r}); make it one type, or declare it with --categorical"
            )
    frequencies = present.value_counts(sort=False)
    numbers = pd.to_numeric(frequencies.index.to_series(), errors="coerce")
    parsed = int(frequencies[numbers.notna().to_numpy()].sum())
    if 0.5 * len(present) <= parsed < len(present):
        text = frequencies.index[numbers.isna().to_numpy()][0]
        raise ProfileError(
            f"column {name!r}: mixed types ({parsed} of {len(present)} values are numbers, "
            f"others are text such as {text!r}); fix or blank those values, "
            "or declare the column with --categorical"
        )


def profile_numeric(series: pd.Series, *, name: str, bins: int) -> NumericProfile:
    try:
        numbers = pd.to_numeric(series, errors="raise").astype("float64")
    except (ValueError, TypeError):
        bad = next(v for v in series.dropna() if _not_a_number(v))
        raise ProfileError(
            f"column {name!r} is numeric but holds {bad!r}; fix the value or declare the "
            "column with --categorical"
        ) from None
    values = numbers.to_numpy()
    values = values[np.isfinite(values)]  # infinities count as missing, as in Evidently
    if values.size == 0:
        raise ProfileError(f"column {name!r}: every value is missing")
    distinct = np.unique(values)
    if distinct.size == 1:
        raise ProfileError(
            f"column {name!r} is constant ({distinct[0]:g} in every row): it cannot drift "
            "in any measurable way; leave it out with --features"
        )
    edges, distinct_values = numeric_edges(values, distinct=distinct, bins=bins)
    low, high = float(distinct[0]), float(distinct[-1])
    counts = np.asarray(bin_numeric(values, edges, low=low, high=high).counts)
    return NumericProfile(
        edges=edges.tolist(),
        expected=(counts / counts.sum()).tolist(),
        min=low,
        max=high,
        mean=float(values.mean()),
        std=float(values.std()),
        missing_rate=1.0 - values.size / len(series),
        distinct_values=distinct_values,
    )


def _not_a_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return True
    return False


def numeric_edges(
    values: np.ndarray, *, distinct: np.ndarray, bins: int
) -> tuple[np.ndarray, int | None]:
    """Interior bin edges: one bin per value for discrete data, else quantiles.

    Quantile edges are deduplicated (ties in discrete or zero-inflated data
    give the same quantile twice), and an edge at the minimum is dropped: the
    bin below it could never hold a reference value.
    """
    if distinct.size <= bins:
        return distinct[1:], int(distinct.size)
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    return edges[edges > distinct[0]], None


def profile_categorical(series: pd.Series, *, name: str, max_categories: int) -> CategoricalProfile:
    frequencies, missing = category_frequencies(series)
    if len(frequencies) == 1:
        raise ProfileError(
            f"column {name!r} is constant ({next(iter(frequencies))!r} in every row): it cannot "
            "drift in any measurable way; leave it out with --features"
        )
    # Most frequent first; ties broken by label so the profile is reproducible.
    order = sorted(frequencies.items(), key=lambda item: (-item[1], item[0]))
    categories = [label for label, _ in order[:max_categories]]
    counts = np.asarray(bin_frequencies(frequencies, categories).counts)
    return CategoricalProfile(
        categories=categories,
        expected=(counts / counts.sum()).tolist(),
        missing_rate=missing / len(series),
    )


def category_frequencies(series: pd.Series) -> tuple[dict[str, int], int]:
    """How often each category label occurs, and how many values are missing.
    Each distinct value is labelled once, not each row: a column of a million
    rows holds a few dozen categories."""
    codes, distinct = pd.factorize(series, use_na_sentinel=True)
    per_value = np.bincount(codes[codes >= 0], minlength=len(distinct))
    frequencies: dict[str, int] = {}
    for value, count in zip(list(distinct), per_value.tolist(), strict=True):
        label = category_label(value)
        frequencies[label] = frequencies.get(label, 0) + count
    return frequencies, len(series) - int(per_value.sum())


def bin_frequencies(frequencies: Mapping[str, int], categories: Sequence[str]) -> BinnedBatch:
    """``bin_categorical`` of values given as label counts: the sidecar's rule,
    applied once per distinct label."""
    counts = np.zeros(len(categories) + 1, dtype=np.int64)
    missing = 0
    for label, count in frequencies.items():
        one = bin_categorical([label], categories)
        counts += count * np.asarray(one.counts, dtype=np.int64)
        missing += count * one.missing
    return BinnedBatch(counts=counts.tolist(), missing=missing, out_of_range=int(counts[-1]))


def category_label(value: Any) -> str:
    """How a category is named in the profile: ``str(value)`` as the sidecar
    compares it, except that whole floats (integers a CSV column with gaps
    turned into floats) lose their ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return category_label(value.item())
    return str(value)


def sample_rows(frame: pd.DataFrame, *, size: int, seed: int) -> dict[str, list[Any]]:
    """A seeded random sample of rows, column-wise, as JSON values (NaN -> null)."""
    rows = frame.sample(n=min(size, len(frame)), random_state=seed) if size else frame.iloc[:0]
    return {column: _json_values(rows[column]) for column in rows.columns}


def _json_values(column: pd.Series) -> list[Any]:
    if pd.api.types.is_float_dtype(column.dtype):  # the common case, at numpy speed
        values = column.to_numpy(dtype=np.float64)
        shown = values.astype(object)
        shown[~np.isfinite(values)] = None
        listed: list[Any] = shown.tolist()
        return listed
    return [_json_value(v) for v in column.tolist()]


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)
