"""One ModelMonitor's analysis loop, without kopf: what the daemon runs each tick.

A tick lists the selected pods, counts them, turns the injected, running
ones into collection targets, hands those and the reference profile to the
analysis (`monitor.MonitorRunner`), lets the rollout act on the windows
(`rollout_loop.RolloutLoop`), and merges what both give into `.status`. The
daemon in `handlers` owns the timing and posts the returned Events through kopf.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes.client import ApiClient

from driftline_operator import faults, kube
from driftline_operator.analysis.data_quality import categorical_features
from driftline_operator.analysis.explanations import MonitorExplanations
from driftline_operator.analysis.runner import AnalysisOutcome, MonitorRunner
from driftline_operator.api.events import Event
from driftline_operator.api.names import (
    CONTROL_ANNOTATION,  # canary / shadow pods carry it
)
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.api.status import PodCounts, upsert_condition
from driftline_operator.controller import status
from driftline_operator.controller.reference import ReferenceProblem, load_reference
from driftline_operator.explain.worker import ExplanationPool
from driftline_operator.rollout.loop import RolloutLoop, RolloutOutcome
from driftline_operator.rollout.notices import verdict_notices
from driftline_operator.rollout.notifier import Notifier
from driftline_operator.rollout.workloads import Deployments
from driftline_operator.webhook.inject import pod_targets
from driftline_sidecar.contract.profile import ReferenceProfile


def status_patch(
    *,
    counts: PodCounts,
    outcome: AnalysisOutcome,
    conditions: Iterable[Mapping[str, Any]],
    now: str,
    rollout: RolloutOutcome | None = None,
) -> dict[str, Any]:
    """The analysis' status plus fresh pod counts, its conditions upserted into
    the current ones (a merge patch replaces lists whole, so Ready must stay),
    and the rollout's fields, whose phase wins while a rollout acts."""
    merged = [dict(c) for c in conditions]
    extra = rollout.conditions if rollout is not None else []
    for condition in [*outcome.conditions, *extra]:
        merged = upsert_condition(merged, condition, now=now)
    pods = counts.model_dump(by_alias=True)
    pods["unreachable"] = (outcome.status.get("pods") or {}).get("unreachable", [])
    return {
        **outcome.status,
        **(rollout.status if rollout is not None else {}),
        "pods": pods,
        "conditions": merged,
    }


class AnalysisLoop:
    """What one monitor keeps between ticks: the runner (previous collection,
    drift window, previous verdicts) and the last reference problem reported."""

    def __init__(
        self,
        *,
        api: ApiClient,
        namespace: str,
        name: str,
        previous_status: Mapping[str, Any] | None,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        admin_token: str | None = None,
        explanation_pool: Callable[[], ExplanationPool] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._api = api
        self._notifier = notifier
        self._namespace = namespace
        self._name = name
        self._logger = logger
        explanations = None
        if explanation_pool is not None:
            explanations = MonitorExplanations(
                f"{namespace}/{name}", pool=explanation_pool, admin_token=admin_token
            )
        self._runner = MonitorRunner(
            namespace, name, previous_status=previous_status, explanations=explanations
        )
        self._version: str | None = None  # the monitor's resourceVersion this tick writes over
        self._rollout = RolloutLoop(
            workloads=Deployments(api, namespace),
            record=self._record,
            namespace=namespace,
            name=name,
            admin_token=admin_token,
            logger=logger,
        )
        self._reference_problem: str | None = None

    async def tick(self, *, spec: ModelMonitorSpec, body: Mapping[str, Any]) -> list[Event]:
        # Read afresh: the rollout's state and controls must be what the API
        # holds now, not what the watch last delivered.
        fresh = await kube.aread(self._api, kube.MONITORS, self._namespace, self._name)
        monitor = fresh if fresh is not None else body
        self._version = (monitor.get("metadata") or {}).get("resourceVersion")
        pods = await kube.alist_objects(
            self._api, kube.PODS, self._namespace, selector=spec.selector
        )
        counts = status.pod_counts(pods, spec.selector)
        events: list[Event] = []
        profile, sha = await self._reference(spec, events)
        outcome = await self._runner.run(
            spec=spec, pods=pod_targets(pods, spec), profile=profile, profile_sha=sha
        )
        rollout = await self._rollout.tick(
            spec=spec,
            monitor=monitor,
            pods=pods,
            windows=outcome.windows,
            categorical=categorical_features(spec, profile),
            attributions=outcome.attributions,
            calibration=profile.calibration if profile is not None else None,
        )
        current = (monitor.get("status") or {}).get("conditions") or []
        patch = status_patch(
            counts=counts,
            outcome=outcome,
            conditions=current,
            now=status.now_rfc3339(),
            rollout=rollout,
        )
        await kube.apatch_status(
            self._api,
            kube.MONITORS,
            self._namespace,
            self._name,
            patch,
            resource_version=self._version,
        )
        decision = rollout.decision
        if decision is not None and decision.actions and decision.event is not None:
            faults.boundary(f"{decision.event.reason} written")
        if rollout.clear_control:
            # A one-shot control that has been acted on.
            removal = {"metadata": {"annotations": {CONTROL_ANNOTATION: None}}}
            await kube.apatch(self._api, kube.MONITORS, self._namespace, self._name, removal)
        if self._notifier is not None and spec.notifications:
            # Queued, not awaited: a receiver's timeouts never hold the tick.
            verdicts = verdict_notices(
                outcome.events, namespace=self._namespace, monitor=self._name, status=patch
            )
            self._notifier.send(spec.notifications, [*rollout.notices, *verdicts])
        return events + outcome.events + rollout.events

    async def _record(self, fields: Mapping[str, Any]) -> None:
        """The rollout records a decision before acting on it (`RolloutLoop`)."""
        written = await kube.apatch_status(
            self._api,
            kube.MONITORS,
            self._namespace,
            self._name,
            dict(fields),
            resource_version=self._version,
        )
        self._version = (written.get("metadata") or {}).get("resourceVersion")

    async def _reference(
        self, spec: ModelMonitorSpec, events: list[Event]
    ) -> tuple[ReferenceProfile | None, str | None]:
        if spec.reference is None:
            return None, None
        ref = spec.reference.config_map_ref
        config_map = await kube.aread(self._api, kube.CONFIGMAPS, self._namespace, ref.name)
        # Reconcile checked it before the monitor became Ready; this finds a
        # ConfigMap changed since, and analyses without drift until it is fixed.
        try:
            loaded = load_reference(config_map, ref, namespace=self._namespace)
        except ReferenceProblem as problem:
            if problem.message != self._reference_problem:
                events.append(Event("Warning", problem.reason, problem.message))
            self._reference_problem = problem.message
            return None, None
        self._reference_problem = None
        return loaded.profile, loaded.sha256

    async def close(self) -> None:
        await self._runner.close(forget=True)
