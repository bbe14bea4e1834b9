"""The rollout state machine, table-driven with crafted windows.

Each scenario feeds a sequence of analysis ticks (10 s apart) to `decide`,
carrying the state through `status.rollout` (serialised as the operator
stores it) exactly as the operator does between ticks.
"""

from dataclasses import dataclass

import numpy as np
import pytest

from driftline_operator.api.spec import Rollout, Slo
from driftline_operator.api.status import ModelMonitorStatus
from driftline_operator.rollout.compare import ComparisonVerdict, compare, judge_alone
from driftline_operator.rollout.machine import (
    PROMOTE,
    ROLLBACK,
    ControlError,
    Controls,
    Decision,
    PromoteCanary,
    RestoreRevision,
    RolloutState,
    SetWeight,
    StartCanary,
    decide,
    decide_guard,
)
from driftline_sidecar.contract.snapshot import (
    LATENCY_BUCKETS,
    BinCounts,
    Histogram,
    ProcessInfo,
    Snapshot,
)

SPEC = Rollout.model_validate(
    {
        "strategy": "canary",
        "stableRef": {"name": "fraud-v1"},
        "canaryRef": {"name": "fraud-v2"},
        "canaryService": {"name": "fraud-v2"},
        "steps": [10, 50, 100],
        "interval": "30s",
        "failureLimit": 2,
        "progressDeadline": "2m",
        "comparison": {"maxErrorRateIncrease": 0.01, "maxLatencyIncrease": "20ms"},
    }
)
SLOS = [Slo(name="p95", metric="latency", quantile=0.95, max="500ms")]
TICK = 10.0
T0 = 1_700_000_000.0


# -- crafted windows -----------------------------------------------------------


def window(
    role: str,
    *,
    requests: int = 600,
    errors: int = 0,
    latency_s: float = 0.02,
    scores: tuple[int, ...] = (100, 200, 200, 100),
) -> Snapshot:
    spread = np.linspace(0.5, 1.5, requests) * latency_s
    index = np.searchsorted(LATENCY_BUCKETS, spread, side="left")
    counts = np.bincount(index, minlength=len(LATENCY_BUCKETS) + 1).tolist()
    scale = requests / sum(scores)
    return Snapshot(
        process=ProcessInfo(id=role, pid=1, start_time=0.0),
        taken_at=0.0,
        model="fraud",
        version=role,
        role=role,  # type: ignore[arg-type]
        requests={"200": requests - errors, "500": errors},
        latency=Histogram(counts=counts, sum=float(spread.sum())),
        prediction=BinCounts(counts=[round(s * scale) for s in scores]),
    )


STABLE = window("stable", requests=3000, errors=6)


def canary(**kwargs: object) -> ComparisonVerdict:
    return compare(STABLE, window("canary", **kwargs), SPEC.comparison, SLOS)  # type: ignore[arg-type]


HEALTHY = canary()
# A small canary with an error or two: beyond the margin on its face (1.25 %
# against 0.2 %), but one error in 80 requests is not evidence of anything.
NOISY = canary(requests=80, errors=1, latency_s=0.024)
NOISY_TOO = canary(requests=200, errors=2, latency_s=0.03)
SLOW = canary(latency_s=0.08)
ERRORING = canary(errors=60)
DRIFTED = canary(scores=(10, 40, 150, 400))
NO_TRAFFIC = canary(requests=12)


def test_the_crafted_windows_judge_as_intended():
    assert HEALTHY.verdict == "ok" and NOISY.verdict == "ok" and NOISY_TOO.verdict == "ok"
    noise = NOISY.checks[0]
    assert noise.candidate - noise.stable > SPEC.comparison.max_error_rate_increase  # type: ignore[operator]
    assert [c.name for c in SLOW.failed] == ["latency"]
    assert [c.name for c in ERRORING.failed] == ["errorRate"]
    assert [c.name for c in DRIFTED.failed] == ["scoreDrift"]
    assert NO_TRAFFIC.verdict == "insufficient_data"


# -- a tick runner -------------------------------------------------------------


def through_status(state: RolloutState) -> RolloutState:
    """The state as the operator stores it and reads it back (camelCase JSON)."""
    status = ModelMonitorStatus(phase="Progressing", rollout=state.to_status())
    stored = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return RolloutState.from_status(ModelMonitorStatus.model_validate(stored).rollout)


