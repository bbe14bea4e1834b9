"""Data quality of a window: per-feature missing, out-of-range and unseen-category
rates, and schema errors per row, from the counts the sidecar already keeps.
Pure.

The sidecar counts, per feature, values in no bin (``missing``: absent, null
or of the wrong type) and values outside the reference (``out_of_range``: a
number outside the profile's [min, max], a category the profile does not
list). Which of the two a feature's ``out_of_range`` is depends on its kind,
which the operator knows from the spec and the profile, not from the counts.

Rates are facts about the counts; ``judge_data_quality`` holds them against
``spec.dataQuality``, and only a window with at least ``minRecords`` rows
can breach (no data is not bad data).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from driftline_operator.api.events import Event
from driftline_operator.api.spec import DataQuality, ModelMonitorSpec
from driftline_operator.api.status import DataQualityStatus, FeatureQualityStatus
from driftline_sidecar.contract.profile import ReferenceProfile
from driftline_sidecar.contract.snapshot import Snapshot

MISSING = "missingRate"
OUT_OF_RANGE = "outOfRangeRate"
UNSEEN = "unseenCategoryRate"
SCHEMA = "schemaErrorRate"
PER_FEATURE = (MISSING, OUT_OF_RANGE, UNSEEN)
SUBJECT_PREFIX = "dataQuality/"  # + a breach_key: one rate's Events


@dataclass(frozen=True)
class Rate:
    """``count`` of ``total``; no rate without a denominator."""

    count: int
    total: int

    @property
    def value(self) -> float | None:
        return self.count / self.total if self.total else None

    def __str__(self) -> str:
        value = self.value
        return "no values" if value is None else f"{value:.2%} ({self.count}/{self.total})"


@dataclass(frozen=True)
class FeatureRates:
    name: str
    categorical: bool
    present: int  # values that landed in a bin
    missing: int
    outside: int  # out of range (numeric) or unseen (categorical)

    @property
    def rows(self) -> int:
        return self.present + self.missing

    def rate(self, metric: str) -> Rate | None:
        """The feature's rate for ``metric``; None where it does not apply to its kind."""
        if metric == MISSING:
            return Rate(self.missing, self.rows)
        if metric == (UNSEEN if self.categorical else OUT_OF_RANGE):
            return Rate(self.outside, self.present)
        return None


@dataclass(frozen=True)
class DataQualityFigures:
    rows: int  # captured rows (a batched request counts each of its rows)
    schema_errors: int
    features: tuple[FeatureRates, ...]

    @property
    def schema(self) -> Rate:
        # Violations per row, capped: a row with three unknown fields is one bad row at most.
        return Rate(min(self.schema_errors, self.rows), self.rows)

    def worst(self, metric: str, feature: str | None = None) -> tuple[str, Rate] | None:
        """``metric``'s rate for ``feature`` (default: the feature where it is
        highest), or None when no feature has it."""
        if metric == SCHEMA:
            return "", self.schema
        found = [
            (f.name, rate)
            for f in self.features
            if (feature is None or f.name == feature) and (rate := f.rate(metric)) is not None
        ]
        if not found:
            return None
        return max(found, key=lambda item: -1.0 if item[1].value is None else item[1].value)


def categorical_features(
    spec: ModelMonitorSpec, profile: ReferenceProfile | None
) -> frozenset[str]:
    """The features counted as categories: declared so, or profiled so."""
    names = {f.name for f in spec.model.features if f.type == "categorical"}
    if profile is not None:
        names |= {n for n, p in profile.features.items() if p.kind == "categorical"}
    return frozenset(names)


def data_quality(counts: Snapshot, categorical: Collection[str]) -> DataQualityFigures:
    capture = counts.capture
    return DataQualityFigures(
        rows=capture.records,
        schema_errors=capture.unknown_fields + capture.wrong_type + capture.missing_fields,
        features=tuple(
            FeatureRates(
                name=name,
                categorical=name in categorical,
                present=sum(bins.counts),
                missing=bins.missing,
                outside=bins.out_of_range,
            )
            for name, bins in sorted(counts.features.items())
        ),
    )


