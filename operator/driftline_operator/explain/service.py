"""``driftline-explainer``: the explainer as a Deployment of its own.

    driftline-explainer --port 8090 --processes 2

The same jobs the operator's worker processes run (``worker.run_job``), taken
over HTTP: ``POST /v1/explain`` with a job (``remote.JobRequest``) answers its
``JobResult``; ``/metrics`` counts jobs and explanations. Jobs run in this process's own worker processes, so the event
loop keeps answering ``/healthz`` while shap works; more replicas behind the
Service explain more monitors at once. The operator keeps the budgets, so
this server needs no state beyond each worker's explainer cache.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from driftline_operator.explain.remote import EXPLAIN_PATH, RESULT, JobRequest
from driftline_operator.explain.worker import run_job

log = logging.getLogger("driftline.explainer")
EXECUTOR: web.AppKey[ProcessPoolExecutor] = web.AppKey("executor", ProcessPoolExecutor)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
MAX_BODY_BYTES = 16 * 1024 * 1024  # MAX_ROWS rows of a few dozen features, as JSON


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "driftline_explainer_jobs",
            "Explanation jobs answered, by outcome (ok, a failure reason, or BadJob).",
            ["outcome"],
            registry=self.registry,
        )
        self.explanations = Counter(
            "driftline_explainer_explanations",
            "Rows explained.",
            registry=self.registry,
        )
        self.model_requests = Counter(
            "driftline_explainer_model_requests",
            "Requests sent to models while explaining.",
            registry=self.registry,
        )


def make_app(*, processes: int) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[EXECUTOR] = ProcessPoolExecutor(
        max_workers=processes, mp_context=multiprocessing.get_context("spawn")
    )
    app[METRICS] = Metrics()
    app.router.add_post(EXPLAIN_PATH, explain)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.on_cleanup.append(_shutdown)
    return app


async def explain(request: web.Request) -> web.Response:
    counters = request.app[METRICS]
    try:
        job = JobRequest.model_validate_json(await request.read())
    except ValidationError as error:
        counters.jobs.labels("BadJob").inc()
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'job'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        return web.json_response({"error": f"bad explanation job: {problems}"}, status=422)
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(request.app[EXECUTOR], run_job, job.job())
    counters.jobs.labels(result.failure or "ok").inc()
    counters.explanations.inc(result.explained)
    counters.model_requests.inc(result.requests)
    if result.failure is not None:
        log.warning("%s: %s (%s)", job.url, result.failure, result.message)
    else:
        log.info(
            "%s: %d rows explained, %d model requests", job.url, result.explained, result.requests
        )
    return web.Response(body=RESULT.dump_json(result), content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    body = prometheus_client.generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"content-type": prometheus_client.CONTENT_TYPE_LATEST})


async def _shutdown(app: web.Application) -> None:
    await asyncio.to_thread(app[EXECUTOR].shutdown, wait=True, cancel_futures=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline-explainer",
        description="Explain the operator's jobs (SHAP) in worker processes, over HTTP.",
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--processes",
        type=int,
        default=int(os.environ.get("DRIFTLINE_EXPLAINER_PROCESSES", "1")),
        help="Worker processes (default: DRIFTLINE_EXPLAINER_PROCESSES, else 1).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not 1 <= args.processes <= 64:
        parser.error(f"--processes {args.processes}: expected 1..64")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    prometheus_client.disable_created_metrics()  # as the operator's: no *_created series
    log.info("explaining on %s:%d in %d worker processes", args.host, args.port, args.processes)
    web.run_app(
        make_app(processes=args.processes),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )
