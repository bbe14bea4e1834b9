"""One ModelMonitor's rollout, each analysis tick: the shell around `rollout`.

After the analysis has built this tick's windows, `RolloutLoop.tick` judges
them for `spec.rollout.strategy`, asks the state machine what to do, has it
done through `Workloads` (router weights, Deployment changes), and returns the
status fields, the conditions and the Events to write. The operator passes
Deployments (`workloads.Deployments`); `driftline demo` passes local
processes, so the demo runs this very loop and cannot disagree with it. The state comes from the ModelMonitor as
just read from the API, so an operator restarted mid-rollout resumes at the
step it was at; `rollout.decide` guarantees a promotion or a rollback is not
repeated.

A decision that acts is recorded in status before its first action
(`record`, with its actions under `status.rollout.pending`), its actions are
taken one by one, and the tick's status write removes `pending`. When an
action fails (an API or a sidecar error), or the operator dies, `pending`
stays, and the next tick, this operator's or a restarted one's, takes the
recorded actions again (`machine.resume`) rather than deciding anew. Its
Event is posted once they are all done.

What the loop keeps in memory is only what a restart may lose: stable's
last full window below weight 100 (measured again each tick; at weight 100,
where stable serves nothing, it is kept in `status.rollout.baseline`), the
Warning last reported, and when this loop began analysing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import aiohttp

from driftline_operator import faults
from driftline_operator.analysis.windows import Windows
from driftline_operator.api.events import Event, EventType
from driftline_operator.api.names import CONFIG_KEY, config_map_name
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.api.status import (
    CANDIDATE_FIT,
    Condition,
    ConditionStatus,
    RolloutStatus,
    condition,
)
from driftline_operator.rollout import alerting
from driftline_operator.rollout.compare import (
    ComparisonVerdict,
    RolloutSums,
    StableBaseline,
    compare,
    judge_alone,
    judge_shadow,
)
from driftline_operator.rollout.machine import (
    Action,
    ActionError,
    Controls,
    Decision,
    RolloutError,
    RolloutState,
    SetWeight,
    decide,
    decide_guard,
    resume,
    with_pending,
)
from driftline_operator.rollout.notices import rollout_notice
from driftline_operator.rollout.notifications import Notice
from driftline_operator.rollout.routers import Router, RouteTarget
from driftline_operator.stats.attribution import PairedAttributions
from driftline_sidecar.contract.profile import Calibration, ClassCalibration
from driftline_sidecar.contract.snapshot import LayoutMismatch, Snapshot, merge

Obj = dict[str, Any]
_ACTING_PHASES = ("Progressing", "Paused", "Failed")  # they override the analysis' phase
_FIT: dict[str, ConditionStatus] = {"ok": "True", "fail": "False"}  # shadow verdict -> status


@dataclass(frozen=True)
class Revision:
    """One revision of a guarded workload (a Deployment's ReplicaSet)."""

    number: int  # the deployment.kubernetes.io/revision annotation
    hash: str  # what it runs (workloads.template_hash)
    template: Obj
    name: str = ""  # the ReplicaSet's name (its pods name it as their owner)


class Workloads(Protocol):
    """What a rollout reads and changes besides traffic weights. Failures
    raise `ActionError` (or `RouterError`); the loop retries the decision."""

    def router(self, name: str) -> Router:
        """The traffic router `spec.rollout.router` names."""
        ...

    async def revision(self, name: str) -> str:
        """What workload `name` runs now (a pod template hash)."""
        ...

    async def revisions(self, name: str) -> Sequence[Revision]:
        """guard: the workload's revisions, newest first."""
        ...

    async def owner(self, pods: Sequence[Mapping[str, Any]], *, who: str) -> str:
        """guard: the one workload the pods belong to."""
        ...

    async def carry_out(
        self,
        actions: Sequence[Action],
        *,
        router: Router | None,
        target: RouteTarget,
        deployment: str | None = None,
    ) -> None:
        """Take a decision's actions in order (each one idempotent)."""
        ...


@dataclass
class RolloutOutcome:
    status: dict[str, Any] = field(default_factory=dict)  # merged into .status
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)  # for spec.notifications' receivers
    clear_control: bool = False  # remove the driftline.io/rollout annotation
    # What was decided on, for logs and the demo's printout:
    decision: Decision | None = None
    verdict: ComparisonVerdict | None = None
    baseline_substituted: bool = False  # weight 100 %: stable's last full window


