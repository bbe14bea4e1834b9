"""The snapshot: everything one sidecar has counted since its process started.

This is the contract between sidecar and operator (DESIGN.md, "Sidecar").
Every number in it is cumulative, with Prometheus counter semantics: it only
goes up, and starts again from zero when the process restarts (a new
``process.id``). The operator gets a window by subtracting two snapshots of
the same pod (``delta``) and a fleet-wide window by adding pods' windows
(``merge``); every statistic is then computed on the merged counts.
"""

from __future__ import annotations

from typing import Final, Literal

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
    shadow: ShadowCounts = Field(default_factory=ShadowCounts)  # zero unless mirroring


def _combine(a: object, b: object, sign: int) -> object:
    """a + sign*b over the numeric leaves of two JSON-shaped values; a key on
    one side only counts as zero on the other."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {
            k: _combine(a[k] if k in a else _zero_like(b[k]), b[k] if k in b else _zero_like(a[k]), sign)
            for k in a.keys() | b.keys()
        }  # fmt: skip
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise LayoutMismatch(
                f"cannot combine counts of different lengths ({len(a)} and {len(b)})"
            )
        if all(type(x) is int for x in a) and all(type(y) is int for y in b):
            return [x + sign * y for x, y in zip(a, b, strict=True)]  # bin counts: the hot case
        return [_combine(x, y, sign) for x, y in zip(a, b, strict=True)]
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + sign * b
    return a


def _zero_like(value: object) -> object:
    if isinstance(value, dict):
        return {k: _zero_like(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_zero_like(v) for v in value]
    if isinstance(value, int | float):
        return type(value)(0)
    return value


_IDENTITY = ("schema_version", "process", "taken_at", "model", "version", "role", "profile_sha256")
_STATIC = ("bounds",)  # histogram bucket bounds are layout, not counts


def _counts_only(snapshot: Snapshot) -> dict[str, object]:
    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _STATIC}
        return value

    counts = strip(snapshot.model_dump(exclude=set(_IDENTITY)))
    assert isinstance(counts, dict)  # model_dump gives a dict, and strip keeps dicts dicts
    return counts


def _with_counts(template: Snapshot, counts: object) -> Snapshot:
    assert isinstance(counts, dict)  # _combine of two dicts is a dict
    document = template.model_dump()
    for key in ("latency", "upstream_latency"):
        counts[key]["bounds"] = document[key]["bounds"]
    document.update(counts)
    return Snapshot.model_validate(document)


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
    return _with_counts(later, _combine(_counts_only(later), _counts_only(earlier), -1))


def merge(windows: list[Snapshot]) -> Snapshot:
    """Add windows of several pods (same model, role and profile) into one."""
    if not windows:
        raise ValueError("merge needs at least one window")
    first = windows[0]
    counts: object = _counts_only(first)
    for window in windows[1:]:
        if window.profile_sha256 != first.profile_sha256:
            raise LayoutMismatch("cannot merge counts binned against different reference profiles")
        counts = _combine(counts, _counts_only(window), +1)
    return _with_counts(first, counts)
