"""The pure decisions behind the kopf handlers: status, admission, analysis-loop merges."""

from typing import Any

import pytest
from pydantic import ValidationError

from driftline_operator.analysis.runner import AnalysisOutcome
from driftline_operator.api.selectors import selector_query
from driftline_operator.api.spec import LabelSelector, ModelMonitorSpec
from driftline_operator.api.status import PodCounts, condition
from driftline_operator.controller import status
from driftline_operator.controller.loop import pod_targets, status_patch
from driftline_operator.webhook import admission

SPEC = {"selector": {"matchLabels": {"app": "fraud"}}, "model": {"name": "fraud"}}


def validation_error(**changes: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        ModelMonitorSpec.model_validate({**SPEC, **changes})
    return caught.value


def test_messages_name_the_field_by_its_yaml_path():
    message = status.invalid_spec_message(validation_error(drift={"threshold": 1.5}))
    assert message == "spec.drift.threshold: Input should be less than or equal to 1 (got 1.5)"


def test_messages_use_list_indices_and_drop_pydantics_prefix():
    slos = [
        {"name": "ok", "metric": "errorRate", "max": 0.1},
        {"name": "p95", "metric": "latency", "max": "1s"},
    ]
    message = status.invalid_spec_message(validation_error(slos=slos))
    assert message == "spec.slos[1]: slo 'p95': latency needs a quantile such as 0.95"


def test_every_problem_is_listed_and_missing_fields_are_named():
    error = validation_error(model={"protocol": "grpc"}, drift={"minSamples": 0})
    problems = status.invalid_spec_message(error).split("; ")
    assert "spec.model.name: Field required" in problems
    assert any(p.startswith("spec.model.protocol: Input should be 'auto'") for p in problems)
    assert "spec.drift.minSamples: Input should be greater than or equal to 1 (got 0)" in problems


def test_ready_keeps_a_phase_the_analysis_set_and_invalid_resets_it():
    body = {"metadata": {"generation": 3}, "status": {"phase": "Degraded", "conditions": []}}
    ready = status.ready(body, config_map="cm", pods=PodCounts(), now="t")
    assert (ready["phase"], ready["observedGeneration"]) == ("Degraded", 3)
    assert (
        status.ready({"status": {"phase": "Invalid"}}, config_map="cm", pods=PodCounts(), now="t")[
            "phase"
        ]
        == "Pending"
    )
    assert status.not_ready(body, reason="InvalidSpec", message="m", now="t")["phase"] == "Invalid"


def pod(
    name: str, labels: dict[str, str], *, injected: bool = False, **pod_status: Any
) -> dict[str, Any]:
    annotations = {"driftline.io/injected": "true"} if injected else {}
    return {
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "model"}]},
        "status": pod_status,
    }


SELECTOR = LabelSelector(match_labels={"app": "fraud"})


def test_pod_counts_skip_finished_terminating_and_unselected_pods():
    terminating = pod("d", {"app": "fraud"}, injected=True, phase="Running")
    terminating["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    pods = [
        pod("a", {"app": "fraud"}, injected=True, phase="Running"),
        pod("b", {"app": "fraud"}, phase="Pending"),
        pod("c", {"app": "fraud"}, phase="Succeeded"),
        terminating,
        pod("e", {"app": "other"}, injected=True, phase="Running"),
    ]
    counts = status.pod_counts(pods, SELECTOR)
    assert (counts.selected, counts.monitored, counts.not_injected) == (2, 1, 1)
    assert "1 were created before the ModelMonitor" in status.describe_pods(counts)


def entry(
    name: str, created: str, *, ready: bool = True, valid: bool = True
) -> admission.MonitorEntry:
    spec = ModelMonitorSpec.model_validate(SPEC) if valid else None
    return admission.MonitorEntry(name=name, created=created, spec=spec, ready=ready)


def test_the_oldest_usable_monitor_wins():
    entries = [entry("b", "2024-02"), entry("a", "2024-03"), entry("old", "2024-01", ready=False)]
    chosen = admission.choose(entries, {"app": "fraud"})
    assert chosen is not None and chosen.name == "b"
    assert admission.choose(entries, {"app": "other"}) is None
    assert admission.choose([entry("x", "1", valid=False)], {"app": "fraud"}) is None


def test_an_entry_is_built_from_a_body_even_when_the_spec_is_invalid():
    body = {
        "metadata": {"name": "m", "creationTimestamp": "t"},
        "spec": {**SPEC, "drift": {"threshold": 9}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    built = admission.entry_from(body)
    assert (built.name, built.created, built.spec, built.ready) == ("m", "t", None, True)
    assert not built.usable


@pytest.mark.parametrize(
    ("namespace", "annotations", "skipped"),
    [
        ("ml", {}, False),
        ("kube-system", {}, True),
        ("driftline-system", {}, True),
        ("ml", {"driftline.io/inject": "false"}, True),
        ("ml", {"driftline.io/injected": "true"}, True),
    ],
)
def test_skip_reasons(namespace: str, annotations: dict[str, str], skipped: bool):
    obj = {"metadata": {"annotations": annotations}, "spec": {"containers": [{"name": "model"}]}}
    reason = admission.skip_reason(obj, namespace=namespace, operator_namespace="driftline-system")
    assert (reason is not None) is skipped


def test_selector_query_uses_the_apis_syntax():
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "fraud", "tier": "web"},
            "matchExpressions": [
                {"key": "track", "operator": "In", "values": ["stable", "canary"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["a"]},
                {"key": "team", "operator": "Exists"},
            ],
        }
    )
    assert selector_query(selector) == (
        "app=fraud,tier=web,track in (stable,canary),!legacy,zone notin (a),team"
    )


def test_only_running_injected_pods_with_an_ip_are_collected():
    spec = ModelMonitorSpec.model_validate({**SPEC, "sidecar": {"adminPort": 9191}})
    canary = pod(
        "b",
        {"app": "fraud", "driftline.io/role": "canary"},
        injected=True,
        phase="Running",
        podIP="10.0.0.2",
    )
    pods = [
        pod("a", {"app": "fraud"}, injected=True, phase="Running", podIP="10.0.0.1"),
        canary,
        pod("c", {"app": "fraud"}, phase="Running", podIP="10.0.0.3"),  # no sidecar
        pod("d", {"app": "fraud"}, injected=True, phase="Pending"),  # no IP yet
    ]
    targets = pod_targets(pods, spec)
    assert [(t.name, t.address, t.role) for t in targets] == [
        ("a", "10.0.0.1:9191", "stable"),
        ("b", "10.0.0.2:9191", "canary"),
    ]


def test_the_status_patch_keeps_ready_and_takes_the_analysis_conditions():
    outcome = AnalysisOutcome(
        status={"phase": "Healthy", "pods": {"unreachable": ["x"]}},
        events=[],
        conditions=[condition("SLOsMet", "True", reason="AllMet", message="ok")],
    )
    current = [{"type": "Ready", "status": "True", "reason": "SidecarConfigured", "message": ""}]
    counts = PodCounts(selected=2, monitored=2)
    patch = status_patch(counts=counts, outcome=outcome, conditions=current, now="t")
    assert patch["phase"] == "Healthy"
    assert patch["pods"] == {"selected": 2, "monitored": 2, "notInjected": 0, "unreachable": ["x"]}
    assert [c["type"] for c in patch["conditions"]] == ["Ready", "SLOsMet"]
