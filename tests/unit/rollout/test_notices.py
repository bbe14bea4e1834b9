"""What is notified and to which routes: rollout phase changes, verdict
changes, severities, recoveries, and the NotificationsReady condition."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftline_operator.api.events import Event
from driftline_operator.api.spec import ModelMonitorSpec, NotificationRoute
from driftline_operator.rollout.notices import (
    recipients,
    rollout_notice,
    routes_condition,
    verdict_notices,
)

ROUTES = [
    NotificationRoute(receiver="oncall", events=["slo", "rollout"], min_severity="critical"),
    NotificationRoute(receiver="team", events=["drift", "slo"], min_severity="warning"),
    NotificationRoute(receiver="audit"),  # everything, from info up
]


def rollout(previous: str | None, phase: str | None, reason: str = "Changed"):
    return rollout_notice(
        namespace="ml",
        monitor="fraud",
        previous_phase=previous,
        phase=phase,
        event=Event("Normal", reason, "what happened"),
        numbers={"Step": 1},
    )


def test_a_rollout_is_firing_while_paused_or_failed_and_resolved_when_it_leaves():
    started = rollout(None, "Progressing", "RolloutStarted")
    assert (started.firing, started.severity, started.signal) == (False, "info", "rollout")
    assert started.message == "None → Progressing: what happened"
    assert started.numbers == {"Phase": "Progressing", "Step": 1}
    failed = rollout("Progressing", "Failed", "RolledBack")
    assert (failed.firing, failed.severity) == (True, "critical")
    paused = rollout("Progressing", "Paused", "Paused")
    assert (paused.firing, paused.severity) == (True, "warning")
    # Leaving trouble resolves it, at the severity of the trouble.
    restarted = rollout("Failed", "Progressing", "RolloutStarted")
    assert (restarted.firing, restarted.severity) == (False, "critical")
    resumed = rollout("Paused", "Progressing", "Resumed")
    assert (resumed.firing, resumed.severity) == (False, "warning")
    assert failed.dedup_key == restarted.dedup_key == "driftline/ml/fraud/rollout"


def test_routes_take_their_event_kinds_from_their_least_severity_up():
    assert recipients(ROUTES, rollout(None, "Progressing")) == ["audit"]
    assert recipients(ROUTES, rollout("Progressing", "Paused")) == ["audit"]
    assert recipients(ROUTES, rollout("Progressing", "Failed")) == ["oncall", "audit"]
    # The recovery reaches the routes that heard of the failure.
    assert recipients(ROUTES, rollout("Failed", "Progressing")) == ["oncall", "audit"]
    [drift] = verdict_notices(
        [Event("Warning", "DriftDetected", "3 of 10 features drifted")],
        namespace="ml", monitor="fraud", status={},
    )  # fmt: skip
    assert recipients(ROUTES, drift) == ["team", "audit"]
    assert recipients([], drift) == []


def test_verdict_changes_become_notices_with_their_numbers():
    events = [
        Event("Warning", "SLOBreached", "SLO p95: 412ms > 200ms", "slo/p95"),
        Event("Normal", "SLORecovered", "SLO errors: 0.1% <= 1%", "slo/errors"),
        Event("Warning", "DriftDetected", "3 of 10 features drifted"),
        Event("Normal", "PredictionDriftCleared", "prediction score psi 0.01"),
        Event("Warning", "AttributionDrifted", "the model relies on other features"),
        Event("Warning", "SidecarUnreachable", "pod a: refused"),  # not a verdict
        Event("Normal", "StepAdvanced", "weight 50"),  # the rollout's own notice says it
    ]
    status = {
        "slos": [
            {"name": "p95", "verdict": "breach", "value": 0.412, "objective": 0.2},
            {"name": "errors", "verdict": "ok", "value": 0.001, "objective": 0.01},
        ],
        "drift": {
            "status": "drift",
            "driftedShare": 0.3,
            "drifted": 3,
            "prediction": {"method": "psi", "score": 0.01, "threshold": 0.2},
        },
        "explanations": {"status": "drift", "distance": 0.41, "threshold": 0.2},
    }
    notices = verdict_notices(events, namespace="ml", monitor="fraud", status=status)
    got = [(n.kind, n.signal, n.firing, n.severity, dict(n.numbers)) for n in notices]
    assert got == [
        ("slo", "slo/p95", True, "critical", {"value": 0.412, "objective": 0.2}),
        ("slo", "slo/errors", False, "critical", {"value": 0.001, "objective": 0.01}),
        ("drift", "drift", True, "warning", {"driftedShare": 0.3, "drifted": 3}),
        ("drift", "drift/prediction", False, "warning",
         {"method": "psi", "score": 0.01, "threshold": 0.2}),
        ("drift", "drift/attribution", True, "warning", {"distance": 0.41, "threshold": 0.2}),
    ]  # fmt: skip
    assert notices[0].dedup_key == "driftline/ml/fraud/slo/p95"
    assert notices[0].message == "SLO p95: 412ms > 200ms"


def test_data_quality_changes_are_their_own_kind_one_incident_per_rate():
    events = [
        Event(
            "Warning",
            "DataQualityDegraded",
            "feature amount: missingRate 20.00% (20/100) is above 5.00%",
            "dataQuality/amount/missingRate",
        ),
        Event(
            "Normal",
            "DataQualityRecovered",
            "feature country: unseenCategoryRate 0.00% (0/100) is within 5.00%",
            "dataQuality/country/unseenCategoryRate",
        ),
        Event(
            "Warning",
            "DataQualityDegraded",
            "schemaErrorRate 3.00% (3/100) is above 1.00%",
            "dataQuality/schemaErrorRate",
        ),
    ]
    status = {
        "dataQuality": {
            "status": "degraded",
            "rows": 100,
            "schemaErrorRate": 0.03,
            "features": [
                {"name": "amount", "rows": 100, "missingRate": 0.2, "outOfRangeRate": 0.0},
                {"name": "country", "rows": 100, "missingRate": 0.0, "unseenCategoryRate": 0.0},
            ],
        }
    }
    notices = verdict_notices(events, namespace="ml", monitor="fraud", status=status)
    got = [(n.kind, n.signal, n.firing, n.severity, dict(n.numbers)) for n in notices]
    assert got == [
        ("dataQuality", "dataQuality/amount/missingRate", True, "warning",
         {"feature": "amount", "missingRate": 0.2, "rows": 100}),
        ("dataQuality", "dataQuality/country/unseenCategoryRate", False, "warning",
         {"feature": "country", "unseenCategoryRate": 0.0, "rows": 100}),
        ("dataQuality", "dataQuality/schemaErrorRate", True, "warning",
         {"schemaErrorRate": 0.03, "rows": 100}),
    ]  # fmt: skip
    assert notices[0].dedup_key == "driftline/ml/fraud/dataQuality/amount/missingRate"
    # A drift route hears nothing of it; a route taking every kind does.
    assert recipients(ROUTES, notices[0]) == ["audit"]


def test_the_condition_names_an_unknown_route_and_the_receivers_there_are():
    unknown = routes_condition(ROUTES, {"oncall", "audit", "ci"})
    assert (unknown.type, unknown.status, unknown.reason) == (
        "NotificationsReady",
        "False",
        "UnknownReceiver",
    )
    assert "spec.notifications[1].receiver 'team'" in unknown.message
    assert "(it has: audit, ci, oncall)" in unknown.message
    fine = routes_condition(ROUTES, {"oncall", "team", "audit"})
    assert (fine.status, fine.reason) == ("True", "ReceiversFound")
    assert fine.message == "notified: oncall, team, audit"
    none = routes_condition([], set())
    assert (none.status, none.reason) == ("True", "NoRoutes")
    lacking = routes_condition([NotificationRoute(receiver="x")], set())
    assert "(it has: none)" in lacking.message


def spec(notifications: object) -> ModelMonitorSpec:
    return ModelMonitorSpec.model_validate(
        {
            "selector": {"matchLabels": {"app": "fraud"}},
            "model": {"name": "fraud"},
            "notifications": notifications,
        }
    )


def test_routes_default_to_every_event_from_info():
    [route] = spec([{"receiver": "oncall"}]).notifications
    assert route.events == ["rollout", "drift", "slo", "dataQuality"]
    assert route.min_severity == "info"
    assert spec([]).notifications == []


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        ([{"receiver": "a"}, {"receiver": "a"}], "each receiver may be routed once, repeated: a"),
        ([{"receiver": "a", "events": ["slo", "slo"]}], "repeated: slo"),
        ([{"receiver": "a", "events": []}], "at least 1 item"),
        ([{"receiver": "a", "events": ["deploy"]}], "'rollout', 'drift', 'slo' or 'dataQuality'"),
        ([{"receiver": "a", "minSeverity": "page"}], "'info', 'warning' or 'critical'"),
        ([{"receiver": "Team_A"}], "should match pattern"),
        ([{"receiver": "a", "url": "https://hooks.slack.com/x"}], "Extra inputs"),
    ],
)
def test_bad_routes_are_refused_naming_the_field(routes: object, problem: str):
    with pytest.raises(ValidationError) as error:
        spec(routes)
    text = str(error.value)
    assert "notifications" in text and problem in text, text