def _insufficient(reason: str) -> ComparisonVerdict:
    return ComparisonVerdict("insufficient_data", f"InsufficientData: {reason}")


def canary_verdict(
    spec: ModelMonitorSpec,
    windows: Windows,
    baseline: StableBaseline,
    *,
    weight: float,
    categorical: Collection[str] = (),
    attributions: PairedAttributions | None = None,
    labelled: tuple[Snapshot, Snapshot] | None = None,
    calibration: Calibration | ClassCalibration | None = None,
) -> tuple[ComparisonVerdict, bool]:
    """The canary window against the stable one of the same period (or, at
    weight 100 %, stable's last full window: see ``StableBaseline``), and
    whether that substitution was made. ``attributions``: sampled rows
    explained against both models (``analysis.explanations``); ``labelled``:
    both roles' windows since the rollout began (``RolloutSums``), which
    labelled quality and the estimate (``calibration``) are judged on."""
    stable = windows.roles.get("stable")
    stable_counts, substituted = baseline.choose(stable.counts if stable else None, weight=weight)
    canary = windows.roles.get("canary")
    if stable_counts is None or canary is None:
        missing = [role for role, w in (("stable", stable_counts), ("canary", canary)) if w is None]
        why = f"no {' or '.join(missing)} pod answered with a full window yet"
        return _insufficient(why), substituted
    verdict = compare(
        stable_counts,
        canary.counts,
        spec.rollout.comparison,
        spec.slos,
        categorical=categorical,
        quality=spec.quality,
        labelled=labelled,
        calibration=calibration,
        attributions=attributions,
        min_explanations=spec.explain.min_explanations,
    )
    return verdict, substituted


def numbers(verdict: ComparisonVerdict | None, state: RolloutState) -> dict[str, Any]:
    """The figures of a decision, for the alert hook and the notices."""
    figures: dict[str, Any] = {"Step": state.step + 1, "Weight": f"{state.weight:g}%"}
    if state.failures:
        figures["Failures"] = state.failures
    if verdict is None:
        return figures
    figures["Requests (stable/candidate)"] = (
        f"{verdict.stable_requests}/{verdict.candidate_requests}"
    )
    for check in verdict.checks:
        if check.candidate is not None:
            figures[check.name] = f"{check.candidate:.4g} (limit {check.limit})"
    return figures


Record = Callable[[Mapping[str, Any]], Awaitable[None]]
"""Merge these fields into the ModelMonitor's status now (before acting)."""


