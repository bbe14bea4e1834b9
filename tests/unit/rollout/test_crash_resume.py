"""A rollout stopped at any step boundary resumes as if it had not been.

The operator's loop runs a canary ([50, 100]) over in-memory workloads; at
the Nth boundary (`faults.boundary`: a decision recorded, one of its actions
taken, its status written) the "process" dies: the tick in flight is lost,
and a new loop and window tracker start from the monitor's status alone, as
a restarted operator does. Whatever N, the canary must be promoted, with the
weights set in the same order as without the crash (no weight goes back) and
no rollback.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_loop import Harness

from driftline_operator import faults
from driftline_operator.analysis.windows import WindowTracker
from driftline_operator.api.spec import Rollout
from driftline_operator.rollout.machine import (
    Pending,
    PromoteCanary,
    RestoreRevision,
    RolloutError,
    RolloutState,
    ScaleCanaryToZero,
    SetWeight,
    StartCanary,
    decide,
    decode_action,
    encode_action,
    resume,
)

TICK = 10.0  # test_loop's SPEC.rollout.interval
# RolloutStarted: recorded, StartCanary, SetWeight, written; StepAdvanced:
# recorded, SetWeight, written; Promoted: recorded, PromoteCanary, SetWeight,
# ScaleCanaryToZero, written.
BOUNDARIES = 12


class Crash(BaseException):
    """The operator process is killed here (nothing after it runs)."""


class Boundaries:
    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.crossed: list[str] = []

    def __call__(self, name: str) -> None:
        self.crossed.append(name)
        if len(self.crossed) == self.kill_at:
            raise Crash(name)


async def run_canary(boundaries: Boundaries) -> tuple[Harness, list[str], list[Any]]:
    """The canary to its end; returns the harness, every Event reason and
    the cluster-changing actions in the order they were taken."""
    h = Harness()
    reasons: list[str] = []
    now = 0.0
    for _ in range(30):
        weight = next(
            (a.weight for a in reversed(h.workloads.taken) if isinstance(a, SetWeight)), 0.0
        )
        h.source.serve("canary", round(1000 * weight / 100))  # traffic follows the weight
        h.source.serve("stable", 1000 - round(1000 * weight / 100))
        try:
            outcome = await h.tick(now)
            decision = outcome.decision
            if decision is not None and decision.actions and decision.event is not None:
                faults.boundary(f"{decision.event.reason} written")
            reasons += [e.reason for e in outcome.events]
        except Crash:
            # What the tick did not write is lost; so is everything in memory.
            h.loop, h.tracker = h.start(), WindowTracker()
        if h.state.phase == "Succeeded" and h.state.pending is None:
            break
        now += TICK
    return h, reasons, h.workloads.taken


def weights(taken: list[Any]) -> list[float]:
    """The weights the canary went through: one set again is no change."""
    went: list[float] = []
    for action in taken:
        if isinstance(action, SetWeight) and action.weight != (went[-1] if went else 0.0):
            went.append(action.weight)
    return went


@pytest.mark.asyncio
async def test_a_canary_without_a_crash_crosses_every_boundary_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    boundaries = Boundaries(kill_at=None)
    monkeypatch.setattr(faults, "boundary", boundaries)
    h, reasons, _ = await run_canary(boundaries)
    assert h.state.phase == "Succeeded"
    assert len(boundaries.crossed) == BOUNDARIES, boundaries.crossed
    assert reasons == ["RolloutStarted", "StepAdvanced", "Promoted"]


@pytest.mark.asyncio
@pytest.mark.parametrize("kill_at", range(1, BOUNDARIES + 1))
async def test_a_canary_killed_at_a_boundary_resumes_and_is_promoted(
    monkeypatch: pytest.MonkeyPatch, kill_at: int
) -> None:
    boundaries = Boundaries(kill_at=kill_at)
    monkeypatch.setattr(faults, "boundary", boundaries)
    h, reasons, taken = await run_canary(boundaries)
    where = boundaries.crossed[kill_at - 1]

    assert h.state.phase == "Succeeded", f"killed after {where}: {h.state}"
    assert h.state.decision is not None and h.state.decision.startswith("Promoted")
    assert h.state.pending is None
    assert "RolledBack" not in reasons and "ProgressDeadlineExceeded" not in reasons
    assert weights(taken) == [50.0, 100.0, 0.0], f"killed after {where}: {weights(taken)}"
    assert PromoteCanary() in taken
    # A transition's Event is posted once, by the run that confirmed it in
    # status; killed right after that write, the Event is lost with it.
    promoted = 0 if where == "Promoted written" else 1
    assert reasons.count("Promoted") == promoted, reasons


def test_a_resumed_decision_takes_its_recorded_actions_and_posts_its_event() -> None:
    recorded = RolloutState(
        phase="Failed",
        weight=0.0,
        decision="RolledBack: 2 consecutive failed analyses",
        pending=Pending((SetWeight(0.0), ScaleCanaryToZero()), previous_phase="Progressing"),
    )
    decision = resume(recorded)
    assert decision.actions == (SetWeight(0.0), ScaleCanaryToZero())
    assert decision.state.pending is None
    assert decision.event is not None
    assert (decision.event.type, decision.event.reason) == ("Warning", "RolledBack")
    assert decision.phase_changed  # Progressing before: the alert goes out


ROLLOUT = Rollout.model_validate(
    {
        "strategy": "canary",
        "stableRef": {"name": "v1"},
        "canaryRef": {"name": "v2"},
        "canaryService": {"name": "v2"},
        "steps": [50, 100],
        "progressDeadline": "2m",
    }
)


def test_the_progress_deadline_does_not_count_time_the_operator_was_away() -> None:
    # The step began 10 minutes ago; the operator restarted 30 s ago and has
    # no window yet: it holds, it does not roll back a canary nobody watched.
    state = RolloutState(phase="Progressing", step=1, weight=100.0, step_started_at=0.0)
    held = decide(ROLLOUT, state, None, now=600.0, watching_since=570.0)
    assert held.state.phase == "Progressing" and held.actions == ()
    # Watched for the whole deadline without data, it does.
    failed = decide(ROLLOUT, state, None, now=600.0, watching_since=480.0)
    assert failed.state.phase == "Failed" and failed.event is not None
    assert failed.event.reason == "ProgressDeadlineExceeded"


@pytest.mark.parametrize(
    "action",
    [StartCanary(), SetWeight(12.5), PromoteCanary(), ScaleCanaryToZero(), RestoreRevision("ab12")],
)
def test_every_action_reads_back_as_recorded(action: Any) -> None:
    assert decode_action(encode_action(action)) == action


def test_a_recorded_action_this_operator_does_not_know_is_an_error_naming_the_fix() -> None:
    with pytest.raises(RolloutError, match=r"remove status\.rollout\.pending"):
        decode_action("Reboot")
