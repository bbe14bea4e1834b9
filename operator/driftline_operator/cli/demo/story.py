"""``driftline demo``: a whole canary rollout on one machine, no cluster.

Trains a small model and a candidate for the chosen scenario, starts each
behind its own sidecar, sends steady traffic through the stable sidecar, and
runs the operator's own rollout loop every interval (`rollout.loop.RolloutLoop`:
judge, decide, act) on windows collected from the sidecars, with the demo's
processes standing in for Deployments (`FleetWorkloads`) and a status dict
for the ModelMonitor, printing each tick. In the healthy and reliance
scenarios the operator's explanations run too (`demo.explained`): the same
sampled rows explained against both models, compared in the canary verdict,
and both attribution profiles printed at the end.
Exits 0 when the outcome is the one the scenario should have (promoted for
healthy, rolled back otherwise), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import pandas as pd
from pydantic import ValidationError

from driftline_operator.analysis.explanations import ExplainOutcome
from driftline_operator.analysis.windows import Window, WindowTracker
from driftline_operator.api.spec import ModelMonitorSpec, Rollout, Slo
from driftline_operator.api.values import parse_duration
from driftline_operator.cli.demo import report
from driftline_operator.cli.demo.explained import (
    EXPLAINED,
    MAX_ATTRIBUTION_DISTANCE,
    DemoExplanations,
    spec_fields,
)
from driftline_operator.cli.demo.fleet import Fleet, FleetError
from driftline_operator.cli.demo.router import DEMO_TARGET, LocalSidecarRouter
from driftline_operator.cli.demo.traffic import Traffic
from driftline_operator.cli.demo.training import SCENARIOS, Scenario, labelled_scores, models
from driftline_operator.cli.profiles import calibration
from driftline_operator.rollout.compare import ComparisonVerdict
from driftline_operator.rollout.loop import Revision, RolloutLoop, state_of
from driftline_operator.rollout.machine import (
    Action,
    Decision,
    PromoteCanary,
    RestoreRevision,
    RolloutError,
    RolloutState,
    ScaleCanaryToZero,
    SetWeight,
    StartCanary,
)
from driftline_operator.rollout.routers import Router, RouterError, RouteTarget
from driftline_operator.sources import PodTarget
from driftline_operator.sources.sidecar import SidecarSource
from driftline_operator.stats.quality import estimated_accuracy
from driftline_sidecar.contract.profile import Calibration

SLOS = [
    Slo(name="p95", metric="latency", quantile=0.95, max="250ms"),
    Slo(name="availability", metric="successRate", objective="99%"),
]


@dataclass(frozen=True)
class Options:
    scenario: Scenario = "healthy"
    interval: str = "10s"
    steps: tuple[int, ...] = (10, 25, 50, 100)
    failure_limit: int = 2
    progress_deadline: str | None = None  # default: five intervals (ten with explanations)
    rps: float = 100.0
    seed: int = 1


# --scenario quality: each answer's true label is posted this long after it.
LABEL_DELAY_SECONDS = 3.0
QUALITY = {"classes": ["ok", "fraud"], "positiveClass": "fraud", "minLabels": 50}


def monitor_spec(options: Options) -> ModelMonitorSpec:
    """The ModelMonitor the demo runs (validated as the CRD would)."""
    labelled = {"quality": QUALITY} if options.scenario == "quality" else {}
    explained = options.scenario in EXPLAINED
    # Explained rows come a few ticks after the traffic: a window of the
    # reservoir has to close, and shap takes its time on a busy machine.
    intervals = 10 if explained else 5
    deadline = options.progress_deadline or f"{intervals * parse_duration(options.interval):g}s"
    comparison = {"maxAttributionDistance": MAX_ATTRIBUTION_DISTANCE} if explained else {}
    return ModelMonitorSpec.model_validate(
        {
            **labelled,
            "selector": {"matchLabels": {"app": DEMO_TARGET.monitor}},
            "model": {"name": DEMO_TARGET.monitor},
            **(spec_fields(DEMO_TARGET.monitor) if explained else {}),
            "slos": SLOS,
            "rollout": {
                "strategy": "canary",
                "stableRef": {"name": DEMO_TARGET.stable},
                "canaryRef": {"name": DEMO_TARGET.canary},
                "canaryService": {"name": DEMO_TARGET.canary_service},
                "router": "sidecar",
                "steps": list(options.steps),
                "interval": options.interval,
                "failureLimit": options.failure_limit,
                "progressDeadline": deadline,
                "comparison": comparison,
            },
        }
    )


def rollout_spec(options: Options) -> Rollout:
    return monitor_spec(options).rollout


class FleetWorkloads:
    """`rollout.loop.Workloads` on the demo's processes: the fleet stands in
    for the Deployments, the local sidecar router for the cluster's."""

    def __init__(self, fleet: Fleet, router: LocalSidecarRouter) -> None:
        self.fleet = fleet
        self._router = router

    def router(self, name: str) -> Router:
        return self._router

    async def revision(self, name: str) -> str:
        pod = self.fleet.canary if name == DEMO_TARGET.canary else self.fleet.stable
        return pod.revision

    async def revisions(self, name: str) -> list[Revision]:
        raise RolloutError("the demo runs a canary rollout; guard has no meaning here")

    async def owner(self, pods: Sequence[Mapping[str, Any]], *, who: str) -> str:
        raise RolloutError("the demo runs a canary rollout; guard has no meaning here")

    async def carry_out(
        self,
        actions: Sequence[Action],
        *,
        router: Router | None,
        target: RouteTarget,
        deployment: str | None = None,
    ) -> None:
        for action in actions:
            match action:
                case SetWeight(weight=weight):
                    await self._router.set_weight(target, weight)
                case StartCanary():
                    pass  # the demo's canary runs from the start
                case PromoteCanary():
                    await self.fleet.promote()
                case ScaleCanaryToZero():
                    await self.fleet.stop_canary()
                case RestoreRevision():
                    raise RouterError(
                        "the demo runs a canary rollout; guard's undo has no meaning here"
                    )


@dataclass(frozen=True)
class Tick:
    """What one tick saw and decided, for the printout and the tests."""

    now: float
    before: RolloutState
    state: RolloutState
    decision: Decision | None  # None: an action failed and is retried next tick
    stable: Window | None
    canary: Window | None
    verdict: ComparisonVerdict | None
    stable_is_last_full_window: bool = False  # weight 100 %: see compare.StableBaseline
    unreachable: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # Warning Events of the tick
    estimated: dict[str, float] = field(default_factory=dict)  # role -> label-free accuracy


class DemoRun:
    """Trained models, running processes, traffic and the loop; ``async with``
    starts and stops them. ``tick()`` runs one interval on schedule."""

    def __init__(self, options: Options, *, workdir: Path) -> None:
        self.options = options
        self.monitor_spec = monitor_spec(options)
        self.spec = self.monitor_spec.rollout
        self.interval = self.spec.interval.seconds
        stable, candidate = models(options.scenario, seed=options.seed)
        self.fleet = Fleet(workdir=workdir, stable=stable, candidate=candidate)
        self.traffic = Traffic(
            self.fleet.stable.proxy_url,
            rps=options.rps,
            seed=options.seed,
            scenario=options.scenario,
        )
        self.source = SidecarSource()
        self.tracker = WindowTracker()
        # The ModelMonitor as the API would hold it: the loop reads its state
        # from .status and the demo merges each tick's status into it.
        self.monitor: dict[str, Any] = {"metadata": {"name": "demo"}, "status": {}}
        self.targets: list[PodTarget] = []
        self.loop: RolloutLoop | None = None
        self.started = 0.0
        self._ticks = 0
        self._labeller: asyncio.Task[None] | None = None
        self.labels_joined = 0
        self.explanations: DemoExplanations | None = None
        if options.scenario in EXPLAINED:
            self.explanations = DemoExplanations(
                scenario=options.scenario, seed=options.seed, admin_token=self.fleet.token
            )
        # --scenario quality: each model's calibration map, as a profile built
        # from its labelled held-out scores would hold it (CBPE before labels).
        self.calibrations: dict[str, Calibration] = {}
        if self.monitor_spec.quality is not None:
            for role, serving in (("stable", stable), ("canary", candidate)):
                scores, labels = labelled_scores(serving.model, seed=options.seed + 1)
                found = calibration(pd.Series(labels), pd.Series(scores))
                if found is not None:
                    self.calibrations[role] = found

    async def __aenter__(self) -> DemoRun:
        await self.fleet.__aenter__()
        router = LocalSidecarRouter(
            stable_admins=[self.fleet.stable.admin_url],
            canary_url=self.fleet.canary.proxy_url,
            token=self.fleet.token,
            session=self.fleet.session,
        )
        self.targets = [_target(self.fleet, "stable"), _target(self.fleet, "canary")]
        self.loop = RolloutLoop(
            workloads=FleetWorkloads(self.fleet, router),
            record=self._record,
            namespace=DEMO_TARGET.namespace,
            name=DEMO_TARGET.monitor,
            admin_token=self.fleet.token,
            logger=logging.getLogger("driftline.demo"),
        )
        if self.explanations is not None:
            await self.explanations.warm_up(self.monitor_spec, self.targets, now=time.time())
        self.traffic.start()
        if self.monitor_spec.quality is not None:
            self._labeller = asyncio.create_task(self._send_labels())
        self.started = time.time()
        return self

    async def _send_labels(self) -> None:
        """Ground truth, late: every second the labels of the answers older
        than LABEL_DELAY_SECONDS go to both sidecars (each joins its own; fanout:
        neither counts the other's ids unknown)."""
        headers = {"authorization": f"Bearer {self.fleet.token}"}
        while True:
            await asyncio.sleep(1.0)
            due = self.traffic.labels_due(older_than=time.monotonic() - LABEL_DELAY_SECONDS)
            if not due:
                continue
            for pod in (self.fleet.stable, self.fleet.canary):
                url = f"{pod.admin_url}/v1/feedback"
                try:
                    async with self.fleet.session.post(
                        url, json={"labels": due}, headers=headers, params={"fanout": "true"}
                    ) as response:
                        if response.status == 200:
                            self.labels_joined += (await response.json())["joined"]
                except aiohttp.ClientError:
                    pass  # a sidecar restarting: these labels are lost, as a client's would be

    async def __aexit__(self, *exc: object) -> None:
        if self._labeller is not None:
            self._labeller.cancel()
            await asyncio.gather(self._labeller, return_exceptions=True)
        await self.traffic.stop()
        if self.explanations is not None:
            self.explanations.close()
        await self.source.close()
        await self.fleet.close()

    async def _record(self, fields: Mapping[str, Any]) -> None:
        self.monitor["status"].update(fields)  # as the operator patches status

    async def tick(self) -> Tick:
        """The next tick, at its scheduled time. The tick's clock is the
        schedule, so a tick that runs late does not shorten the next step."""
        assert self.loop is not None, "use DemoRun with async with"
        scheduled = self.started + self._ticks * self.interval
        await asyncio.sleep(max(0.0, scheduled - time.time()))
        self._ticks += 1
        collection = await self.source.collect(self.targets, now=scheduled)
        windows = self.tracker.advance(collection)
        before = self.state
        explained = None
        if self.explanations is not None:
            explained = self.explanations.poll(self.monitor_spec, self.targets, now=scheduled)
        outcome = await self.loop.tick(
            spec=self.monitor_spec,
            monitor=self.monitor,
            pods=[],
            windows=windows,
            now=scheduled,
            attributions=explained.paired if explained is not None else None,
        )
        self.monitor["status"].update(outcome.status)  # as the operator patches status
        return Tick(
            now=scheduled,
            before=before,
            state=self.state,
            decision=outcome.decision,
            stable=windows.roles.get("stable"),
            canary=windows.roles.get("canary"),
            verdict=outcome.verdict,
            stable_is_last_full_window=outcome.baseline_substituted,
            unreachable={**collection.unreachable, **windows.skipped},
            problems=[e.message for e in outcome.events if e.type == "Warning"]
            + _explanation_problems(explained),
            estimated=self._estimates(windows),
        )

    def _estimates(self, windows: Any) -> dict[str, float]:
        found = {}
        for role, calibration_map in self.calibrations.items():
            window = windows.roles.get(role)
            if window is None or window.counts.score is None:
                continue
            estimate = estimated_accuracy(calibration_map, window.counts.score)
            if estimate.accuracy is not None and estimate.predictions:
                found[role] = estimate.accuracy
        return found

    @property
    def state(self) -> RolloutState:
        return state_of(self.monitor)

    @property
    def finished(self) -> bool:
        return self.state.phase in ("Succeeded", "Failed")


async def run(options: Options, *, out: TextIO, quiet: bool = False) -> bool:
    """The whole demo; True when the outcome is the scenario's expected one."""
    workdir = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    async with DemoRun(options, workdir=workdir) as demo:
        spec, steps = demo.spec, len(demo.spec.steps)
        if not quiet:
            print(
                report.header(
                    scenario=options.scenario,
                    fleet=demo.fleet,
                    spec=spec,
                    slos=SLOS,
                    rps=options.rps,
                ),
                file=out,
                flush=True,
            )
        while not demo.finished:
            t = await demo.tick()
            if not quiet:
                print(
                    report.tick(demo._ticks - 1, t, started=demo.started, steps=steps),
                    file=out,
                    flush=True,
                )
        state = demo.state
        routing = await demo.fleet.routing()
        elapsed = time.time() - demo.started
        explanations = demo.explanations
    promoted = state.phase == "Succeeded"
    expected = options.scenario == "healthy"
    outcome = "promoted" if promoted else "rolled back"
    verdict = "as expected" if promoted == expected else "NOT the expected outcome"
    print(
        f"\nOutcome: {outcome} ({verdict} for scenario {options.scenario}) after {elapsed:.0f}s; "
        f"{report.PROMOTION_MEANS if promoted else report.ROLLBACK_MEANS}.\n"
        f"  last decision: {state.decision or '-'}\n"
        f"  stable sidecar routing now (GET /v1/config): canary_weight "
        f"{routing.get('canary_weight', 0.0):g}\n"
        f"  clients saw: {_outcomes(demo.traffic.outcomes)}",
        file=out,
        flush=True,
    )
    if explanations is not None:
        print(report.attributions(explanations.paired, MAX_ATTRIBUTION_DISTANCE), file=out)
    return promoted == expected