@dataclass
class Run:
    decisions: list[Decision]
    state: RolloutState

    @property
    def actions(self) -> list[object]:
        return [a for d in self.decisions for a in d.actions]

    @property
    def reasons(self) -> list[str]:
        return [d.event.reason for d in self.decisions if d.event is not None]

    @property
    def weights(self) -> list[float]:
        return [a.weight for a in self.actions if isinstance(a, SetWeight)]


def run(
    verdicts: list[ComparisonVerdict | None],
    *,
    state: RolloutState | None = None,
    start: float = T0,
    controls: dict[int, str] | None = None,
    canary_revision: str = "v2",
) -> Run:
    state = state or RolloutState()
    decisions = []
    for i, verdict in enumerate(verdicts):
        command = (controls or {}).get(i)
        decision = decide(
            SPEC,
            state,
            verdict,
            now=start + i * TICK,
            controls=Controls(command) if command else Controls(),  # type: ignore[arg-type]
            canary_revision=canary_revision,
            stable_revision="v1",
        )
        decisions.append(decision)
        state = through_status(decision.state)
    return Run(decisions, state)


# -- canary scenarios ----------------------------------------------------------


def test_a_healthy_canary_is_promoted_step_by_step():
    result = run([None] + [HEALTHY] * 12)

    assert result.actions[0] == StartCanary()
    assert result.weights == [10, 50, 100, 0]
    assert result.reasons == ["RolloutStarted", "StepAdvanced", "StepAdvanced", "Promoted"]
    assert result.actions[-3:] == list(PROMOTE)
    assert result.state.phase == "Succeeded"
    # each step was held for the interval: 3 ticks of 10 s, then the next step
    advanced_at = [i for i, d in enumerate(result.decisions) if d.actions]
    assert advanced_at == [0, 3, 6, 9]
    assert [d.phase_changed for d in result.decisions].count(True) == 2  # started, promoted
    assert "CanaryOK" in result.decisions[9].event.message  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("regression", "check", "number"),
    [
        (SLOW, "latency", "p95 canary"),
        (ERRORING, "errorRate", "60/600"),
        (DRIFTED, "scoreDrift", "Jensen-Shannon"),
    ],
)
def test_a_regression_is_rolled_back_after_failure_limit(regression, check, number):
    result = run([None, HEALTHY, HEALTHY, HEALTHY, regression, regression, HEALTHY])

    assert result.reasons == ["RolloutStarted", "StepAdvanced", "AnalysisFailed", "RolledBack"]
    assert result.actions[-2:] == list(ROLLBACK)
    assert result.weights == [10, 50, 0]
    assert not any(isinstance(a, PromoteCanary) for a in result.actions)
    assert result.state.phase == "Failed" and result.state.failures == 2
    rolled_back = result.decisions[5]
    assert rolled_back.phase_changed and rolled_back.event is not None
    assert rolled_back.event.type == "Warning"
    assert check in rolled_back.event.message and number in rolled_back.event.message
    assert result.state.decision is not None and result.state.decision.startswith("RolledBack")
    assert result.decisions[6].actions == ()  # nothing more once Failed


def test_a_failure_then_a_pass_resets_the_count():
    result = run([None, SLOW, HEALTHY, SLOW, HEALTHY, HEALTHY] + [HEALTHY] * 6)
    assert "RolledBack" not in result.reasons
    assert result.reasons.count("AnalysisFailed") == 2
    assert result.state.phase == "Succeeded"


def test_a_noisy_but_healthy_canary_is_not_rolled_back():
    result = run([None] + [NOISY, NOISY_TOO, HEALTHY] * 4)
    assert result.state.phase == "Succeeded"
    assert "AnalysisFailed" not in result.reasons


def test_insufficient_data_holds_the_step_then_the_deadline_fails_it():
    result = run([None, HEALTHY, HEALTHY, HEALTHY] + [NO_TRAFFIC] * 12 + [None])

    held = result.decisions[4:15]
    assert all(d.actions == () for d in held)  # no pass, no fail
    assert result.reasons == [
        "RolloutStarted",
        "StepAdvanced",
        "InsufficientData",  # once, when the hold begins
        "ProgressDeadlineExceeded",
    ]
    assert all(d.state.failures == 0 for d in held)
    failed = result.decisions[15]  # 2 minutes after step 2 began at tick 3
    assert failed.event is not None and failed.event.type == "Warning"
    assert "need 50 each" in failed.event.message
    assert failed.actions == ROLLBACK and result.state.phase == "Failed"


