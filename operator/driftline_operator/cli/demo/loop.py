"""One canary rollout's analysis tick, with the operator's own parts.

Each tick: collect the sidecars' snapshots (`SidecarSource`), difference them
into a stable and a canary window (`WindowTracker`), judge the canary against
stable (`compare`), ask the state machine (`rollout.decide`), and carry out
the decision's actions. Only the last part differs from a cluster: the
actions go to an `ActionTaker` (here the demo's processes and router) instead
of Deployments.

At weight 100 % the canary is judged against stable's last full window
(`compare.StableBaseline`), and the tick says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from driftline_operator.analysis.windows import Window, WindowTracker
from driftline_operator.api.spec import Rollout, Slo
from driftline_operator.rollout.compare import (
    MIN_REQUESTS,
    ComparisonVerdict,
    StableBaseline,
    compare,
)
from driftline_operator.rollout.machine import Action, Decision, RolloutState, decide
from driftline_operator.sources import MetricsSource, PodTarget


class ActionTaker(Protocol):
    async def take(self, action: Action) -> None:
        """Carry out one rollout action (idempotent)."""
        ...


@dataclass(frozen=True)
class Tick:
    """What one tick saw and decided, for the printout and the tests."""

    now: float
    before: RolloutState
    decision: Decision
    stable: Window | None
    canary: Window | None
    verdict: ComparisonVerdict | None
    stable_is_last_full_window: bool = False  # weight 100 %: see the module doc
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> RolloutState:
        return self.decision.state


class CanaryLoop:
    def __init__(
        self,
        *,
        spec: Rollout,
        slos: Sequence[Slo],
        source: MetricsSource,
        targets: Sequence[PodTarget],
        actions: ActionTaker,
        min_requests: int = MIN_REQUESTS,
    ) -> None:
        self.spec = spec
        self.slos = list(slos)
        self.source = source
        self.targets = list(targets)
        self.actions = actions
        self.min_requests = min_requests
        self.state = RolloutState()
        self._tracker = WindowTracker()
        self._baseline = StableBaseline(min_requests=min_requests)

    @property
    def finished(self) -> bool:
        return self.state.phase in ("Succeeded", "Failed")

    async def tick(self, *, now: float, canary_revision: str, stable_revision: str) -> Tick:
        collection = await self.source.collect(self.targets, now=now)
        windows = self._tracker.advance(collection)
        stable, canary = windows.roles.get("stable"), windows.roles.get("canary")
        baseline, substituted = self._baseline.choose(
            stable.counts if stable else None, weight=self.state.weight
        )
        verdict = None
        if baseline is not None and canary is not None:
            verdict = compare(
                baseline,
                canary.counts,
                self.spec.comparison,
                self.slos,
                min_requests=self.min_requests,
            )
        before = self.state
        decision = decide(
            self.spec,
            before,
            verdict,
            now=now,
            canary_revision=canary_revision,
            stable_revision=stable_revision,
        )
        for action in decision.actions:
            await self.actions.take(action)
        # Written after the actions, as the operator writes status after them.
        self.state = decision.state
        return Tick(
            now=now,
            before=before,
            decision=decision,
            stable=stable,
            canary=canary,
            verdict=verdict,
            stable_is_last_full_window=substituted,
            unreachable={**collection.unreachable, **windows.skipped},
        )
