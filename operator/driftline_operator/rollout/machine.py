"""The rollout state machine: pure decisions, no I/O, no clock.

Each analysis tick the operator reads the rollout's state from status, gets a
verdict on the last window (`compare`), and calls `decide` (canary) or
`decide_guard` (guard). The decision says the next state, the actions for
the shell to take (router weight, Deployment changes), the Event with its
numbers, and whether the phase changed (for the alert hook).

Crash safety: the state lives in status, and is written before its effects.
A decision that acts is recorded first (`with_pending`: the new state plus
its actions under `pending`), then its actions are taken, then a status
write without `pending` confirms them. A restarted operator that finds
`pending` does not decide again: `resume` takes the recorded actions again
(every action is idempotent: a weight already set, a template already
copied, a Deployment already scaled change nothing) and then goes on. So a
kill at any point either loses a decision nothing has acted on yet (it is
decided again from the same status) or finds it recorded; never a step
taken but forgotten, which would set the old weight again. A terminal phase
(Succeeded / Failed) for the same canary revision decides nothing, so a
promotion or rollback is never repeated. Time is read from status too (the
step's start), except the progress deadline, which also waits for the
operator to have watched (`watching_since`): an operator that was away had
no data to judge, and its absence must not fail a canary.

Manual controls come from the `driftline.io/rollout` annotation: `pause`
holds the rollout while it is set; `resume` (or removing `pause`) continues
it, restarting the step's clock; `promote` and `abort` act once, and the
decision asks the shell to remove the annotation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, get_args

from driftline_operator.api.events import Event
from driftline_operator.api.names import CONTROL_ANNOTATION
from driftline_operator.api.spec import Rollout
from driftline_operator.api.status import PendingActions, RolloutStatus
from driftline_operator.api.values import from_rfc3339, rfc3339
from driftline_operator.rollout.compare import ComparisonVerdict

RolloutPhase = Literal["Progressing", "Paused", "Succeeded", "Failed"]
Command = Literal["pause", "resume", "promote", "abort"]

# Analysis ticks come every `interval` give or take scheduling jitter; a tick a
# little early must not cost the step a whole extra interval.
TICK_JITTER = 0.1


class RolloutError(Exception):
    """The rollout cannot go on as asked; the message names the object and the fix."""


class ControlError(RolloutError):
    """The driftline.io/rollout annotation holds no known command."""


class ActionError(RolloutError):
    """An action could not be carried out (API, router or sidecar); the loop
    keeps the decision and tries it again at the next tick."""


@dataclass(frozen=True)
class Controls:
    command: Command | None = None

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str], *, owner: str) -> Controls:
        """Read the control annotation; `owner` names the object for errors."""
        value = annotations.get(CONTROL_ANNOTATION)
        if value is None or value.strip() == "":
            return cls()
        for command in get_args(Command):
            if value.strip().lower() == command:
                return cls(command)
        raise ControlError(
            f"ModelMonitor {owner}: annotation {CONTROL_ANNOTATION}={value!r} is not one of "
            f"{', '.join(get_args(Command))}; set one of them or remove the annotation"
        )


# -- state ---------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutState:
    """The rollout's progress, as kept in `status.rollout`."""

    phase: RolloutPhase | None = None  # None: no rollout has started
    step: int = 0
    weight: float = 0.0
    failures: int = 0
    step_started_at: float | None = None  # unix seconds
    revision: str | None = None  # the canary (guard: the Deployment) template hash
    decision: str | None = None  # "Reason: message" of the last decision
    pending: Pending | None = None  # the decision's actions, recorded but not yet all done

    @property
    def reason(self) -> str | None:
        return self.decision.split(":", 1)[0] if self.decision else None

    @classmethod
    def from_status(cls, status: RolloutStatus | None) -> RolloutState:
        if status is None:
            return cls()
        started = status.step_started_at
        return cls(
            phase=status.phase,
            step=status.step,
            weight=status.weight,
            failures=status.failures,
            step_started_at=from_rfc3339(started) if started else None,
            revision=status.revision,
            decision=status.decision,
            pending=Pending.from_status(status.pending) if status.pending else None,
        )

    def to_status(self) -> RolloutStatus:
        started = self.step_started_at
        return RolloutStatus(
            phase=self.phase,
            step=self.step,
            weight=self.weight,
            failures=self.failures,
            step_started_at=rfc3339(started) if started is not None else None,
            revision=self.revision,
            decision=self.decision,
            pending=self.pending.to_status() if self.pending else None,
        )


# -- actions and decisions -----------------------------------------------------


@dataclass(frozen=True)
class SetWeight:
    """Send `weight` percent of traffic to the canary (router)."""

    weight: float


@dataclass(frozen=True)
class StartCanary:
    """Give the canary Deployment pods if it has none (scaled to 0 earlier)."""


