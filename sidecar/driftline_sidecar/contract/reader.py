"""Snapshots read back from Prometheus samples: the sidecar's own registry
(``/v1/snapshot``) or a Prometheus server's scrape of it (the operator's
Prometheus source). One reader for both, so they cannot drift apart.

Samples are matched by name and by the labels a number depends on; every other
label (``instance``, ``job``, ``__name__``, …) is ignored, and the values of
series differing only there are added up. Bucket bounds are matched as numbers,
not as ``le`` strings, since a scraper may spell them differently ("1" or
"1.0").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import cast

from prometheus_client.samples import Sample

from driftline_sidecar.contract import metric_names as names
from driftline_sidecar.contract.config import Role
from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    BinCounts,
    CaptureCounts,
    Histogram,
    LabelCounts,
    OneVsRestBins,
    ProcessInfo,
    QualityCounts,
    ShadowCounts,
    Snapshot,
)

_BOUNDS = (*LATENCY_BUCKETS, math.inf)


def snapshot_from_samples(
    samples: Iterable[Sample], *, process: ProcessInfo, taken_at: float
) -> Snapshot:
    """One sidecar's cumulative snapshot from the samples of its ``driftline_*``
    metrics (others are ignored).

    Model, version and role come from the labels, the reference profile from
    ``driftline_sidecar_info``. Every bin series exists from the sidecar's start
    (at zero), so the samples carry the full bin layout; requests and classes
    list only the codes and labels counted at least once."""
    s = _Samples(samples)
    identity = s.identity()
    features = s.bins(names.FEATURE_BIN, names.FEATURE)
    missing = s.by_label(names.FEATURE_MISSING, names.FEATURE)
    out_of_range = s.by_label(names.FEATURE_OUT_OF_RANGE, names.FEATURE)
    prediction = s.bins(names.PREDICTION_BIN).get("")
    return Snapshot(
        process=process,
        taken_at=taken_at,
        model=identity.get(names.MODEL, ""),
        version=identity.get(names.VERSION, ""),
        role=cast(Role, identity.get(names.ROLE, "stable")),
        profile_sha256=identity.get(names.PROFILE_SHA256, ""),
        requests=_counted(s.by_label(names.REQUESTS, names.CODE)),
        latency=s.histogram(names.REQUEST_DURATION),
        upstream_latency=s.histogram(names.UPSTREAM_DURATION),
        request_bytes=s.count(names.REQUEST_BYTES),
        response_bytes=s.count(names.RESPONSE_BYTES),
        capture=CaptureCounts(
            records=s.count(names.CAPTURE_RECORDS),
            bodies_parsed=s.count(names.CAPTURE_BODIES_PARSED),
            unparsed=s.count(names.CAPTURE_SKIPPED, names.REASON, names.SkipReason.UNPARSED),
            too_large=s.count(names.CAPTURE_SKIPPED, names.REASON, names.SkipReason.TOO_LARGE),
            responses_unread=s.count(names.CAPTURE_RESPONSES_UNREAD),
            dropped=s.count(names.CAPTURE_DROPPED, names.QUEUE, names.DropQueue.CAPTURE),
            log_dropped=s.count(names.CAPTURE_DROPPED, names.QUEUE, names.DropQueue.LOG),
            unknown_fields=s.count(
                names.SCHEMA_VIOLATIONS, names.KIND, names.SchemaViolation.UNKNOWN_FIELD
            ),
            wrong_type=s.count(
                names.SCHEMA_VIOLATIONS, names.KIND, names.SchemaViolation.WRONG_TYPE
            ),
            missing_fields=s.count(
                names.SCHEMA_VIOLATIONS, names.KIND, names.SchemaViolation.MISSING_FIELD
            ),
        ),
        features={
            name: BinCounts(
                counts=counts, missing=missing.get(name, 0), out_of_range=out_of_range.get(name, 0)
            )
            for name, counts in features.items()
        },
        prediction=(
            None
            if prediction is None
            else BinCounts(
                counts=prediction,
                missing=s.count(names.PREDICTION_MISSING),
                out_of_range=s.count(names.PREDICTION_OUT_OF_RANGE),
            )
        ),
        classes=_counted(s.by_label(names.PREDICTION_CLASS, names.CLASS)),
        score=s.histogram_as_counted(names.PREDICTION_SCORE),
        class_score=_class_scores(s),
        shadow=_shadow_counts(s),
        labels=LabelCounts(
            **{o.value: s.count(names.LABELS, names.OUTCOME, o) for o in names.LabelOutcome}
        ),
        quality=_quality_counts(s),
    )


def shadow_counts_from_samples(samples: Iterable[Sample]) -> ShadowCounts:
    """The snapshot's ``shadow`` section alone (one sidecar's samples)."""
    return _shadow_counts(_Samples(samples))


def _shadow_counts(s: _Samples) -> ShadowCounts:
    outcome, side = names.ShadowOutcome, names.Side
    return ShadowCounts(
        mirrored=s.count(names.SHADOW_REQUESTS, names.OUTCOME, outcome.MIRRORED),
        dropped=s.count(names.SHADOW_REQUESTS, names.OUTCOME, outcome.DROPPED),
        compared=s.count(names.SHADOW_REQUESTS, names.OUTCOME, outcome.COMPARED),
        agreed=s.count(names.SHADOW_REQUESTS, names.OUTCOME, outcome.AGREED),
        abs_difference_sum=s.total(names.SHADOW_ABS_DIFFERENCE + "_sum"),
        rel_difference_sum=s.total(names.SHADOW_REL_DIFFERENCE + "_sum"),
        stable_errors=s.count(names.SHADOW_ERRORS, names.SIDE, side.STABLE),
        shadow_errors=s.count(names.SHADOW_ERRORS, names.SIDE, side.SHADOW),
        stable_latency=s.histogram(names.SHADOW_DURATION, names.SIDE, side.STABLE),
        shadow_latency=s.histogram(names.SHADOW_DURATION, names.SIDE, side.SHADOW),
    )


def _class_scores(s: _Samples) -> dict[str, Histogram]:
    found = {}
    for class_ in sorted(s.by_label(names.PREDICTED_CLASS_SCORE + "_count", names.CLASS)):
        histogram = s.histogram_as_counted(names.PREDICTED_CLASS_SCORE, names.CLASS, class_)
        if histogram is not None:
            found[class_] = histogram
    return found


def _quality_counts(s: _Samples) -> dict[str, QualityCounts]:
    """Per segment: the confusion matrix, the score bins per actual class and
    the regression sums (each series carries its segment label)."""
    found: dict[str, QualityCounts] = {}

    def segment(labels: Mapping[str, str]) -> QualityCounts:
        return found.setdefault(labels.get(names.SEGMENT, ""), QualityCounts())

    for labels, v in s._series(names.QUALITY_CONFUSION):
        row = segment(labels).confusion.setdefault(labels.get(names.ACTUAL, ""), {})
        predicted = labels.get(names.PREDICTED, "")
        row[predicted] = row.get(predicted, 0) + round(v)
    bins: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for labels, v in s._series(names.QUALITY_SCORE_BIN):
        segment(labels)
        key = (labels.get(names.SEGMENT, ""), labels.get(names.ACTUAL, ""))
        bins[key][int(labels[names.BIN])] += v
    for (name, actual), by_bin in bins.items():
        found[name].score_bins[actual] = [round(by_bin.get(i, 0.0)) for i in range(max(by_bin) + 1)]
    ovr: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: {side: defaultdict(float) for side in names.OneVsRest}
    )
    for labels, v in s._series(names.QUALITY_CLASS_SCORE_BIN):
        segment(labels)
        key = (labels.get(names.SEGMENT, ""), labels.get(names.CLASS, ""))
        side = labels.get(names.LABELLED_AS, "")
        if side in names.OneVsRest.__members__.values():
            ovr[key][side][int(labels[names.BIN])] += v
    for (name, class_), sides in ovr.items():
        width = 1 + max(max(by_bin, default=0) for by_bin in sides.values())
        found[name].class_scores[class_] = OneVsRestBins(
            positive=[round(sides[names.OneVsRest.CLASS].get(i, 0.0)) for i in range(width)],
            negative=[round(sides[names.OneVsRest.REST].get(i, 0.0)) for i in range(width)],
        )
    for labels, v in s._series(names.QUALITY_REGRESSION):
        sums = segment(labels).regression
        quantity = labels.get(names.QUANTITY, "")
        if quantity == names.RegressionQuantity.COUNT:
            sums.count += round(v)
        elif quantity in names.RegressionQuantity.__members__.values():
            setattr(sums, quantity, getattr(sums, quantity) + v)
    return found


def _counted(values: Mapping[str, int]) -> dict[str, int]:
    return {key: n for key, n in values.items() if n}


class _Samples:
    """The ``driftline_*`` samples by name, in the order they came."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._by_name: dict[str, list[tuple[Mapping[str, str], float]]] = defaultdict(list)
        for sample in samples:
            # A counter is never NaN or infinite; a scraper's odd value is no count.
            if sample.name.startswith(names.PREFIX) and math.isfinite(sample.value):
                self._by_name[sample.name].append((sample.labels, sample.value))

    def _series(
        self, name: str, label: str | None = None, value: str | None = None
    ) -> Iterable[tuple[Mapping[str, str], float]]:
        return (
            (labels, v)
            for labels, v in self._by_name.get(name, ())
            if label is None or labels.get(label) == value
        )

    def identity(self) -> Mapping[str, str]:
        """The labels of ``driftline_sidecar_info``, or of any series without it."""
        for name in (names.SIDECAR_INFO, *self._by_name):
            for labels, _ in self._by_name.get(name, ()):
                if names.MODEL in labels:
                    return labels
        return {}

    def total(self, name: str, label: str | None = None, value: str | None = None) -> float:
        return sum(v for _, v in self._series(name, label, value))

    def count(self, name: str, label: str | None = None, value: str | None = None) -> int:
        return round(self.total(name, label, value))

    def by_label(self, name: str, label: str) -> dict[str, int]:
        found: dict[str, float] = defaultdict(float)
        for labels, v in self._series(name):
            found[labels.get(label, "")] += v
        return {key: round(v) for key, v in found.items()}

    def bins(self, name: str, label: str | None = None) -> dict[str, list[int]]:
        """Per value of ``label`` (or "" without one), the counts by bin index."""
        found: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for labels, v in self._series(name):
            key = "" if label is None else labels.get(label, "")
            found[key][int(labels[names.BIN])] += v
        return {
            key: [round(by_bin.get(i, 0.0)) for i in range(max(by_bin) + 1)]
            for key, by_bin in found.items()
        }

    def histogram_as_counted(
        self, name: str, label: str | None = None, value: str | None = None
    ) -> Histogram | None:
        """A histogram in the bounds its samples carry (None without samples)."""
        cumulative: dict[float, float] = defaultdict(float)
        for labels, v in self._series(name + "_bucket", label, value):
            cumulative[float(labels["le"])] += v
        if not cumulative:
            return None
        bounds = sorted(cumulative)
        at_bounds = [round(cumulative[b]) for b in bounds]
        return Histogram(
            bounds=[b for b in bounds if math.isfinite(b)],
            counts=[b - a for a, b in pairwise([0, *at_bounds])],
            sum=self.total(name + "_sum", label, value),
        )

    def histogram(self, name: str, label: str | None = None, value: str | None = None) -> Histogram:
        cumulative: dict[float, float] = defaultdict(float)
        for labels, v in self._series(name + "_bucket", label, value):
            cumulative[float(labels["le"])] += v
        at_bounds = [round(cumulative.get(bound, 0.0)) for bound in _BOUNDS]
        return Histogram(
            counts=[b - a for a, b in pairwise([0, *at_bounds])],
            sum=self.total(name + "_sum", label, value),
        )