def test_insufficient_data_between_failures_neither_passes_nor_fails():
    result = run([None, SLOW, NO_TRAFFIC, SLOW])
    assert result.state.phase == "Failed" and result.reasons[-1] == "RolledBack"


def test_a_restart_in_the_middle_resumes_from_status():
    verdicts: list[ComparisonVerdict | None] = [None] + [HEALTHY] * 12
    whole = run(verdicts)
    first = run(verdicts[:5])
    # A new operator process knows only what status says.
    second = run(verdicts[5:], state=first.state, start=T0 + 5 * TICK)
    assert first.actions + second.actions == whole.actions
    assert first.reasons + second.reasons == whole.reasons
    assert second.state == whole.state


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_rollout_is_never_repeated(phase):
    done = RolloutState(phase=phase, step=2, revision="v2", step_started_at=T0)
    for command in (None, "promote", "abort", "resume"):
        result = run([HEALTHY, SLOW, SLOW], state=done, controls={0: command} if command else None)
        assert result.actions == [] and result.reasons == []
        assert result.state == through_status(done)


def test_a_promotion_whose_status_write_was_lost_is_finished_not_redone():
    # The operator copied the template to stable and died before writing status.
    interrupted = RolloutState(phase="Progressing", step=2, weight=100, revision="v2")
    decision = decide(
        SPEC, interrupted, HEALTHY, now=T0, canary_revision="v2", stable_revision="v2"
    )
    assert PromoteCanary() not in decision.actions
    assert decision.actions == PROMOTE[1:]
    assert decision.state.phase == "Succeeded"


def test_a_new_canary_revision_starts_a_new_rollout_even_after_failure():
    failed = RolloutState(phase="Failed", revision="v2", step_started_at=T0)
    result = run([None, HEALTHY], state=failed, canary_revision="v3")
    assert result.reasons == ["RolloutStarted"]
    assert result.state.revision == "v3" and result.weights == [10]
    mid = RolloutState(phase="Progressing", step=1, weight=50, revision="v2", step_started_at=T0)
    assert run([HEALTHY], state=mid, canary_revision="v3").reasons == ["RolloutRestarted"]


def test_no_rollout_when_the_canary_runs_stables_template():
    decision = decide(
        SPEC, RolloutState(), None, now=T0, canary_revision="v1", stable_revision="v1"
    )
    assert decision.actions == () and decision.state.phase is None


# -- manual controls -----------------------------------------------------------


def test_pause_holds_and_resume_restarts_the_steps_clock():
    pausing = dict.fromkeys(range(2, 8), "pause")
    result = run([None] + [HEALTHY] * 10, controls={**pausing, 8: "resume"})

    assert result.reasons[:3] == ["RolloutStarted", "Paused", "Resumed"]
    assert all(d.actions == () for d in result.decisions[2:8])  # ok verdicts, yet no advance
    assert result.decisions[2].phase_changed and result.decisions[2].state.phase == "Paused"
    assert result.decisions[8].clear_control  # the resume annotation is consumed
    # after resuming at tick 8 the step is held a full interval again
    assert [i for i, d in enumerate(result.decisions) if d.actions] == [0]
    assert result.state.step == 0 and result.state.phase == "Progressing"


def test_removing_the_pause_annotation_resumes():
    result = run([None, HEALTHY, HEALTHY, HEALTHY], controls={1: "pause"})
    assert result.reasons == ["RolloutStarted", "Paused", "Resumed"]
    assert not result.decisions[2].clear_control


def test_promote_now_skips_the_remaining_steps():
    result = run([None, HEALTHY, HEALTHY], controls={1: "promote"})
    assert result.reasons == ["RolloutStarted", "Promoted"]
    assert result.decisions[1].actions == PROMOTE and result.decisions[1].clear_control
    assert result.state.phase == "Succeeded"


def test_abort_rolls_back_even_a_healthy_canary():
    result = run([None, HEALTHY, HEALTHY], controls={1: "pause", 2: "abort"})
    assert result.reasons == ["RolloutStarted", "Paused", "Aborted"]
    assert result.decisions[2].actions == ROLLBACK and result.decisions[2].clear_control
    assert result.state.phase == "Failed"


def test_an_unknown_control_names_the_object_and_the_fix():
    assert Controls.from_annotations({}, owner="ml/fraud") == Controls()
    assert Controls.from_annotations({"driftline.io/rollout": " Pause "}, owner="x").command == (
        "pause"
    )
    with pytest.raises(
        ControlError, match=r"ModelMonitor ml/fraud: annotation driftline.io/rollout="
    ):
        Controls.from_annotations({"driftline.io/rollout": "go"}, owner="ml/fraud")