class RolloutLoop:
    """What one monitor's rollout keeps between ticks: only what a restarted
    operator may lose (the stable baseline below weight 100, the Warnings
    already reported, when it began analysing); the rollout's state, its
    pending actions and the baseline at weight 100 are in status."""

    def __init__(
        self,
        *,
        workloads: Workloads,
        record: Record,
        namespace: str,
        name: str,
        admin_token: str | None,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self._workloads = workloads
        self._record = record
        self._namespace = namespace
        self._name = name
        self._admin_token = admin_token
        self._logger = logger
        self._watching_since: float | None = None  # this loop's first tick
        self._baseline = StableBaseline()
        self._problem: str | None = None  # the last Warning reported, to report it once
        self._shadow: Snapshot | None = None  # stable windows summed since the operator started
        self._shadow_verdict: str | None = None
        self._categorical: Collection[str] = ()  # this tick's, see tick
        self._attributions: PairedAttributions | None = None  # this tick's, see tick
        self._calibration: Calibration | ClassCalibration | None = None  # this tick's
        self._sums = RolloutSums()  # both roles' windows since the rollout began

    @property
    def who(self) -> str:
        return f"ModelMonitor {self._namespace}/{self._name}"

    async def tick(
        self,
        *,
        spec: ModelMonitorSpec,
        monitor: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]],
        windows: Windows,
        now: float | None = None,
        categorical: Collection[str] = (),
        attributions: PairedAttributions | None = None,
        calibration: Calibration | ClassCalibration | None = None,
    ) -> RolloutOutcome:
        """``categorical`` names the features whose out-of-range values are unseen
        categories (``analysis.data_quality.categorical_features``);
        ``attributions`` the rows explained against stable and the canary;
        ``calibration`` the profile's, for the estimatedAccuracy SLO."""
        now = time.time() if now is None else now
        self._categorical = categorical
        self._attributions = attributions
        self._calibration = calibration
        if self._watching_since is None:
            self._watching_since = now
        strategy = spec.rollout.strategy
        try:
            if strategy == "canary":
                return await self._canary(spec, monitor, windows, now)
            if strategy == "guard":
                return await self._guard(spec, monitor, pods, windows, now)
            if strategy == "shadow":
                return self._judge_shadow(spec, windows)
        except RolloutError as error:
            return self._report(str(error))
        return RolloutOutcome()

    # -- canary ------------------------------------------------------------------

    async def _canary(
        self, spec: ModelMonitorSpec, monitor: Mapping[str, Any], windows: Windows, now: float
    ) -> RolloutOutcome:
        target = RouteTarget.from_spec(
            spec,
            namespace=self._namespace,
            monitor=self._name,
            config_map=config_map_name(self._name),
            config_key=CONFIG_KEY,
            admin_token=self._admin_token,
        )
        router = self._workloads.router(spec.rollout.router)
        state = state_of(monitor)
        self._restore(monitor, "baseline", self._baseline.restore)
        if spec.quality is not None:  # only labelled quality and its estimate read the sums
            self._restore(monitor, "labelled", self._sums.restore)
            self._sums.add(state.revision, {r: w.counts for r, w in windows.roles.items()})
        verdict, substituted = canary_verdict(
            spec,
            windows,
            self._baseline,
            weight=state.weight,
            categorical=self._categorical,
            attributions=self._attributions,
            labelled=self._sums.pair(),
            calibration=self._calibration,
        )
        if state.pending is not None:
            decision = resume(state)
        else:
            decision = decide(
                spec.rollout,
                state,
                verdict,
                now=now,
                controls=self._controls(monitor),
                canary_revision=await self._workloads.revision(target.canary),
                stable_revision=await self._workloads.revision(target.stable),
                watching_since=self._watching_since,
            )
        outcome = await self._carry_out(
            spec, state, decision, verdict, router=router, target=target
        )
        outcome.baseline_substituted = substituted
        return outcome

    # -- guard -------------------------------------------------------------------

    async def _guard(
        self,
        spec: ModelMonitorSpec,
        monitor: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]],
        windows: Windows,
        now: float,
    ) -> RolloutOutcome:
        name = await self._guarded(spec, pods)
        target = RouteTarget(
            namespace=self._namespace,
            monitor=self._name,
            stable=name,
            canary=name,
            stable_service=name,
            canary_service=name,
        )
        state = state_of(monitor)
        verdict: ComparisonVerdict | None = None
        if state.pending is not None:
            decision = resume(state)
        else:
            revision = await self._workloads.revision(name)
            history = await self._workloads.revisions(name)
            previous = next((r.hash for r in history if r.hash != revision), None)
            owners = {r.name for r in history if r.hash == revision}
            verdict = _revision_verdict(spec, pods, windows, owners, self._categorical)
            decision = decide_guard(
                spec.rollout,
                state,
                verdict,
                now=now,
                revision=revision,
                previous_revision=previous,
                controls=self._controls(monitor),
                watching_since=self._watching_since,
            )
        return await self._carry_out(
            spec, state, decision, verdict, router=None, target=target, deployment=name
        )

    async def _guarded(self, spec: ModelMonitorSpec, pods: Sequence[Mapping[str, Any]]) -> str:
        """The guarded Deployment: spec.rollout.stableRef, else the one owning the pods."""
        if spec.rollout.stable_ref is not None:
            return spec.rollout.stable_ref.name
        return await self._workloads.owner(pods, who=self.who)

    # -- shadow ------------------------------------------------------------------

    def _judge_shadow(self, spec: ModelMonitorSpec, windows: Windows) -> RolloutOutcome:
        """Judge the mirrored comparisons counted so far; report a change once."""
        stable = windows.roles.get("stable")
        if stable is not None:
            self._shadow = (
                stable.counts if self._shadow is None else merge([self._shadow, stable.counts])
            )
        if self._shadow is None:
            verdict = _insufficient("no stable pod answered with a full window yet")
        else:
            verdict = judge_shadow(
                self._shadow.shadow,
                spec.rollout.comparison,
                task=spec.model.prediction.task,
            )
        fit = condition(
            CANDIDATE_FIT,
            _FIT.get(verdict.verdict, "Unknown"),
            reason=verdict.reason.split(":", 1)[0],
            message=verdict.reason,
        )
        outcome = RolloutOutcome(
            status={"rollout": {"decision": verdict.reason}}, conditions=[fit], verdict=verdict
        )
        if verdict.verdict != self._shadow_verdict and verdict.verdict != "insufficient_data":
            kind: EventType = "Normal" if verdict.verdict == "ok" else "Warning"
            outcome.events.append(Event(kind, fit.reason, verdict.reason))
        self._shadow_verdict = verdict.verdict
        return outcome

    # -- shared ------------------------------------------------------------------

    def _controls(self, monitor: Mapping[str, Any]) -> Controls:
        annotations = (monitor.get("metadata") or {}).get("annotations") or {}
        return Controls.from_annotations(annotations, owner=f"{self._namespace}/{self._name}")

    async def _carry_out(
        self,
        spec: ModelMonitorSpec,
        state: RolloutState,
        decision: Decision,
        verdict: ComparisonVerdict | None,
        *,
        router: Router | None,
        target: RouteTarget,
        deployment: str | None = None,
    ) -> RolloutOutcome:
        """Record a new decision that acts, take its actions one by one,
        then reassert the weight; the returned status confirms them."""
        reason = decision.event.reason if decision.event is not None else "Resumed"
        if state.pending is None and decision.actions:
            await self._record(self._status(with_pending(state, decision)))
            faults.boundary(f"{reason} recorded")
        try:
            for action in decision.actions:
                await self._workloads.carry_out(
                    (action,), router=router, target=target, deployment=deployment
                )
                faults.boundary(f"{reason} {type(action).__name__}")
            live = decision.state.phase in ("Progressing", "Paused")
            routed = router is not None  # canary; guard moves no traffic
            if routed and live and not any(isinstance(a, SetWeight) for a in decision.actions):
                # Every tick, not only at a step change: a stable pod that
                # started between the ConfigMap write and the push (or whose
                # sidecar restarted from a stale mount) gets the weight now.
                # Routers are idempotent: a weight in place costs one read.
                weight = (SetWeight(decision.state.weight),)
                await self._workloads.carry_out(weight, router=router, target=target)
        except (ActionError, aiohttp.ClientError) as error:
            what = ", ".join(type(a).__name__ for a in decision.actions) or "SetWeight"
            return self._report(f"{self.who}: {what} failed, retrying at the next tick: {error}")
        self._problem = None
        state, before = decision.state, state
        if before.pending is not None:  # resumed: the phase before is the recorded one
            before = replace(before, phase=before.pending.previous_phase)
        outcome = RolloutOutcome(
            status=self._status(state),
            clear_control=decision.clear_control,
            decision=decision,
            verdict=verdict,
        )
        if state.phase in _ACTING_PHASES:
            outcome.status["phase"] = state.phase
        if decision.event is not None:
            event = decision.event
            outcome.events.append(event)
            if decision.phase_changed:
                outcome.notices.append(
                    rollout_notice(
                        namespace=self._namespace,
                        monitor=self._name,
                        previous_phase=before.phase,
                        phase=state.phase,
                        event=event,
                        numbers=numbers(verdict, state),
                    )
                )
            if decision.phase_changed and spec.alerting.webhook is not None:
                body = alerting.payload(
                    namespace=self._namespace,
                    monitor=self._name,
                    phase=state.phase or "None",
                    previous_phase=before.phase,
                    reason=event.reason,
                    message=event.message,
                    numbers=numbers(verdict, state),
                )
                await alerting.send(
                    spec.alerting.webhook.url,
                    body,
                    namespace=self._namespace,
                    monitor=self._name,
                    logger=self._logger,
                )
        return outcome

    def _status(self, state: RolloutState) -> dict[str, Any]:
        """`state` as status fields. At weight 100 a live canary's status
        also keeps stable's last full window: stable serves nothing then, so
        a restarted operator could not measure it again. A live canary's
        status keeps both roles' sums since the rollout began too: labels
        that came in before a restart still count after it."""
        rollout = state.to_status().model_dump(by_alias=True)
        live = state.phase in ("Progressing", "Paused")
        rollout["baseline"] = self._baseline.recorded() if live and state.weight >= 100 else None
        rollout["labelled"] = self._sums.recorded() if live else None
        return {"rollout": rollout}

    def _restore(
        self, monitor: Mapping[str, Any], field: str, restore: Callable[[str], None]
    ) -> None:
        """Take what ``status.rollout.<field>`` keeps (JSON). A value that does
        not read (edited by hand, or written by another version) is logged and
        left out: the loop then measures or sums anew, and the rollout goes on."""
        recorded = _rollout_status(monitor).get(field)
        if not recorded:
            return
        try:
            restore(str(recorded))
        except ValueError as error:  # pydantic's ValidationError is one
            self._logger.warning(
                "%s: status.rollout.%s does not read, left out: %s", self.who, field, error
            )

    def _report(self, problem: str) -> RolloutOutcome:
        """A Warning Event the first time a problem is seen, a log line each time."""
        self._logger.warning(problem)
        outcome = RolloutOutcome()
        if problem != self._problem:
            outcome.events.append(Event("Warning", "RolloutError", problem))
        self._problem = problem
        return outcome


