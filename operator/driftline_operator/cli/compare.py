"""A reference and a current dataset, judged as the operator judges a window.

``driftline drift REFERENCE CURRENT`` and ``driftline report`` both come
down to one pair: a reference profile and the counts of current values in its
bins. Whatever the inputs, they are turned into that pair first:

- REFERENCE is a profile (``driftline profile build``'s JSON) or a data file,
  profiled on the spot with the same builder;
- CURRENT is a data file, binned with the profile's bins by the very
  ``bin_numeric`` / ``bin_categorical`` the sidecar runs (a value of the wrong
  type counts as missing, as in the sidecar), or a sidecar snapshot
  (``GET /v1/snapshot``), whose counts are already in the profile's bins.

The pair then goes through ``analysis.judge.judge_drift``, the operator's own
call, with a ``spec.drift`` built from the command's options: the verdicts
here are the ones a ModelMonitor with that spec would report.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from driftline_operator.analysis.judge import judge_drift
from driftline_operator.analysis.windows import Window
from driftline_operator.api.spec import Drift
from driftline_operator.cli.errors import UsageError
from driftline_operator.cli.profiles import (
    ProfileError,
    ProfileOptions,
    bin_frequencies,
    build_profile,
    category_frequencies,
    file_sha256,
    read_table,
)
from driftline_operator.stats.verdict import DatasetDrift
from driftline_sidecar.contract.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    SourceInfo,
    bin_numeric,
)
from driftline_sidecar.contract.snapshot import (
    BinCounts,
    CaptureCounts,
    ProcessInfo,
    Snapshot,
)


class DriftInputError(UsageError, ValueError):
    """Inputs that cannot be compared; the message names the file and the problem."""


@dataclass(frozen=True)
class Dataset:
    """One side of the comparison, as the user named it."""

    path: str
    kind: str  # "profile", "data" or "snapshot"
    rows: int


@dataclass
class Comparison:
    """A reference profile and current counts in its bins, ready to judge."""

    profile: ReferenceProfile
    counts: Snapshot
    reference: Dataset
    current: Dataset
    absent: list[str] = field(default_factory=list)  # profiled features CURRENT lacks


def _json_document(path: Path) -> dict[str, Any] | None:
    """The file's JSON object, or None when it is not one JSON document
    (JSON lines data is read as data, not as a profile or a snapshot)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _validation_message(path: Path, what: str, error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "document"
    return f"{path} is not a valid {what}: {where}: {first['msg']}"


def load_reference(path: str | Path, options: ProfileOptions) -> tuple[ReferenceProfile, Dataset]:
    """The profile in ``path``, or one built from the data in it."""
    path = Path(path)
    document = _json_document(path)
    if document is not None and "features" in document and "source" in document:
        try:
            profile = ReferenceProfile.model_validate(document)
        except ValidationError as error:
            raise DriftInputError(_validation_message(path, "Driftline profile", error)) from None
        return profile, Dataset(str(path), "profile", profile.source.rows)
    frame = _read(path, "REFERENCE")
    source = SourceInfo(path=str(path), sha256=file_sha256(path), rows=len(frame))
    return build_profile(frame, source=source, options=options), Dataset(
        str(path), "data", len(frame)
    )


def _read(path: Path, role: str) -> pd.DataFrame:
    try:
        return read_table(path)
    except ProfileError as error:
        raise DriftInputError(f"{role}: {error}") from None


def compare(
    reference: str | Path,
    current: str | Path,
    *,
    options: ProfileOptions | None = None,
) -> Comparison:
    """Load both sides and put CURRENT's values into the reference's bins."""
    options = options or ProfileOptions()
    profile, ref = load_reference(reference, options)
    current = Path(current)
    document = _json_document(current)
    if document is not None and "process" in document and "features" in document:
        return _with_snapshot(profile, ref, Path(reference), current, document)
    frame = _read(current, "CURRENT")
    counts, absent = bin_frame(frame, profile, model=current.stem)
    return Comparison(profile, counts, ref, Dataset(str(current), "data", len(frame)), absent)


def _with_snapshot(
    profile: ReferenceProfile,
    ref: Dataset,
    reference: Path,
    current: Path,
    document: dict[str, Any],
) -> Comparison:
    try:
        snapshot = Snapshot.model_validate(document)
    except ValidationError as error:
        raise DriftInputError(_validation_message(current, "sidecar snapshot", error)) from None
    if ref.kind != "profile":
        raise DriftInputError(
            f"CURRENT {current} is a sidecar snapshot, counted in the bins of the sidecar's "
            f"profile; give that profile as REFERENCE, not the data file {reference}"
        )
    sha = hashlib.sha256(reference.read_bytes()).hexdigest()
    if snapshot.profile_sha256 and snapshot.profile_sha256 != sha:
        raise DriftInputError(
            f"CURRENT {current} was binned against profile sha256 "
            f"{snapshot.profile_sha256[:12]}, but REFERENCE {reference} has sha256 {sha[:12]}: "
            "give the profile the sidecar was configured with"
        )
    _check_shared(profile, list(snapshot.features), current)
    absent = [name for name in profile.features if name not in snapshot.features]
    rows = snapshot.capture.records or sum(snapshot.requests.values())
    return Comparison(profile, snapshot, ref, Dataset(str(current), "snapshot", rows), absent)


def _check_shared(profile: ReferenceProfile, columns: list[str], current: Path) -> None:
    if not any(name in profile.features for name in columns):
        profiled = ", ".join(profile.features) or "none"
        found = ", ".join(columns[:20]) or "none"
        raise DriftInputError(
            f"no shared features: the reference profiles {profiled}; CURRENT {current} has {found}"
        )


def bin_frame(
    frame: pd.DataFrame, profile: ReferenceProfile, *, model: str = "offline"
) -> tuple[Snapshot, list[str]]:
    """What a sidecar would have counted for these rows: each profiled feature
    (and the prediction column) in the profile's bins.

    A column the data lacks counts every row as missing, as the sidecar counts
    an absent field; such features are returned by name too.
    """
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    _check_shared(profile, list(frame.columns), Path(model))
    features: dict[str, BinCounts] = {}
    absent: list[str] = []
    wrong_type = 0
    for name, reference in profile.features.items():
        if name not in frame.columns:
            absent.append(name)
            features[name] = BinCounts(counts=[0] * reference.n_bins, missing=len(frame))
            continue
        features[name], wrong = bin_column(frame[name], reference)
        wrong_type += wrong
    prediction = None
    column = profile.prediction_column
    if profile.prediction is not None and column is not None and column in frame.columns:
        prediction, wrong = bin_column(frame[column], profile.prediction)
        wrong_type += wrong
    counts = Snapshot(
        process=ProcessInfo(id="offline", pid=0, start_time=0.0),
        taken_at=time.time(),
        model=model,
        version="current",
        role="stable",
        capture=CaptureCounts(
            records=len(frame),
            bodies_parsed=len(frame),
            wrong_type=wrong_type,
            missing_fields=len(absent) * len(frame),
        ),
        features=features,
        prediction=prediction,
    )
    return counts, absent


def bin_column(
    series: pd.Series, reference: NumericProfile | CategoricalProfile
) -> tuple[BinCounts, int]:
    """One column in its reference's bins, and how many values had the wrong type."""
    if isinstance(reference, NumericProfile):
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, copy=True)
        wrong = int(series.notna().sum()) - int(np.count_nonzero(~np.isnan(numbers)))
        numbers[np.isinf(numbers)] = np.nan  # infinities count as missing, as in the profile
        batch = bin_numeric(numbers, reference.edges, low=reference.min, high=reference.max)
    else:
        frequencies, missing = category_frequencies(series)
        batch = bin_frequencies(frequencies, reference.categories)
        batch.missing += missing
        wrong = 0
    binned = BinCounts(counts=batch.counts, missing=batch.missing, out_of_range=batch.out_of_range)
    return binned, wrong


def drift_spec(
    *,
    method: str = "auto",
    threshold: float | None = None,
    min_samples: int = 100,
    drift_share: float = 0.5,
) -> Drift:
    """``spec.drift`` as a ModelMonitor would hold it, validated the same way."""
    try:
        return Drift.model_validate(
            {
                "method": method,
                "threshold": threshold,
                "minSamples": min_samples,
                "driftShare": drift_share,
            }
        )
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        option = _OPTIONS.get(str(first["loc"][0]), str(first["loc"][0]))
        raise DriftInputError(f"{option}: {first['msg']}") from None


_OPTIONS = {
    "method": "--method",
    "threshold": "--threshold",
    "minSamples": "--min-samples",
    "driftShare": "--drift-share",
}


def judge(comparison: Comparison, spec: Drift) -> DatasetDrift:
    """The operator's drift verdict on the comparison's counts."""
    window = Window(role="stable", counts=comparison.counts, seconds=0.0, pods=1)
    try:
        return judge_drift(comparison.profile, window, spec)
    except ValueError as error:  # bins of another layout than the profile's
        raise DriftInputError(f"CURRENT {comparison.current.path}: {error}") from None