def thresholds(spec: DataQuality) -> dict[str, float]:
    return {
        MISSING: spec.max_missing_rate,
        OUT_OF_RANGE: spec.max_out_of_range_rate,
        UNSEEN: spec.max_unseen_category_rate,
        SCHEMA: spec.max_schema_error_rate,
    }


def breach_key(feature: str, metric: str) -> str:
    return f"{feature}/{metric}" if feature else metric


def _rounded(rate: Rate | None) -> float | None:
    value = None if rate is None else rate.value
    return None if value is None else round(value, 6)


def judge_data_quality(figures: DataQualityFigures, spec: DataQuality) -> DataQualityStatus:
    limits = thresholds(spec)
    enough = figures.rows >= spec.min_records
    features = []
    for f in figures.features:
        breaches = [
            metric
            for metric in PER_FEATURE
            if enough
            and (rate := f.rate(metric)) is not None
            and rate.value is not None
            and rate.value > limits[metric]
        ]
        features.append(
            FeatureQualityStatus(
                name=f.name,
                rows=f.rows,
                missing_rate=_rounded(f.rate(MISSING)),
                out_of_range_rate=_rounded(f.rate(OUT_OF_RANGE)),
                unseen_category_rate=_rounded(f.rate(UNSEEN)),
                breaches=breaches,
            )
        )
    schema = figures.schema
    schema_breach = enough and schema.value is not None and schema.value > limits[SCHEMA]
    keys = [breach_key(f.name, metric) for f in features for metric in f.breaches]
    if schema_breach:
        keys.append(SCHEMA)
    features.sort(key=lambda f: (-len(f.breaches), -(f.missing_rate or 0.0), f.name))
    return DataQualityStatus(
        status="insufficient_data" if not enough else "degraded" if keys else "ok",
        rows=figures.rows,
        schema_error_rate=_rounded(schema),
        schema_errors=figures.schema_errors,
        features=features,
        breaches=sorted(keys),
    )


def breaches(status: DataQualityStatus | None) -> frozenset[str] | None:
    """The breached rates of a judged status (``breach_key``s); None when not judged."""
    if status is None or status.status == "insufficient_data":
        return None
    return frozenset(status.breaches)


def data_quality_events(
    before: frozenset[str] | None,
    after: frozenset[str] | None,
    figures: DataQualityFigures,
    spec: DataQuality,
) -> list[Event]:
    """A Warning for each rate that crossed its threshold since the last judged
    window, a Normal Event for each that came back under it."""
    if after is None or before == after:
        return []
    before = before or frozenset()
    limits = thresholds(spec)
    rates: Mapping[str, Rate] = {
        breach_key(f.name, metric): rate
        for f in figures.features
        for metric in PER_FEATURE
        if (rate := f.rate(metric)) is not None
    } | {SCHEMA: figures.schema}
    events = []
    for key in sorted(after - before):
        text = _text(key, rates, limits, "above")
        events.append(Event("Warning", "DataQualityDegraded", text, data_quality_subject(key)))
    for key in sorted(before - after):
        text = _text(key, rates, limits, "within")
        events.append(Event("Normal", "DataQualityRecovered", text, data_quality_subject(key)))
    return events


def data_quality_subject(key: str) -> str:
    """What a rate's Events are about (``dataQuality/<feature>/<metric>``): each
    rate's notification incident is its own, opened and closed by its Events."""
    return SUBJECT_PREFIX + key


def _text(key: str, rates: Mapping[str, Rate], limits: Mapping[str, float], where: str) -> str:
    feature, _, metric = key.rpartition("/")
    subject = f"feature {feature}: {metric}" if feature else metric
    rate = rates.get(key)
    return (
        f"{subject} {rate if rate is not None else 'not measured'} is {where} {limits[metric]:.2%}"
    )
