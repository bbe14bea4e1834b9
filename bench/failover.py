"""Failover benchmark: how long analysis stops when the leading operator goes.

    .venv/bin/python bench/failover.py [--runs 3] [--lease 15,10,2] [--lease 5,4,1]

Starts the shared control plane (../shared/k8s, as the integration tests do),
runs two real `driftline-operator` processes coordinated by a Lease, and a
ModelMonitor analysed every second. Each run takes the leader away, by
SIGKILL (a crash, a lost node) or SIGTERM (a rollout, a drain), then starts a
replacement standby so that the next run again has two. Per run:

- takeover: from the signal to the new leader's `acquireTime` in the Lease
  (written by the new leader's clock; same machine);
- analysing again: from the signal to the first `status.lastAnalysisTime`
  (the tick's own time) at or after that acquisition;
- webhook: AdmissionReviews sent to the surviving replica every 0.2 s from the
  signal until analysis resumed, and how many injected the sidecar.

Each timing set (`--lease duration,renewDeadline,retryPeriod`, seconds) is
measured separately; the default set is the chart's (client-go's) defaults.
The figures are the median and the worst of the runs, next to the bound the
design gives: SIGKILL within duration + retryPeriod (plus starting the acting
operator), SIGTERM within retryPeriod (plus the same).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from _harness import (  # the integration tests' harness, beside them
    Replicas,
    control_plane_problem,
    create_monitor,
    get_monitor,
    injects_sidecar,
    monitor,
    namespace_on,
    started_control_plane,
    wait_for,
    wait_for_ready,
)
from kubernetes.client import CoreV1Api

NAMESPACE = "bench-failover"
MONITOR = "fraud"
SPEC = {
    "selector": {"matchLabels": {"app": "fraud"}},
    "model": {
        "name": "fraud",
        "port": "http",
        "protocol": "json",
        "features": [{"name": "amount"}],
    },
    "analysis": {"interval": "1s"},
}


@dataclass(frozen=True)
class Timing:
    duration: int
    renew_deadline: int
    retry_period: int

    @classmethod
    def parse(cls, text: str) -> Timing:
        duration, deadline, retry = (int(part) for part in text.split(","))
        return cls(duration, deadline, retry)

    def env(self) -> dict[str, str]:
        return {
            "DRIFTLINE_LEASE_DURATION_SECONDS": str(self.duration),
            "DRIFTLINE_LEASE_RENEW_DEADLINE_SECONDS": str(self.renew_deadline),
            "DRIFTLINE_LEASE_RETRY_PERIOD_SECONDS": str(self.retry_period),
        }

    def __str__(self) -> str:
        return f"lease {self.duration}s, renew deadline {self.renew_deadline}s, retry {self.retry_period}s"


@dataclass(frozen=True)
class Run:
    how: str  # SIGKILL | SIGTERM
    takeover: float  # seconds from the signal to the new leader's acquireTime
    analysing: float  # seconds from the signal to the first analysis after it
    injected: int
    reviews: int


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Prober(threading.Thread):
    """Sends AdmissionReviews to one replica until stopped; counts injections."""

    def __init__(self, replicas: Replicas, name: str) -> None:
        super().__init__(daemon=True)
        self._operator = replicas.running[name]
        self._namespace = replicas.server.namespace
        self._done = threading.Event()
        self.reviews = self.injected = 0

    def run(self) -> None:
        while not self._done.is_set():
            self.reviews += 1
            with contextlib.suppress(Exception):
                self.injected += injects_sidecar(self._operator, self._namespace)
            self._done.wait(0.2)

    def stop(self) -> None:
        self._done.set()
        self.join()


def disrupt(replicas: Replicas, how: signal.Signals, spare: str) -> Run:
    """Take the leader away with `how`; measure; start `spare` as the next standby."""
    leader = replicas.leader()
    (survivor,) = set(replicas.running) - {leader}
    wait_for("an analysis by the leader", lambda: _analysed_after(replicas, time.time() - 1.5))
    # The standby started after the previous run may still be opening its port:
    # a refusal then would be the bench's, not the failover's.
    wait_for(f"{survivor}'s webhook", lambda: _injects(replicas, survivor))
    prober = Prober(replicas, survivor)
    process = replicas.running[leader].process
    signalled = time.time()
    prober.start()
    process.send_signal(how)
    try:
        acquired = wait_for(
            f"{survivor} to hold the Lease",
            lambda: replicas.holder() == survivor and _stamp(replicas.lease()["acquireTime"]),
            deadline=120,
        )
        analysed = wait_for(
            "an analysis by the new leader", lambda: _analysed_after(replicas, acquired)
        )
    finally:
        prober.stop()
    process.wait(timeout=60)
    del replicas.running[leader]
    replicas.start(spare)
    return Run(
        how=how.name,
        takeover=acquired - signalled,
        analysing=analysed - signalled,
        injected=prober.injected,
        reviews=prober.reviews,
    )


def _injects(replicas: Replicas, name: str) -> bool:
    try:
        return injects_sidecar(replicas.running[name], replicas.server.namespace)
    except OSError:  # not listening yet
        return False


def _analysed_after(replicas: Replicas, moment: float) -> float | None:
    body = get_monitor(replicas.api, replicas.server.namespace, MONITOR) or {}
    stamp = (body.get("status") or {}).get("lastAnalysisTime")
    return _stamp(stamp) if stamp and _stamp(stamp) >= moment else None


def measure(
    server_factory: contextlib.AbstractContextManager, timing: Timing, runs: int
) -> list[Run]:  # type: ignore[type-arg]
    raise NotImplementedError  # replaced below


def report(timing: Timing, results: list[Run]) -> None:
    print(f"\n{timing}")
    print(f"{'signal':8} {'takeover s':>11} {'analysing s':>12} {'webhook injected':>17}")
    for run in results:
        print(
            f"{run.how:8} {run.takeover:11.2f} {run.analysing:12.2f} "
            f"{run.injected:>10}/{run.reviews:<6}"
        )
    for how, bound in (
        ("SIGKILL", timing.duration + timing.retry_period),
        ("SIGTERM", timing.retry_period),
    ):
        picked = [r for r in results if r.how == how]
        if not picked:
            continue
        takeover = [r.takeover for r in picked]
        analysing = [r.analysing for r in picked]
        print(
            f"{how}: takeover median {statistics.median(takeover):.2f}s, worst {max(takeover):.2f}s "
            f"(design bound {bound}s); analysing again median {statistics.median(analysing):.2f}s, "
            f"worst {max(analysing):.2f}s; webhook injected "
            f"{sum(r.injected for r in picked)}/{sum(r.reviews for r in picked)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per signal and timing set")
    parser.add_argument(
        "--lease",
        action="append",
        type=Timing.parse,
        metavar="D,R,P",
        help="leaseDuration,renewDeadline,retryPeriod in seconds (repeatable; default 15,10,2)",
    )
    args = parser.parse_args()
    timings: list[Timing] = args.lease or [Timing(15, 10, 2)]
    problem = control_plane_problem()
    if problem is not None:
        print(f"bench/failover.py needs the control plane: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        root = Path(tmp)
        with started_control_plane(root / "k8s") as plane:
            for number, timing in enumerate(timings):
                namespace = f"{NAMESPACE}-{number}"
                with namespace_on(plane, namespace) as server:
                    lease_namespace = f"{namespace}-system"
                    api = plane.client()
                    CoreV1Api(api).create_namespace({"metadata": {"name": lease_namespace}})
                    (root / namespace).mkdir()
                    replicas = Replicas(
                        server, root / namespace, lease_namespace=lease_namespace,
                        env=timing.env(),
                    )  # fmt: skip
                    results: list[Run] = []
                    try:
                        replicas.start("replica-0")
                        replicas.start("replica-1")
                        create_monitor(replicas.api, namespace, monitor(MONITOR, SPEC))
                        wait_for_ready(
                            replicas.api, namespace, MONITOR,
                            status="True", reason="SidecarConfigured",
                        )  # fmt: skip
                        spare = 2
                        for _ in range(args.runs):
                            for how in (signal.SIGKILL, signal.SIGTERM):
                                run = disrupt(replicas, how, f"replica-{spare}")
                                spare += 1
                                print(
                                    f"  {run.how}: takeover {run.takeover:.2f}s, analysing "
                                    f"again {run.analysing:.2f}s, webhook "
                                    f"{run.injected}/{run.reviews}",
                                    flush=True,
                                )
                                results.append(run)
                    finally:
                        replicas.close()
                        CoreV1Api(api).delete_namespace(lease_namespace)
                        api.close()
                    report(timing, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