def _target(fleet: Fleet, role: str) -> PodTarget:
    pod = fleet.stable if role == "stable" else fleet.canary
    host, port = pod.admin_url.removeprefix("http://").rsplit(":", 1)
    model_port = int(pod.model_url.rsplit(":", 1)[1])  # where explanations ask the model
    return PodTarget(
        name=f"demo-{role}", ip=host, admin_port=int(port), role=role, model_port=model_port
    )


def _explanation_problems(explained: ExplainOutcome | None) -> list[str]:
    found = explained.condition if explained is not None else None
    if found is None or found.status != "False" or found.reason == "Waiting":
        return []
    return [f"explanations unavailable, {found.reason}: {found.message}"]


def _outcomes(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{n} x {what}" for what, n in sorted(outcomes.items())) or "nothing"


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(
        prog="driftline demo",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="driftline demo --serve [--help]: one model behind its sidecar, left running.",
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="healthy")
    parser.add_argument("--interval", default="10s", help="how long each step is held (10s)")
    parser.add_argument("--steps", default="10,25,50,100", help="canary weights in percent")
    parser.add_argument("--failure-limit", type=int, default=2)
    parser.add_argument(
        "--progress-deadline", help="default: five intervals (ten for healthy and reliance)"
    )
    parser.add_argument("--rps", type=float, default=100.0, help="client requests per second")
    parser.add_argument("--seed", type=int, default=1, help="training data and traffic seed")
    parser.add_argument("--quiet", action="store_true", help="print the outcome only")
    args = parser.parse_args(argv)
    try:
        steps = tuple(int(s) for s in args.steps.split(","))
    except ValueError:
        parser.error(f"--steps {args.steps!r}: expected weights such as 10,25,50,100")
    if args.rps <= 0:
        parser.error(f"--rps {args.rps:g}: expected a positive request rate")
    for flag, value in (
        ("--interval", args.interval),
        ("--progress-deadline", args.progress_deadline),
    ):
        try:
            if value is not None:
                parse_duration(value)
        except ValueError as error:
            parser.error(f"{flag}: {error}")
    options = Options(
        scenario=args.scenario,
        interval=args.interval,
        steps=steps,
        failure_limit=args.failure_limit,
        progress_deadline=args.progress_deadline,
        rps=args.rps,
        seed=args.seed,
    )
    try:
        rollout_spec(options)
    except (ValidationError, ValueError) as error:
        parser.error(_spec_problem(error))
    return options, args.quiet


_FLAGS = {
    "steps": "--steps",
    "interval": "--interval",
    "failureLimit": "--failure-limit",
    "progressDeadline": "--progress-deadline",
}


def _spec_problem(error: Exception) -> str:
    if not isinstance(error, ValidationError):
        return str(error)
    problems = []
    for e in error.errors():
        loc = [str(part) for part in e["loc"] if part != "rollout"]
        where = _FLAGS.get(loc[0], "") if loc else ""
        problems.append(f"{where + ': ' if where else ''}{e['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def main(argv: Sequence[str] | None = None) -> int:
    options, quiet = parse_args(argv)
    try:
        ok = asyncio.run(run(options, out=sys.stdout, quiet=quiet))
    except KeyboardInterrupt:
        print("driftline demo: interrupted", file=sys.stderr)
        return 130
    except (FleetError, RouterError) as error:
        print(f"driftline demo: {error}", file=sys.stderr)
        return 1
    return 0 if ok else 1
