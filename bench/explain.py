"""What explanations cost, and how soon a change of reliance is seen.

Run: ``.venv/bin/python bench/explain.py`` (about 4 minutes; ``--windows``
and ``--window-seconds`` shorten it).

A 30-feature gradient-boosted classifier (scikit-learn) served by the demo
model server (``--sklearn``), explained as a black box through KServe v1 with
PermutationExplainer (independent masker, 10 background rows, 2
permutations: 122 evaluations, ~1,200 rows per request). Printed:

1. explanations per second per core: explanations per CPU second of the
   explainer process, and per CPU second of explainer plus model server
   (``/proc/<pid>/stat``); the baseline, measured in the same run, is the
   same shap explainer calling the estimator in-process (no protocol, no
   HTTP). Target: >= 10 per second per core.
2. requests and rows the model received per explanation (counted by the
   model server). Target: <= 1 extra request per explanation.
3. the operator's CPU per interval with explanations on: the operator's own
   process (it only awaits the worker) and the worker process, per window.
4. time to flagged attribution drift: 100 req/s through a real sidecar (its
   reservoir: 64 rows per window), each window's sample explained in a
   worker process (25 rows) and judged against the reference attributions
   (the training sample explained once; total variation > 0.15). After
   ``--windows`` unchanged windows the model behind the explainer is
   replaced by one that reaches the same accuracy by leaning on another
   feature (a copy of the first that is almost equal on live data). Targets:
   flagged within 3 windows of the change; no flag over 20 unchanged windows.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import yaml
from sklearn.ensemble import GradientBoostingClassifier

from driftline_operator.explain.background import Columns
from driftline_operator.explain.explainer import Explainer
from driftline_operator.explain.model import BlackBoxModel
from driftline_operator.explain.worker import ExplanationPool, Job
from driftline_operator.stats.attribution import AttributionReference, attribution_drift
from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig

N_FEATURES = 30
BACKGROUND = 10
PERMUTATIONS = 2
THRESHOLD = 0.15
MIN_EXPLANATIONS = 20
PER_WINDOW = 25
TOKEN = "bench-explain"
FEATURES = [FeatureConfig(name=f"f{i}") for i in range(N_FEATURES)]
COLUMNS = Columns(features=FEATURES, explained=list(range(N_FEATURES)))
PREDICTION = PredictionConfig(score="1")
PATH = "/v1/models/m:predict"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_data(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """f5 is an almost exact copy of f0 on live data; the label follows f0."""
    x = rng.normal(size=(rows, N_FEATURES))
    x[:, 5] = x[:, 0] + 0.05 * rng.normal(size=rows)
    logit = 2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.7 * x[:, 2] * x[:, 3] + 0.5 * x[:, 4]
    return x, (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)


def train(rng: np.random.Generator, *, hide: int) -> GradientBoostingClassifier:
    """Trained with column ``hide`` replaced by noise: it leans on the other copy."""
    x, y = live_data(rng, 4000)
    x[:, hide] = rng.normal(size=len(x))
    return GradientBoostingClassifier(n_estimators=80, max_depth=3, random_state=0).fit(x, y)


def serve(path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "driftline_operator.cli.demo.model_server", "--port", str(port),
         "--sklearn", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait(url + "/healthz", process)
    return process, url


def wait(url: str, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited early")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {timeout:g} s")


def predict_requests(url: str) -> int:
    return int(
        json.loads(urllib.request.urlopen(url + "/control", timeout=10).read())["predict_requests"]
    )


def throughput(
    model_a: GradientBoostingClassifier,
    url: str,
    pid: int,
    rows: np.ndarray,
    background: np.ndarray,
    n: int,
) -> None:
    import shap

    direct = shap.PermutationExplainer(
        lambda m: model_a.predict_proba(m)[:, 1],
        shap.maskers.Independent(background, max_samples=BACKGROUND),
        seed=0,
    )
    evals = PERMUTATIONS * (2 * N_FEATURES + 1)
    direct(rows[:2], max_evals=evals, silent=True)  # warm up (numba)
    cpu = time.process_time()
    direct(rows[:n], max_evals=evals, silent=True)
    baseline = n / (time.process_time() - cpu)

    with BlackBoxModel(
        url=url + PATH, protocol="kserve-v1", columns=COLUMNS, prediction=PREDICTION
    ) as model:
        explainer = Explainer(model, background, permutations=PERMUTATIONS)
        explainer.explain(rows[:2])  # warm up
        served, sent = predict_requests(url), model.rows_sent
        cpu, model_cpu, wall = time.process_time(), cpu_seconds(pid), time.perf_counter()
        explanations = explainer.explain(rows[:n])
        wall = time.perf_counter() - wall
        own = time.process_time() - cpu
        model_cpu = cpu_seconds(pid) - model_cpu
        requests = predict_requests(url) - served
        rows_sent = model.rows_sent - sent
    worst = max(e.additivity_error for e in explanations)
    print(
        f"1. explanations/s/core (30 features, {evals} evaluations x {BACKGROUND} background rows)"
    )
    print(f"   black box, explainer CPU only : {n / own:7.1f}  (target >= 10)")
    print(f"   black box, explainer + model  : {n / (own + model_cpu):7.1f}")
    print(
        f"   baseline, shap calling the estimator in-process: {baseline:7.1f}  "
        f"(black box / baseline = {n / own / baseline:.2f})"
    )
    print(f"   wall: {n / wall:.1f} explanations/s; worst additivity error {worst:.1e}")
    print(
        f"2. model requests per explanation: {requests / n:.2f} (target <= 1); "
        f"rows per explanation: {rows_sent / n:.0f}"
    )


SENDERS = 8  # connections, each one request at a time: the rate holds while the proxy is slow


def traffic(url: str, rate: float, seed: int, sent: Any) -> None:
    """One-row KServe requests at a fixed rate through the sidecar's proxy port,
    over ``SENDERS`` connections (in a process of its own, so the operator's
    CPU figures hold only its own)."""
    threads = [
        threading.Thread(target=_send, args=(url, rate / SENDERS, seed + i, sent), daemon=True)
        for i in range(SENDERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _send(url: str, rate: float, seed: int, sent: Any) -> None:
    import http.client

    rng = np.random.default_rng(seed)
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    start, mine = time.perf_counter(), 0
    while True:
        x, _ = live_data(rng, 1)
        connection.request("POST", PATH, body=json.dumps({"instances": x.tolist()}),
                           headers={"content-type": "application/json"})  # fmt: skip
        connection.getresponse().read()
        mine += 1
        with sent.get_lock():
            sent.value += 1
        delay = start + mine / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def sidecar(
    workdir: Path, upstream: str, window: float
) -> tuple[subprocess.Popen[bytes], str, str]:
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = {
        "model": {"name": "m", "protocol": "kserve-v1", "prediction": {"score": "1"},
                  "features": [{"name": f.name, "bins": [0.0]} for f in FEATURES]},
        "upstream": upstream, "listen": listen, "admin": admin,
        "admin_token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
        "prediction_log": {"enabled": False},
        "reservoir": {"size": 64, "window_seconds": window},
    }  # fmt: skip
    path = workdir / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "driftline_sidecar.main", "--config", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait(f"http://{admin}/healthz", process)
    return process, f"http://{listen}", f"http://{admin}"


def reservoir(admin: str) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(
        admin + "/v1/reservoir", headers={"authorization": f"Bearer {TOKEN}"}
    )
    return json.loads(urllib.request.urlopen(request, timeout=10).read())  # type: ignore[no-any-return]


async def drift(
    args: argparse.Namespace,
    urls: tuple[str, str],
    background: np.ndarray,
    reference_rows: np.ndarray,
    workdir: Path,
) -> None:
    pool = ExplanationPool(processes=1, operator_per_minute=10_000)
    budget = PER_WINDOW * 60 / args.window_seconds

    def job(url: str, rows: list[list[float]]) -> Job:
        return Job(url=url + PATH, protocol="kserve-v1", columns=COLUMNS, prediction=PREDICTION,
                   background=background, rows=rows, permutations=PERMUTATIONS)  # fmt: skip

    first = await pool.explain("reference", job(urls[0], reference_rows.tolist()), per_minute=10**6)
    reference = AttributionReference.from_values(COLUMNS.names, np.asarray(first.values))
    worker = next(iter(pool._runner._executor._processes))  # type: ignore[attr-defined]
    side, proxy, admin = sidecar(workdir, urls[0], args.window_seconds)
    context = multiprocessing.get_context("spawn")
    sent = context.Value("l", 0)
    sender = context.Process(target=traffic, args=(proxy, args.rps, 3, sent), daemon=True)
    sender.start()
    while True:  # the sender process is starting: count windows from its first rows
        current = (await asyncio.to_thread(reservoir, admin))["current"]
        if current["seen"]:
            break
        await asyncio.sleep(0.2)
    last_start = current["start"] - 1  # that window, once closed, is the first one judged
    started, first_sent = time.monotonic(), sent.value
    flags_before, seen_after = 0, None
    operator_cpu, worker_cpu = [], []
    print(
        f"4. attribution drift, 100 req/s, windows of {args.window_seconds:g} s, "
        f"{PER_WINDOW} explanations each, threshold {THRESHOLD}"
    )
    try:
        for window in range(args.windows + 3):
            changed = window >= args.windows
            while True:  # the next closed window
                document = await asyncio.to_thread(reservoir, admin)
                previous = document["previous"]
                if previous is not None and previous["start"] != last_start:
                    break
                await asyncio.sleep(0.2)
            last_start = previous["start"]
            cpu, wcpu = time.process_time(), cpu_seconds(worker)
            result = await pool.explain(
                "bench",
                job(urls[1] if changed else urls[0], previous["rows"][:PER_WINDOW]),
                per_minute=budget,
            )
            operator_cpu.append(time.process_time() - cpu)
            worker_cpu.append(cpu_seconds(worker) - wcpu)
            counts = reference.empty()
            if result.values:
                counts.add(np.asarray(result.values))
            verdict = attribution_drift(
                reference, counts, threshold=THRESHOLD, min_explanations=MIN_EXPLANATIONS
            )
            mark = "after the change" if changed else "unchanged"
            print(
                f"   window {window + 1:2d} ({mark:16s}): rows seen {previous['seen']:4d}, explained "
                f"{result.explained:2d}, distance {verdict.distance if verdict.distance is not None else float('nan'):.3f}, "
                f"top {','.join(verdict.top_current)} -> {verdict.verdict}"
            )
            if result.failure:
                print(f"      failure: {result.failure}: {result.message}")
            if verdict.verdict == "drifted":
                if changed and seen_after is None:
                    seen_after = window - args.windows + 1
                elif not changed:
                    flags_before += 1
            if changed and seen_after is not None:
                break
    finally:
        sender.terminate()
        side.terminate()
        pool.close()
    print(f"   flags over {args.windows} unchanged windows: {flags_before} (target 0)")
    print(
        f"   flagged in window {seen_after} after the change (target <= 3)"
        if seen_after
        else "   NOT flagged within 3 windows of the change"
    )
    elapsed = time.monotonic() - started
    print(
        f"   traffic: {sent.value - first_sent} requests in {elapsed:.0f} s "
        f"({(sent.value - first_sent) / elapsed:.0f} req/s)"
    )
    print(
        f"3. operator CPU per window with explanations on: own process "
        f"{1000 * np.median(operator_cpu):.1f} ms (median), worker process "
        f"{1000 * np.median(worker_cpu):.0f} ms (median) for {PER_WINDOW} explanations"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--explanations", type=int, default=30)
    parser.add_argument(
        "--windows", type=int, default=20, help="unchanged windows before the change"
    )
    parser.add_argument("--window-seconds", type=float, default=5.0)
    parser.add_argument("--rps", type=float, default=100.0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_a, model_b = train(rng, hide=5), train(rng, hide=0)
        x, y = live_data(rng, 2000)
        print(
            f"models: accuracy on live data {np.mean(model_a.predict(x) == y):.3f} (stable, leans on f0), "
            f"{np.mean(model_b.predict(x) == y):.3f} (candidate, leans on f5)"
        )
        joblib.dump(model_a, workdir / "a.joblib")
        joblib.dump(model_b, workdir / "b.joblib")
        (server_a, url_a), (server_b, url_b) = (
            serve(workdir / "a.joblib"),
            serve(workdir / "b.joblib"),
        )
        try:
            background = x[:BACKGROUND]
            throughput(model_a, url_a, server_a.pid, x[100:], background, args.explanations)
            asyncio.run(drift(args, (url_a, url_b), background, x[1000:1100], workdir))
        finally:
            server_a.terminate()
            server_b.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
