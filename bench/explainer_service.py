"""What sending explanations to the explainer Deployment costs, against the
operator's own worker processes.

Run: ``.venv/bin/python bench/explainer_service.py`` (about a minute;
``--explanations`` sets the job's rows).

The model and the explainer's settings are bench/explain.py's (a 30-feature
gradient-boosted classifier behind the demo model server, PermutationExplainer,
10 background rows, 2 permutations). The same job (same rows, same
background, a fresh explainer each side) runs once through ``ExplanationPool``
with its local worker process (the baseline) and once through a
``driftline-explainer`` process over loopback HTTP (``RemoteRunner``), each
after a warm-up job. Printed: explanations per second of wall time for both
and their ratio; the CPU the operator's side spends handing the job over
(pickled to a worker, or JSON over HTTP) and the explainer server's own
process (parsing and answering; shap runs in its worker); the bytes of the
job and its answer on the wire.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
from explain import (
    BACKGROUND,
    COLUMNS,
    PATH,
    PERMUTATIONS,
    PREDICTION,
    cpu_seconds,
    free_port,
    live_data,
    serve,
    train,
    wait,
)

from driftline_operator.explain.remote import RESULT, JobRequest, RemoteRunner
from driftline_operator.explain.worker import ExplanationPool, Job, JobResult, ProcessRunner, Runner


def job(url: str, rows: np.ndarray, background: np.ndarray) -> Job:
    return Job(
        url=url + PATH,
        protocol="kserve-v1",
        columns=COLUMNS,
        prediction=PREDICTION,
        background=background,
        rows=rows.tolist(),
        permutations=PERMUTATIONS,
    )


async def timed(runner: Runner, warm: Job, measured: Job) -> tuple[float, float, JobResult]:
    """Wall seconds and this process's CPU seconds for ``measured``, after ``warm``."""
    pool = ExplanationPool(runner=runner, operator_per_minute=1e9)
    try:
        await pool.explain_all(warm)  # shap and numba start in the worker
        wall, cpu = time.perf_counter(), time.process_time()
        result = await pool.explain_all(measured)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        pool.close()
    if result.failure is not None:
        raise SystemExit(f"{result.failure}: {result.message}")
    return wall, cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--explanations", type=int, default=30)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        joblib.dump(train(rng, hide=5), Path(tmp) / "model.joblib")
        model, url = serve(Path(tmp) / "model.joblib")
        port = free_port()
        explainer = subprocess.Popen(
            [str(Path(sys.executable).parent / "driftline-explainer"), "--host", "127.0.0.1",
             "--port", str(port), "--processes", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait(f"http://127.0.0.1:{port}/healthz", explainer)
            background = live_data(rng, BACKGROUND)[0]
            rows = live_data(rng, args.explanations)[0]
            warm, measured = job(url, rows[:2], background), job(url, rows, background)
            local_wall, local_cpu, local = asyncio.run(timed(ProcessRunner(1), warm, measured))
            server_cpu = cpu_seconds(explainer.pid)
            remote_wall, remote_cpu, remote = asyncio.run(
                timed(RemoteRunner(f"http://127.0.0.1:{port}"), warm, measured)
            )
            server_cpu = cpu_seconds(explainer.pid) - server_cpu
        finally:
            for process in (explainer, model):
                process.terminate()
                process.wait(timeout=30)
    n = remote.explained
    sent = len(JobRequest.of(measured).model_dump_json())
    answer = len(RESULT.dump_json(remote))
    same = np.allclose(local.values, remote.values, rtol=0, atol=1e-12)
    print(f"{n} explanations per job (30 features, {BACKGROUND} background rows, "
          f"{PERMUTATIONS} permutations); the same attributions both ways: {same}")  # fmt: skip
    print(f"local worker process : {local.explained / local_wall:6.1f} explanations/s (baseline)")
    print(f"explainer over HTTP  : {n / remote_wall:6.1f} explanations/s "
          f"(wall ratio to baseline {local_wall / remote_wall:.2f})")  # fmt: skip
    print(f"operator's CPU per job: local {local_cpu * 1000:.1f} ms, "
          f"explainer {remote_cpu * 1000:.1f} ms")  # fmt: skip
    print(f"explainer server's own process: {server_cpu * 1000 / n:.2f} ms CPU per explanation")
    print(f"on the wire: job {sent / 1024:.1f} KiB, answer {answer / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
