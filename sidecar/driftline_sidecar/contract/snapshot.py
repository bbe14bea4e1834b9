"""The snapshot: everything one sidecar has counted since its process started.

This is the contract between sidecar and operator (DESIGN.md, "Sidecar").
Every number in it is cumulative, with Prometheus counter semantics: it only
goes up, and starts again from zero when the process restarts (a new
``process.id``). The operator gets a window by subtracting two snapshots of
the same pod (``delta``) and a fleet-wide window by adding pods' windows
(``merge``); every statistic is then computed on the merged counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from itertools import chain
from operator import attrgetter, methodcaller
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SNAPSHOT_SCHEMA_VERSION: Final = 1

# Request and upstream latency buckets (seconds, upper bounds): they resolve
# 1 ms to 10 s. The Prometheus histograms use the same bounds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
)  # fmt: skip


class LayoutMismatch(ValueError):
    """Two sets of counts cannot be combined: other bins, another reference
    profile (the sidecars' configs differ)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProcessInfo(_Model):
    id: str  # random per process start: a new id means the counters restarted
    pid: int
    start_time: float  # unix seconds


class Histogram(_Model):
    """Prometheus-style histogram, stored per bucket (not cumulative over buckets):
    ``counts[i]`` observations fell at or below ``bounds[i]`` and above the
    previous bound; ``counts[-1]`` is the +Inf bucket."""

    bounds: list[float] = Field(default_factory=lambda: list(LATENCY_BUCKETS))
    counts: list[int] = Field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


class BinCounts(_Model):
    """One feature's (or the prediction score's) values in the reference bins
    (layout in ``driftline_sidecar.profile``)."""

    counts: list[int]
    missing: int = 0
    out_of_range: int = 0


class CaptureCounts(_Model):
    records: int = 0  # rows extracted (a batched request gives one per row)
    bodies_parsed: int = 0  # exchanges whose request was read (features counted)
    unparsed: int = 0  # not JSON, or JSON in no shape the protocol knows
    responses_unread: int = 0  # request counted, response not (encoding, corrupt, size, shape)
    too_large: int = 0  # over capture.max_body_bytes: forwarded, not read
    dropped: int = 0  # the capture queue was full
    log_dropped: int = 0  # the prediction log queue was full
    unknown_fields: int = 0
    wrong_type: int = 0
    missing_fields: int = 0


class ShadowCounts(_Model):
    """Stable's answers compared with the shadow's, for the mirrored requests
    (the sidecar mirrors, compares and counts; the operator judges)."""

    mirrored: int = 0  # requests sent to the shadow
    dropped: int = 0  # not mirrored: the shadow concurrency bound was reached
    compared: int = 0  # both answered 2xx with a readable prediction
    agreed: int = 0  # classification: the same predicted class
    abs_difference_sum: float = 0.0  # regression: sum of |stable - shadow|
    rel_difference_sum: float = 0.0  # regression: sum of |stable - shadow| / |stable|
    stable_errors: int = 0  # mirrored requests that stable answered with a 5xx
    shadow_errors: int = 0  # the shadow answered 5xx, failed or timed out
    stable_latency: Histogram = Field(default_factory=Histogram)
    shadow_latency: Histogram = Field(default_factory=Histogram)


class LabelCounts(_Model):
    """Labels posted to ``/v1/feedback``, by what became of them."""

    joined: int = 0
    unknown: int = 0
    expired: int = 0
    duplicate: int = 0


class RegressionSums(_Model):
    """Sums over labelled rows of a regression (error = predicted - actual):
    MAE, RMSE, bias and R² follow from them exactly."""

    count: int = 0
    actual: float = 0.0
    actual_squared: float = 0.0
    error: float = 0.0
    abs_error: float = 0.0
    squared_error: float = 0.0


class OneVsRestBins(_Model):
    """One class's score of labelled predictions in the score bins, for the
    labels of that class and for the others (one-vs-rest)."""

    positive: list[int]
    negative: list[int]


class QualityCounts(_Model):
    """Labelled predictions of one segment: everything quality is computed
    from, with no row kept."""

    confusion: dict[str, dict[str, int]] = Field(default_factory=dict)  # actual -> predicted -> n
    # Binary classification: per actual class, the positive class's score in
    # equal-width bins over [0, 1] (feedback.score_bins of them).
    score_bins: dict[str, list[int]] = Field(default_factory=dict)
    # Multiclass: per class, that class's score in the same bins, one-vs-rest.
    class_scores: dict[str, OneVsRestBins] = Field(default_factory=dict)
    regression: RegressionSums = Field(default_factory=RegressionSums)


class Snapshot(_Model):
    schema_version: Literal[1] = SNAPSHOT_SCHEMA_VERSION
    process: ProcessInfo
    taken_at: float  # unix seconds
    model: str
    version: str
    role: Literal["stable", "canary", "shadow"]
    # sha256 of the reference profile the bins come from ("" with fixed bins),
    # so the operator never compares counts binned against another profile.
    profile_sha256: str = ""
    requests: dict[str, int] = Field(default_factory=dict)  # by HTTP status code
    latency: Histogram = Field(default_factory=Histogram)  # client-seen, through the sidecar
    upstream_latency: Histogram = Field(default_factory=Histogram)
    request_bytes: int = 0
    response_bytes: int = 0
    capture: CaptureCounts = Field(default_factory=CaptureCounts)
    features: dict[str, BinCounts] = Field(default_factory=dict)
    prediction: BinCounts | None = None  # the score, in the profile's prediction bins
    classes: dict[str, int] = Field(default_factory=dict)  # predicted labels (bounded)
    # The prediction score in the sidecar's score buckets (a classifier's:
    # profile.SCORE_BOUNDS), for estimating quality before labels arrive.
    score: Histogram | None = None
    # Multiclass with feedback: each prediction's own score by predicted class.
    class_score: dict[str, Histogram] = Field(default_factory=dict)
    shadow: ShadowCounts = Field(default_factory=ShadowCounts)  # zero unless mirroring
    labels: LabelCounts = Field(default_factory=LabelCounts)  # zero without feedback
    quality: dict[str, QualityCounts] = Field(default_factory=dict)  # by segment value


# Not counts: copied from the first snapshot (the later one for ``delta``).
_IDENTITY = frozenset(
    ("schema_version", "process", "taken_at", "model", "version", "role", "profile_sha256")
)
_STATIC = frozenset(("bounds",))  # histogram bucket bounds are layout, not counts


def _total(plus: list[Any], minus: list[Any], *, keep: frozenset[str] = _STATIC) -> Any:
    """``sum(plus) - sum(minus)`` over the numbers in values of one shape (a
    model, a dict, a list of the same length, a number), read straight from
    the models and answered as JSON-shaped data. A dict key or an optional
    model that some values lack counts as zero there; what is not a number
    (and any field named in ``keep``) is taken from the first value."""
    first = plus[0] if plus else minus[0]
    if isinstance(first, list):
        lengths = set(map(len, plus)) | set(map(len, minus))
        if len(lengths) > 1:
            shown = " and ".join(str(n) for n in sorted(lengths))
            raise LayoutMismatch(f"cannot combine counts of different lengths ({shown})")
        if first and not isinstance(first[0], int | float):
            columns = zip(*plus, *minus, strict=True)
            return [_total(list(c[: len(plus)]), list(c[len(plus) :])) for c in columns]
        added = [sum(column) for column in zip(*plus, strict=True)] if plus else [0] * len(first)
        if not minus:
            return added
        taken = [sum(column) for column in zip(*minus, strict=True)]
        return [a - b for a, b in zip(added, taken, strict=True)]
    if isinstance(first, int | float):
        return sum(plus) - sum(minus)
    if isinstance(first, BaseModel):
        return {
            name: getattr(first, name) if name in keep else _total_of(plus, minus, attrgetter(name))
            for name in _field_names(type(first))
        }
    if isinstance(first, dict):
        keys = dict.fromkeys(chain.from_iterable((*plus, *minus)))
        fast = _total_of_count_models(plus, minus, list(keys))
        if fast is not None:
            return fast
        return {key: _total_of(plus, minus, methodcaller("get", key)) for key in keys}
    return first


def _total_of_count_models(
    plus: list[dict[str, Any]], minus: list[dict[str, Any]], keys: list[str]
) -> dict[str, dict[str, Any]] | None:
    """``_total`` of dicts of small models made of integers and lists of them
    (features -> BinCounts: most of a snapshot), a field at a time in numpy
    across all keys and values. None where that does not apply (a key some
    dict lacks, another model, lists that differ): the general path then adds
    them up, or says what does not fit."""
    dicts = [*plus, *minus]
    if not keys or any(len(d) != len(keys) for d in dicts):
        return None
    try:
        rows = [list(map(d.__getitem__, keys)) for d in dicts]
    except KeyError:
        return None
    model = type(rows[0][0])
    same_model = set(map(type, chain.from_iterable(rows))) == {model}
    if not (same_model and issubclass(model, BaseModel) and _is_count_model(model)):
        return None
    totals: dict[str, dict[str, Any]] = {key: {} for key in keys}
    for name, annotation in model.model_fields.items():
        field = attrgetter(name)
        table = [list(map(field, row)) for row in rows]
        if annotation.annotation is int:
            groups = {0: list(range(len(keys)))}  # all at once
        else:
            groups = {}  # keys grouped by list length: one rectangular array each
            for i, v in enumerate(table[0]):
                groups.setdefault(len(v), []).append(i)
        for length, group in groups.items():
            part = table if len(group) == len(keys) else [[r[i] for i in group] for r in table]
            numbers = chain.from_iterable(part)
            if length:
                if set(map(len, chain.from_iterable(part))) != {length}:
                    return None  # lists that differ: the general path says which
                numbers = chain.from_iterable(numbers)
            shape = (len(part), len(group), *([length] if length else []))
            try:  # fromiter converts the ints without building nested lists first
                array = np.fromiter(numbers, np.int64, count=int(np.prod(shape))).reshape(shape)
            except OverflowError:
                return None
            if len(part) * int(np.abs(array).max(initial=0)) >= _INT64_LIMIT:
                return None  # the sum could overflow: Python's ints add them exactly
            total = array[: len(plus)].sum(axis=0) - array[len(plus) :].sum(axis=0)
            for i, v in zip(group, total.tolist(), strict=True):
                totals[keys[i]][name] = v
    return totals


_INT64_LIMIT = 2**63


@cache
def _is_count_model(model: type[BaseModel]) -> bool:
    """A model whose fields are all ``int`` or ``list[int]`` (validated, so
    numpy can take them as int64 without looking)."""
    return all(f.annotation in (int, list[int]) for f in model.model_fields.values())


def _total_of(plus: list[Any], minus: list[Any], part: Callable[[Any], Any]) -> Any:
    """``_total`` of one part (a field, a dict key) over the values that have it."""
    inner_plus = [value for value in map(part, plus) if value is not None]
    inner_minus = [value for value in map(part, minus) if value is not None]
    if not inner_plus and not inner_minus:
        return None
    if type((inner_plus or inner_minus)[0]) in (int, float):  # most parts: counters
        return sum(inner_plus) - sum(inner_minus)
    return _total(inner_plus, inner_minus)


@cache
def _field_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)