# -- guard ---------------------------------------------------------------------

GUARD = Rollout.model_validate(
    {"strategy": "guard", "bakeTime": "1m", "failureLimit": 2, "progressDeadline": "3m"}
)
GUARD_SLOS = [Slo(name="availability", metric="successRate", objective="99%")]
GOOD_PODS = judge_alone(window("stable", requests=500, errors=1), GUARD_SLOS)
BAD_PODS = judge_alone(window("stable", requests=500, errors=60), GUARD_SLOS)
IDLE_PODS = judge_alone(window("stable", requests=5), GUARD_SLOS)


def guard_run(
    verdicts: list[ComparisonVerdict | None],
    revisions: list[str],
    state: RolloutState | None = None,
) -> Run:
    state = state or RolloutState()
    decisions = []
    previous = {"r2": "r1", "r3": "r2"}
    for i, (verdict, revision) in enumerate(zip(verdicts, revisions, strict=True)):
        decision = decide_guard(
            GUARD,
            state,
            verdict,
            now=T0 + i * TICK,
            revision=revision,
            previous_revision=previous.get(revision),
        )
        decisions.append(decision)
        state = through_status(decision.state)
    return Run(decisions, state)


def test_guard_adopts_the_first_revision_and_bakes_the_next():
    result = guard_run([None, None] + [GOOD_PODS] * 7, ["r1"] + ["r2"] * 8)
    assert result.reasons == ["BaselineAdopted", "BakeStarted", "BakeSucceeded"]
    assert result.actions == []
    assert result.state.phase == "Succeeded" and result.state.revision == "r2"
    assert [d.event.reason for d in result.decisions if d.event][-1] == "BakeSucceeded"
    assert result.decisions[7].event is not None  # 60 s after the bake began at tick 1


def test_guard_rolls_a_breaking_revision_back_once():
    # r2 breaks the SLOs; the undo makes the Deployment's template r1 again.
    result = guard_run(
        [None, None, BAD_PODS, BAD_PODS, GOOD_PODS, BAD_PODS], ["r1", "r2", "r2", "r2", "r1", "r1"]
    )
    assert result.reasons == ["BaselineAdopted", "BakeStarted", "AnalysisFailed", "RolledBack"]
    assert result.actions == [RestoreRevision("r1")]
    rolled_back = result.decisions[3]
    assert rolled_back.event is not None and "availability" in rolled_back.event.message
    assert "60/500" in rolled_back.event.message
    # The restored template is not judged again, and nothing is undone twice.
    assert result.state.phase == "Failed" and result.state.revision == "r1"


def test_guard_without_a_previous_revision_reports_and_keeps_the_pods():
    state = RolloutState(phase="Progressing", revision="r9", step_started_at=T0, failures=1)
    decision = decide_guard(GUARD, state, BAD_PODS, now=T0, revision="r9", previous_revision=None)
    assert decision.actions == () and decision.event is not None
    assert decision.event.reason == "NoPreviousRevision"


def test_guard_with_no_traffic_fails_the_deadline_without_undoing():
    result = guard_run([None, None] + [IDLE_PODS] * 18, ["r1"] + ["r2"] * 19)
    assert result.reasons == [
        "BaselineAdopted",
        "BakeStarted",
        "InsufficientData",
        "ProgressDeadlineExceeded",
    ]
    assert result.actions == [] and result.state.phase == "Failed"


def test_guard_manual_abort_undoes_now():
    state = RolloutState(phase="Progressing", revision="r2", step_started_at=T0)
    decision = decide_guard(
        GUARD,
        state,
        GOOD_PODS,
        now=T0 + 5,
        revision="r2",
        previous_revision="r1",
        controls=Controls("abort"),
    )
    assert decision.actions == (RestoreRevision("r1"),) and decision.clear_control


def test_a_tick_a_little_early_still_ends_the_step():
    mid = RolloutState(phase="Progressing", step=0, weight=10, revision="v2", step_started_at=T0)
    interval = 30.0

    early = decide(SPEC, mid, canary(), now=T0 + interval - 0.5, canary_revision="v2")
    too_early = decide(SPEC, mid, canary(), now=T0 + interval / 2, canary_revision="v2")

    assert (early.state.step, early.state.weight) == (1, 50)
    assert too_early.state.step == 0
