"""Data-quality rates from the sidecar's counts: figures, merge, verdicts,
Events, SLOs on the monitor and on a canary, and the operator's metrics."""

from __future__ import annotations

import itertools

import pytest

from driftline_operator.analysis.data_quality import (
    categorical_features,
    data_quality,
    judge_data_quality,
)
from driftline_operator.analysis.judge import Analysis, Memory, analyze
from driftline_operator.analysis.metrics import OperatorMetrics
from driftline_operator.analysis.slo import judge_slo
from driftline_operator.analysis.windows import Window
from driftline_operator.api.spec import DataQuality, ModelMonitorSpec, NotificationRoute, Slo
from driftline_operator.rollout.compare import judge_slos
from driftline_operator.rollout.notices import recipients, verdict_notices
from driftline_operator.rollout.notifications import Notice
from driftline_sidecar.contract.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    SourceInfo,
    bin_categorical,
    bin_numeric,
)
from driftline_sidecar.contract.snapshot import (
    BinCounts,
    CaptureCounts,
    ProcessInfo,
    Snapshot,
    merge,
)

COUNTRIES = ["DE", "FR"]


def counts(
    amounts: list[float | None],
    countries: list[str | None],
    *,
    wrong_type: int = 0,
    unknown_fields: int = 0,
    taken_at: float = 1000.0,
) -> Snapshot:
    """What a sidecar counts for these rows, binned with the profile's own binning."""
    amount = bin_numeric(amounts, [10.0, 100.0], low=0.0, high=1000.0)
    country = bin_categorical(countries, COUNTRIES)
    return Snapshot(
        process=ProcessInfo(id="p", pid=1, start_time=0.0),
        taken_at=taken_at,
        model="fraud",
        version="v1",
        role="stable",
        requests={"200": len(amounts)},
        capture=CaptureCounts(
            records=len(amounts), wrong_type=wrong_type, unknown_fields=unknown_fields
        ),
        features={
            "amount": BinCounts(**amount.model_dump()),
            "country": BinCounts(**country.model_dump()),
        },
    )


def profile() -> ReferenceProfile:
    return ReferenceProfile(
        created_at="2024-01-01T00:00:00Z",
        source=SourceInfo(path="train.csv", sha256="0" * 64, rows=1000),
        features={
            "amount": NumericProfile(
                edges=[10.0, 100.0],
                expected=[0.3, 0.4, 0.3],
                min=0.0,
                max=1000.0,
                mean=50.0,
                std=30.0,
                missing_rate=0.0,
            ),
            "country": CategoricalProfile(
                categories=COUNTRIES, expected=[0.5, 0.5, 0.0], missing_rate=0.0
            ),
        },
    )


def spec(**extra: object) -> ModelMonitorSpec:
    return ModelMonitorSpec.model_validate(
        {"selector": {"matchLabels": {"app": "fraud"}}, "model": {"name": "fraud"}, **extra}
    )


ROWS_AMOUNT: list[float | None] = [5.0] * 50 + [50.0] * 30 + [5000.0] * 10 + [None] * 10
ROWS_COUNTRY: list[str | None] = ["DE"] * 60 + ["FR"] * 25 + ["XX"] * 12 + [None] * 3


def test_rates_are_the_shares_of_the_rows() -> None:
    figures = data_quality(counts(ROWS_AMOUNT, ROWS_COUNTRY, wrong_type=4), {"country"})
    amount, country = figures.features
    assert (amount.name, country.name) == ("amount", "country")
    assert amount.rate("missingRate").value == pytest.approx(10 / 100)  # type: ignore[union-attr]
    assert amount.rate("outOfRangeRate").value == pytest.approx(10 / 90)  # type: ignore[union-attr]
    assert amount.rate("unseenCategoryRate") is None  # not a category
    assert country.rate("unseenCategoryRate").value == pytest.approx(12 / 97)  # type: ignore[union-attr]
    assert country.rate("outOfRangeRate") is None
    assert country.rate("missingRate").value == pytest.approx(3 / 100)  # type: ignore[union-attr]
    assert figures.schema.value == pytest.approx(4 / 100)
    assert figures.worst("missingRate") == ("amount", amount.rate("missingRate"))
    assert figures.worst("missingRate", "country") == ("country", country.rate("missingRate"))