def _combined(
    plus: list[Snapshot], minus: list[Snapshot], *, like: Snapshot | None = None
) -> Snapshot:
    """``like`` (else the first of ``plus``) with ``sum(plus) - sum(minus)`` as its counts."""
    counts = _total(plus, minus, keep=_IDENTITY | _STATIC)
    if like is not None:
        counts.update({name: getattr(like, name) for name in _IDENTITY})
    return Snapshot.model_validate(counts)


def delta(later: Snapshot, earlier: Snapshot | None) -> Snapshot:
    """The window between two snapshots of one sidecar.

    If the process restarted in between (another ``process.id``), the counters
    started again from zero, so the window is everything the new process
    counted: the same rule as Prometheus ``increase()`` across a reset. Counts
    lost between the last collection and the restart are not recoverable.
    """
    if earlier is None or earlier.process.id != later.process.id:
        return later
    if earlier.profile_sha256 != later.profile_sha256:
        return later  # rebinned against another profile: only the new counts compare
    return _combined([later], [earlier])


def merge(windows: list[Snapshot]) -> Snapshot:
    """Add windows of several pods (same model, role and profile) into one."""
    if not windows:
        raise ValueError("merge needs at least one window")
    first = windows[0]
    if any(window.profile_sha256 != first.profile_sha256 for window in windows):
        raise LayoutMismatch("cannot merge counts binned against different reference profiles")
    return _combined(windows, [])


def roll(
    total: Snapshot, *, added: Sequence[Snapshot], removed: Sequence[Snapshot], like: Snapshot
) -> Snapshot:
    """A running sum over a sliding window of windows, in one pass: ``total``
    plus the ``added`` windows minus the ``removed`` ones (windows that were
    added to it before), with ``like``'s identity (for a ring of windows, the
    oldest one left, as ``merge`` of the windows left would have). Counts come
    out exactly as adding them up again gives them; float sums may differ from
    it in the last bits."""
    if any(w.profile_sha256 != total.profile_sha256 for w in (*added, *removed)):
        raise LayoutMismatch("cannot merge counts binned against different reference profiles")
    return _combined([total, *added], list(removed), like=like)