@dataclass(frozen=True)
class PromoteCanary:
    """Copy the canary's pod template onto the stable Deployment."""


@dataclass(frozen=True)
class ScaleCanaryToZero:
    pass


@dataclass(frozen=True)
class RestoreRevision:
    """guard: roll the Deployment back to the template whose hash is `revision`
    (what `kubectl rollout undo` does)."""

    revision: str


Action = SetWeight | StartCanary | PromoteCanary | ScaleCanaryToZero | RestoreRevision


def encode_action(action: Action) -> str:
    """How an action is written in `status.rollout.pending`."""
    match action:
        case SetWeight(weight=weight):
            return f"SetWeight:{weight:g}"
        case RestoreRevision(revision=revision):
            return f"RestoreRevision:{revision}"
        case _:
            return type(action).__name__


def decode_action(text: str) -> Action:
    name, _, argument = text.partition(":")
    try:
        match name:
            case "SetWeight":
                return SetWeight(float(argument))
            case "RestoreRevision" if argument:
                return RestoreRevision(argument)
            case "StartCanary":
                return StartCanary()
            case "PromoteCanary":
                return PromoteCanary()
            case "ScaleCanaryToZero":
                return ScaleCanaryToZero()
    except ValueError:
        pass
    raise RolloutError(
        f"status.rollout.pending holds {text!r}, not an action this operator takes; "
        "remove status.rollout.pending to decide afresh"
    )


@dataclass(frozen=True)
class Pending:
    """A decision's actions, recorded with its state before they are taken
    (a write-ahead record): whoever finds it takes them again, in order."""

    actions: tuple[Action, ...]
    previous_phase: RolloutPhase | None = None  # for the alert: the phase before the decision

    @classmethod
    def from_status(cls, status: PendingActions) -> Pending:
        actions = tuple(decode_action(a) for a in status.actions)
        return cls(actions=actions, previous_phase=status.previous_phase)

    def to_status(self) -> PendingActions:
        actions = [encode_action(a) for a in self.actions]
        return PendingActions(actions=actions, previous_phase=self.previous_phase)


PROMOTE: tuple[Action, ...] = (PromoteCanary(), SetWeight(0.0), ScaleCanaryToZero())
ROLLBACK: tuple[Action, ...] = (SetWeight(0.0), ScaleCanaryToZero())


@dataclass(frozen=True)
class Decision:
    state: RolloutState
    actions: tuple[Action, ...] = ()
    event: Event | None = None
    phase_changed: bool = False
    clear_control: bool = False  # remove the one-shot annotation (promote, abort)


def _decided(
    before: RolloutState,
    after: RolloutState,
    event: Event | None,
    actions: tuple[Action, ...] = (),
    *,
    clear_control: bool = False,
) -> Decision:
    if event is not None:
        after = replace(after, decision=f"{event.reason}: {event.message}")
    return Decision(
        state=after,
        actions=actions,
        event=event,
        phase_changed=after.phase != before.phase,
        clear_control=clear_control,
    )


def with_pending(before: RolloutState, decision: Decision) -> RolloutState:
    """What to record before taking a decision's actions: its state, with
    the actions still to do."""
    return replace(decision.state, pending=Pending(decision.actions, previous_phase=before.phase))


def resume(state: RolloutState) -> Decision:
    """Finish a recorded decision (`state.pending`): its actions again (each
    is idempotent, so those already done change nothing), and its Event,
    which is posted only once all of them are done."""
    assert state.pending is not None, "resume() is for a state with pending actions"
    event = None
    if state.decision:
        reason, _, message = state.decision.partition(": ")
        event = Event("Warning" if state.phase == "Failed" else "Normal", reason, message)
    return Decision(
        state=replace(state, pending=None),
        actions=state.pending.actions,
        event=event,
        phase_changed=state.phase != state.pending.previous_phase,
    )


def _where(state: RolloutState) -> str:
    return f"step {state.step + 1} at weight {state.weight:g}%"


# -- canary --------------------------------------------------------------------