def test_rates_of_merged_windows_are_the_rates_of_all_rows_in_any_order() -> None:
    parts = [
        counts(ROWS_AMOUNT[i::3], ROWS_COUNTRY[i::3], wrong_type=i, taken_at=1000.0 + i)
        for i in range(3)
    ]
    whole = data_quality(counts(ROWS_AMOUNT, ROWS_COUNTRY, wrong_type=3), {"country"})
    for order in itertools.permutations(parts):
        merged = data_quality(merge(list(order)), {"country"})
        assert merged == whole


def test_categorical_features_come_from_the_spec_and_the_profile() -> None:
    declared = spec(model={"name": "f", "features": [{"name": "tier", "type": "categorical"}]})
    assert categorical_features(declared, profile()) == {"tier", "country"}
    assert categorical_features(spec(), None) == frozenset()


def test_verdict_names_each_breach_and_waits_for_enough_rows() -> None:
    figures = data_quality(counts(ROWS_AMOUNT, ROWS_COUNTRY, wrong_type=4), {"country"})
    status = judge_data_quality(figures, DataQuality(min_records=100))
    assert status.status == "degraded"
    assert status.breaches == [
        "amount/missingRate",
        "amount/outOfRangeRate",
        "country/unseenCategoryRate",
        "schemaErrorRate",
    ]
    assert status.features[0].name == "amount"
    assert status.features[0].missing_rate == pytest.approx(0.1)
    loose = DataQuality(
        max_missing_rate=0.2,
        max_out_of_range_rate=0.2,
        max_unseen_category_rate=0.2,
        max_schema_error_rate=0.1,
    )
    assert judge_data_quality(figures, loose).status == "ok"
    few = judge_data_quality(figures, DataQuality(min_records=101))
    assert few.status == "insufficient_data" and few.breaches == []
    assert few.features[0].missing_rate == pytest.approx(0.1)  # the facts are still shown


def _analyze(snapshot: Snapshot, previous: Memory | None, **extra: object):  # type: ignore[no-untyped-def]
    window = Window("stable", snapshot, 30.0, 1)
    return analyze(
        spec=spec(**extra),
        windows={"stable": window},
        drift_window=window,
        profile=profile(),
        previous=previous,
        now=snapshot.taken_at,
    )


def test_an_event_when_a_rate_crosses_its_threshold_either_way_and_only_then() -> None:
    like_reference: list[float | None] = [5.0] * 30 + [50.0] * 40 + [500.0] * 30
    countries: list[str | None] = ["DE", "FR"] * 50
    clean = counts(like_reference, countries)
    bad = counts([None] * 20 + like_reference[20:], countries)
    first = _analyze(clean, None)
    assert first.status.data_quality is not None and first.status.data_quality.status == "ok"
    assert not [e for e in first.events if e.reason.startswith("DataQuality")]
    assert first.status.phase == "Healthy"

    second = _analyze(bad, first.memory)
    degraded = [e for e in second.events if e.reason == "DataQualityDegraded"]
    assert [e.type for e in degraded] == ["Warning"]
    assert "feature amount: missingRate 20.00% (20/100) is above 5.00%" in degraded[0].message
    assert second.status.phase == "Degraded"

    third = _analyze(bad, second.memory)
    assert not [e for e in third.events if e.reason.startswith("DataQuality")]

    # An operator restarted from the stored status repeats no Event.
    stored = second.status.model_dump(by_alias=True, exclude_none=True)
    again = _analyze(bad, Memory.from_status(stored))
    assert not [e for e in again.events if e.reason.startswith("DataQuality")]

    fourth = _analyze(clean, third.memory)
    recovered = [e for e in fourth.events if e.reason == "DataQualityRecovered"]
    assert len(recovered) == 1 and "missingRate" in recovered[0].message


