"""Rollout benchmark: time to roll back a failing canary, and false rollbacks.

    .venv/bin/python bench/rollout.py [--fail-runs 6] [--runs 20] [--quick]

Runs the demo's real rollout (`driftline_operator.demo.story.DemoRun`: two
model servers, each behind a real sidecar, client traffic through the stable
sidecar, the operator's collect / compare / decide loop, the sidecar router
pushing weights over the admin API) and measures, for issue 5's targets
(interval 10s, failureLimit 2, sidecar router):

1. time to rollback: a healthy canary is broken at a random instant inside
   its first step (its model server's ``POST /control``: errors or added
   latency, alternating between runs); measured from just before that call
   to the moment the stable sidecar's ``GET /v1/config`` says canary_weight
   0. Each run and the median; target: within 30 s.
2. false rollbacks: ``--runs`` rollouts of a healthy canary (retrained on
   fresh data each run, its own traffic seed), walked to the end; prints each
   run's steps and outcome, and rollbacks/runs.

Each run starts its own processes, so runs are independent.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from driftline_operator.cli.demo.story import DemoRun, Options
from driftline_operator.cli.demo.training import BAD_ERROR_RATE, BAD_LATENCY_MS

TARGET_SECONDS = 30.0


@dataclass(frozen=True)
class FailRun:
    fault: str
    broke_at: float  # seconds into the rollout
    seconds: float | None  # breaking to weight 0 confirmed; None: never rolled back
    decisions: list[str]


@dataclass(frozen=True)
class HealthyRun:
    seed: int
    promoted: bool
    weights: list[float]  # the weights the rollout held, in order
    seconds: float
    last: str


async def fail_run(options: Options, *, fault: str, rng: random.Random) -> FailRun:
    workdir = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    async with DemoRun(options, workdir=workdir) as demo:
        interval = demo.interval
        offset = interval * rng.uniform(0.05, 0.95)  # inside step 1 (tick 0 starts it)
        broke: list[float] = []

        async def break_canary() -> None:
            await asyncio.sleep(max(0.0, demo.started + offset - time.time()))
            broke.append(time.time())  # before the call: the figure can only grow
            if fault == "errors":
                await demo.fleet.set_faults(error_rate=BAD_ERROR_RATE)
            else:
                await demo.fleet.set_faults(latency_ms=BAD_LATENCY_MS)

        breaker = asyncio.create_task(break_canary())
        decisions = []
        while not demo.finished:
            tick = await demo.tick()
            if tick.decision.event is not None:
                decisions.append(f"{tick.now - demo.started:.0f}s {tick.decision.event.reason}")
        await breaker
        rolled_back = demo.loop is not None and demo.loop.state.phase == "Failed"
        routing = await demo.fleet.routing()  # the stable sidecar, as it runs now
        done = time.time()
        seconds = done - broke[0] if rolled_back and routing.get("canary_weight") == 0 else None
    return FailRun(fault, broke[0] - demo.started, seconds, decisions)


async def healthy_run(options: Options) -> HealthyRun:
    workdir = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    async with DemoRun(options, workdir=workdir) as demo:
        weights: list[float] = []
        while not demo.finished:
            tick = await demo.tick()
            if tick.before.phase == "Progressing" and tick.before.weight not in weights:
                weights.append(tick.before.weight)
        state = demo.loop.state if demo.loop else None
        seconds = time.time() - demo.started
    promoted = state is not None and state.phase == "Succeeded"
    last = (state.decision or "") if state else ""
    return HealthyRun(options.seed, promoted, weights, seconds, last)


async def bench(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    steps = tuple(int(s) for s in args.steps.split(","))
    fail_options = Options(interval=args.interval, steps=steps, failure_limit=2, rps=args.rps)
    print(
        f"1. time to rollback: interval {args.interval}, failureLimit 2, sidecar router, "
        f"steps {args.steps}, {args.rps:g} req/s; canary broken inside step 1 "
        f"(errors: {BAD_ERROR_RATE:.0%} HTTP 500, latency: +{BAD_LATENCY_MS:g} ms)",
        flush=True,
    )
    fails = []
    for i in range(args.fail_runs):
        fault = ("errors", "latency")[i % 2]
        options = Options(**{**fail_options.__dict__, "seed": args.seed + i})
        run = await fail_run(options, fault=fault, rng=rng)
        fails.append(run)
        took = f"{run.seconds:5.1f} s" if run.seconds is not None else "NOT rolled back"
        print(
            f"   run {i + 1}: {fault:<7} broke at {run.broke_at:4.1f}s -> weight 0 in {took}"
            f"   ({', '.join(run.decisions)})",
            flush=True,
        )
    measured = [r.seconds for r in fails if r.seconds is not None]
    if measured:
        median = statistics.median(measured)
        print(
            f"   median {median:.1f} s, max {max(measured):.1f} s over {len(measured)} runs "
            f"(target: within {TARGET_SECONDS:g} s); not rolled back: "
            f"{len(fails) - len(measured)}/{len(fails)}",
            flush=True,
        )

    healthy_steps = tuple(int(s) for s in args.healthy_steps.split(","))
    print(
        f"\n2. false rollbacks: {args.runs} healthy canaries (retrained on fresh data, own "
        f"traffic seed), interval {args.interval}, failureLimit 2, {args.rps:g} req/s, steps "
        f"{args.healthy_steps} (shortened from the default 10,25,50,100 to keep the bench "
        "short: each run analyses one window per step)",
        flush=True,
    )
    rollbacks = 0
    for i in range(args.runs):
        options = Options(
            interval=args.interval,
            steps=healthy_steps,
            failure_limit=2,
            rps=args.rps,
            seed=args.seed + 1000 + i,
        )
        run = await healthy_run(options)
        rollbacks += not run.promoted
        outcome = "promoted" if run.promoted else f"ROLLED BACK: {run.last}"
        walked = ",".join(f"{w:g}" for w in run.weights)
        print(f"   run {i + 1:2}: steps {walked:<12} {outcome} ({run.seconds:.0f} s)", flush=True)
    print(f"   false rollbacks: {rollbacks}/{args.runs}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", default="10s")
    parser.add_argument("--steps", default="10,25,50,100", help="steps of the failing runs")
    parser.add_argument("--healthy-steps", default="50,100", help="steps of the healthy runs")
    parser.add_argument("--fail-runs", type=int, default=6, help="failing canaries (default 6)")
    parser.add_argument("--runs", type=int, default=20, help="healthy canaries (default 20)")
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 failing and 3 healthy runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.fail_runs, args.runs = 2, 3
    started = time.time()
    asyncio.run(bench(args))
    print(f"\n(bench took {time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