def state_of(monitor: Mapping[str, Any]) -> RolloutState:
    """The rollout's state as the ModelMonitor's status holds it."""
    raw = _rollout_status(monitor)
    return RolloutState.from_status(RolloutStatus.model_validate(raw) if raw else None)


def _rollout_status(monitor: Mapping[str, Any]) -> Mapping[str, Any]:
    return (monitor.get("status") or {}).get("rollout") or {}


def owner_name(obj: Mapping[str, Any], kind: str) -> str | None:
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == kind and owner.get("controller", True):
            return str(owner.get("name"))
    return None


def _revision_verdict(
    spec: ModelMonitorSpec,
    pods: Sequence[Mapping[str, Any]],
    windows: Windows,
    replica_sets: set[str],
    categorical: Collection[str],
) -> ComparisonVerdict:
    """guard: the pods of the Deployment's current revision, judged on their own."""
    names = {
        p["metadata"]["name"]
        for p in pods
        if owner_name(p, "ReplicaSet") in replica_sets and p["metadata"]["name"] in windows.pods
    }
    if not names:
        return _insufficient("no pod of the current revision answered with a full window yet")
    try:
        window = merge([windows.pods[n] for n in sorted(names)])
    except LayoutMismatch as error:  # the pods count in different bins
        return _insufficient(f"the current revision's pods do not add up: {error}")
    return judge_alone(window, spec.slos, categorical=categorical, quality=spec.quality)