def test_a_rate_crossing_its_threshold_is_notified_firing_then_resolved() -> None:
    like_reference: list[float | None] = [5.0] * 30 + [50.0] * 40 + [500.0] * 30
    countries: list[str | None] = ["DE", "FR"] * 50
    clean = counts(like_reference, countries)
    first = _analyze(clean, None)
    bad = _analyze(counts([None] * 20 + like_reference[20:], countries), first.memory)

    def notices(result: Analysis) -> list[Notice]:
        status = result.status.model_dump(by_alias=True, exclude_none=True)
        return verdict_notices(result.events, namespace="ml", monitor="fraud", status=status)

    [firing] = notices(bad)
    assert (firing.kind, firing.signal, firing.firing, firing.severity) == (
        "dataQuality",
        "dataQuality/amount/missingRate",
        True,
        "warning",
    )
    assert dict(firing.numbers) == {"feature": "amount", "missingRate": 0.2, "rows": 100}
    assert firing.dedup_key == "driftline/ml/fraud/dataQuality/amount/missingRate"
    routes = [
        NotificationRoute(receiver="drift-only", events=["drift"]),
        NotificationRoute(receiver="pipeline", events=["dataQuality"], min_severity="warning"),
        NotificationRoute(receiver="oncall", events=["dataQuality"], min_severity="critical"),
        NotificationRoute(receiver="everything"),
    ]
    assert recipients(routes, firing) == ["pipeline", "everything"]

    [resolved] = notices(_analyze(clean, bad.memory))
    assert (resolved.signal, resolved.firing, resolved.severity) == (
        firing.signal,
        False,
        "warning",
    )
    assert resolved.dedup_key == firing.dedup_key  # closes the incident its breach opened


@pytest.mark.parametrize(
    ("metric", "feature", "bound", "verdict"),
    [
        ("missingRate", None, "5%", "breach"),
        ("missingRate", "country", "5%", "ok"),
        ("outOfRangeRate", None, 0.2, "ok"),
        ("outOfRangeRate", None, 0.1, "breach"),
        ("unseenCategoryRate", "country", "10%", "breach"),
        ("schemaErrorRate", None, "1%", "breach"),
    ],
)
def test_data_quality_slos_on_the_monitor(
    metric: str, feature: str | None, bound: object, verdict: str
) -> None:
    slo = Slo.model_validate({"name": "q", "metric": metric, "max": bound, "feature": feature})
    figures = data_quality(counts(ROWS_AMOUNT, ROWS_COUNTRY, wrong_type=4), {"country"})
    status = judge_slo(slo, short=None, long=None, data_quality=figures, min_records=100)
    assert status.verdict == verdict, status.message
    starved = judge_slo(slo, short=None, long=None, data_quality=figures, min_records=1000)
    assert starved.verdict == "insufficient_data" and "100 rows" in starved.message


def test_feature_is_only_for_per_feature_rates() -> None:
    with pytest.raises(ValueError, match="feature applies to per-feature rates only"):
        Slo.model_validate({"name": "q", "metric": "errorRate", "max": 0.1, "feature": "a"})


def test_a_canary_fails_a_data_quality_slo_only_when_significantly_above() -> None:
    slo = Slo.model_validate({"name": "missing", "metric": "missingRate", "max": "5%"})
    many = counts([None] * 20 + [5.0] * 180, ["DE"] * 200)  # 10 % of 200: significant
    few = counts([None] * 4 + [5.0] * 46, ["DE"] * 50)  # 8 % of 50: not significant
    (check,) = judge_slos(many, [slo], min_records=50)
    assert check.verdict == "fail" and check.p_value is not None and check.p_value < 0.05
    (check,) = judge_slos(few, [slo], min_records=50)
    assert check.verdict == "ok"
    (check,) = judge_slos(few, [slo], min_records=100)
    assert check.verdict == "insufficient_data"


def test_operator_metrics_carry_the_rates() -> None:
    metrics = OperatorMetrics()
    figures = data_quality(counts(ROWS_AMOUNT, ROWS_COUNTRY, wrong_type=4), {"country"})
    metrics.record_analysis("ml", "fraud", drift=None, slos=[], requests={}, data_quality=figures)
    text = metrics.render().decode()
    assert (
        'driftline_operator_feature_missing_ratio{feature="amount",monitor="fraud",namespace="ml"} 0.1'
        in text
    )
    assert 'driftline_operator_feature_unseen_category_ratio{feature="country"' in text
    assert 'driftline_operator_feature_out_of_range_ratio{feature="country"' not in text
    assert 'driftline_operator_schema_error_ratio{monitor="fraud",namespace="ml"} 0.04' in text
    metrics.record_analysis("ml", "fraud", drift=None, slos=[], requests={})
    assert "feature_missing_ratio{" not in metrics.render().decode()