def decide(
    spec: Rollout,
    state: RolloutState,
    verdict: ComparisonVerdict | None,
    *,
    now: float,
    controls: Controls = Controls(),
    canary_revision: str | None = None,
    stable_revision: str | None = None,
    watching_since: float | None = None,
) -> Decision:
    """The next step of a canary rollout.

    `verdict` is the comparison of the last window (None when there was no
    window yet); the revisions are pod template hashes of the two
    Deployments: a new canary revision starts (or restarts) a rollout, and a
    canary equal to stable has nothing to roll out. `watching_since` is when
    this operator began analysing (see `_deadline_clock`).
    """
    steps = spec.steps
    command = controls.command
    one_shot = command in ("promote", "abort")

    if canary_revision is not None and canary_revision == stable_revision:
        if state.phase in ("Progressing", "Paused"):
            # Stable already runs the canary's template: a promotion whose
            # status write was lost. Finish it (idempotent), never redo it.
            after = replace(state, phase="Succeeded", weight=0.0, failures=0)
            message = "stable already runs the canary's template; promotion completed"
            return _decided(state, after, Event("Normal", "Promoted", message), PROMOTE[1:])
        return Decision(state=state, clear_control=one_shot)

    new_revision = canary_revision is not None and canary_revision != state.revision
    if state.phase is None or new_revision:
        after = RolloutState(
            phase="Progressing",
            step=0,
            weight=steps[0],
            step_started_at=now,
            revision=canary_revision,
        )
        reason = (
            "RolloutRestarted" if state.phase in ("Progressing", "Paused") else "RolloutStarted"
        )
        message = f"canary revision {canary_revision or 'unknown'}: {_where(after)}"
        actions: tuple[Action, ...] = (StartCanary(), SetWeight(float(steps[0])))
        return _decided(state, after, Event("Normal", reason, message), actions)

    if state.phase in ("Succeeded", "Failed"):
        return Decision(state=state, clear_control=one_shot)

    if command == "abort":
        after = replace(state, phase="Failed", weight=0.0)
        event = Event("Warning", "Aborted", f"manual abort at {_where(state)}; canary rolled back")
        return _decided(state, after, event, ROLLBACK, clear_control=True)
    if command == "promote":
        after = replace(state, phase="Succeeded", weight=0.0, failures=0)
        event = Event("Normal", "Promoted", f"manual promotion at {_where(state)}")
        return _decided(state, after, event, PROMOTE, clear_control=True)
    if command == "pause":
        if state.phase == "Paused":
            return Decision(state=state)
        after = replace(state, phase="Paused")
        return _decided(state, after, Event("Normal", "Paused", f"paused at {_where(state)}"))
    if state.phase == "Paused":
        # The step's clock restarts: time spent paused is neither interval
        # nor progress deadline.
        after = replace(state, phase="Progressing", step_started_at=now, failures=0)
        event = Event("Normal", "Resumed", f"resumed at {_where(state)}")
        return _decided(state, after, event, clear_control=command == "resume")

    return _analyse(
        spec,
        state,
        verdict,
        now=now,
        watching_since=watching_since,
        clear_control=command == "resume",
    )


def _deadline_clock(started: float | None, watching_since: float | None, now: float) -> float:
    """How long a step has waited for conclusive data *while an operator
    was there to collect it*. A window takes two collections, so an operator
    that was down (or just restarted) could not have seen any data for that
    time: a step's progress deadline counts from the later of the step's
    start and the moment this operator began analysing."""
    begun = max((t for t in (started, watching_since) if t is not None), default=now)
    return now - begun


def _analyse(
    spec: Rollout,
    state: RolloutState,
    verdict: ComparisonVerdict | None,
    *,
    now: float,
    watching_since: float | None,
    clear_control: bool,
) -> Decision:
    started = state.step_started_at if state.step_started_at is not None else now
    held = now - started
    if verdict is None or verdict.verdict == "insufficient_data":
        why = verdict.reason if verdict is not None else "InsufficientData: no window yet"
        deadline = spec.progress_deadline.seconds
        waited = _deadline_clock(state.step_started_at, watching_since, now)
        if waited >= deadline:
            after = replace(state, phase="Failed", weight=0.0)
            message = (
                f"no conclusive analysis for {waited:.0f}s at {_where(state)} "
                f"(deadline {spec.progress_deadline}); last: {why}"
            )
            event = Event("Warning", "ProgressDeadlineExceeded", message)
            return _decided(state, after, event, ROLLBACK, clear_control=clear_control)
        # Holding is not news: one Event when the hold begins, not one per tick.
        hold = None if state.reason == "InsufficientData" else _hold_event(why, state)
        after = replace(state, decision=why) if hold is None else state
        return _decided(state, after, hold, clear_control=clear_control)

    if verdict.verdict == "fail":
        failures = state.failures + 1
        if failures >= spec.failure_limit:
            after = replace(state, phase="Failed", weight=0.0, failures=failures)
            message = (
                f"{failures} consecutive failed analyses at {_where(state)}; canary rolled "
                f"back. {verdict.reason}"
            )
            event = Event("Warning", "RolledBack", message)
            return _decided(state, after, event, ROLLBACK, clear_control=clear_control)
        after = replace(state, failures=failures)
        message = f"failure {failures}/{spec.failure_limit} at {_where(state)}. {verdict.reason}"
        event = Event("Warning", "AnalysisFailed", message)
        return _decided(state, after, event, clear_control=clear_control)

    passed = replace(state, failures=0)
    if held < spec.interval.seconds * (1 - TICK_JITTER):
        return _decided(state, replace(passed, decision=verdict.reason), None)
    if state.step + 1 >= len(spec.steps):
        after = replace(passed, phase="Succeeded", weight=0.0)
        message = f"all {len(spec.steps)} steps passed; canary promoted. {verdict.reason}"
        event = Event("Normal", "Promoted", message)
        return _decided(state, after, event, PROMOTE, clear_control=clear_control)
    step = state.step + 1
    after = replace(passed, step=step, weight=float(spec.steps[step]), step_started_at=now)
    message = f"advanced to {_where(after)}. {verdict.reason}"
    event = Event("Normal", "StepAdvanced", message)
    return _decided(state, after, event, (SetWeight(after.weight),), clear_control=clear_control)


def _hold_event(why: str, state: RolloutState) -> Event:
    return Event("Normal", "InsufficientData", f"holding {_where(state)}: {why}")


# -- guard ---------------------------------------------------------------------


def decide_guard(
    spec: Rollout,
    state: RolloutState,
    verdict: ComparisonVerdict | None,
    *,
    now: float,
    revision: str,
    previous_revision: str | None,
    controls: Controls = Controls(),
    watching_since: float | None = None,
) -> Decision:
    """Bake a Deployment's new revision; roll it back if it breaks the SLOs.

    `verdict` judges the new revision's pods on their own (`judge_alone`);
    `revision` is the Deployment's current template hash and
    `previous_revision` the one before it (None if there is none). The first
    revision seen is adopted as the baseline, without judging it.
    """
    command = controls.command
    one_shot = command in ("promote", "abort")
    if state.phase is None:
        after = RolloutState(phase="Succeeded", revision=revision, step_started_at=now)
        message = f"revision {revision} adopted as the baseline"
        return _decided(state, after, Event("Normal", "BaselineAdopted", message))
    if revision != state.revision:
        after = RolloutState(phase="Progressing", revision=revision, step_started_at=now)
        message = f"judging revision {revision} for {spec.bake_time}"
        return _decided(state, after, Event("Normal", "BakeStarted", message))
    if state.phase in ("Succeeded", "Failed"):
        return Decision(state=state, clear_control=one_shot)

    started = state.step_started_at if state.step_started_at is not None else now
    baked = now - started
    if command == "promote":
        after = replace(state, phase="Succeeded", failures=0)
        event = Event("Normal", "Accepted", f"revision {revision} accepted manually")
        return _decided(state, after, event, clear_control=True)
    failures = state.failures
    why = verdict.reason if verdict is not None else "InsufficientData: no window yet"
    if command == "abort":
        failures, why = spec.failure_limit, "manual abort"
    elif verdict is not None and verdict.verdict == "fail":
        failures += 1

    if failures >= spec.failure_limit:
        if previous_revision is None:
            after = replace(state, phase="Failed", failures=failures)
            message = f"revision {revision} fails ({why}) and there is no previous revision"
            event = Event("Warning", "NoPreviousRevision", message)
            return _decided(state, after, event, clear_control=one_shot)
        # The restored template becomes the revision this state is about, so
        # the Deployment's next revision (the undo itself) is not judged again.
        after = replace(state, phase="Failed", failures=failures, revision=previous_revision)
        message = (
            f"revision {revision} rolled back to {previous_revision} after {baked:.0f}s: {why}"
        )
        event = Event("Warning", "RolledBack", message)
        actions = (RestoreRevision(previous_revision),)
        return _decided(state, after, event, actions, clear_control=one_shot)
    if verdict is not None and verdict.verdict == "fail":
        message = f"failure {failures}/{spec.failure_limit} for revision {revision}: {why}"
        event = Event("Warning", "AnalysisFailed", message)
        return _decided(state, replace(state, failures=failures), event)

    if verdict is None or verdict.verdict == "insufficient_data":
        waited = _deadline_clock(state.step_started_at, watching_since, now)
        if waited >= spec.progress_deadline.seconds:
            # No data is not bad data: report, but do not undo pods that
            # nobody has shown to be broken.
            after = replace(state, phase="Failed")
            message = f"revision {revision} got no conclusive analysis in {waited:.0f}s: {why}"
            return _decided(state, after, Event("Warning", "ProgressDeadlineExceeded", message))
        if state.reason == "InsufficientData":
            return _decided(state, replace(state, decision=why), None)
        return _decided(state, state, Event("Normal", "InsufficientData", f"holding: {why}"))

    passed = replace(state, failures=0)
    if baked < spec.bake_time.seconds:
        return _decided(state, replace(passed, decision=verdict.reason), None)
    after = replace(passed, phase="Succeeded")
    message = f"revision {revision} met the SLOs for {baked:.0f}s. {verdict.reason}"
    return _decided(state, after, Event("Normal", "BakeSucceeded", message))
