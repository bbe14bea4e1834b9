"""The admin API on the admin port (never behind the model's Service).

Who may call what, and why:

- ``PUT /v1/config``: the operator only, with the bearer token whose SHA-256
  is ``admin_token_sha256`` (401 without a token, 403 with a wrong one, 404
  when the sidecar has no hash: writes disabled). It changes ``routing`` only
  (422 naming anything else): the upstream, the addresses, the namespace and
  the token hash are the pod's, fixed at start, so a write can neither
  redirect the model's own traffic nor lock the operator out. And routing may
  name only Services in the sidecar's namespace (``SidecarConfig.namespace``,
  written by the operator): a canary or shadow URL anywhere else is a 422
  naming the field, so the token cannot send requests (and their payloads)
  out of the monitor's namespace.
- ``/healthz``, ``/readyz``: open. The kubelet probes them and sends no
  credentials; they say only whether the model port answers.
- ``/metrics``: open. Prometheus scrapes it (a ServiceMonitor or annotations)
  without a token; it holds counts and histograms with bounded labels (model,
  version, role, feature names, bin indexes, class labels), no request data.
- ``/v1/snapshot``: open. It is ``/metrics`` read into one document (the same
  registry, ``contract.reader``); a token on it would hide nothing that
  ``/metrics`` does not already show.
- ``GET /v1/reservoir``: the monitor's bearer token, as ``PUT /v1/config``
  (404 when the sidecar has no token hash or keeps no reservoir). It holds
  request values (a uniform sample of recent rows, PII fields left out), read
  by the explainer; unlike the counts, these are the clients' data.
- ``POST /v1/feedback``: the monitor's bearer token, or the feedback token
  whose SHA-256 is ``feedback.token_sha256`` (the one a label source is
  given: it can post labels and nothing else). 404 when feedback is off. A
  batch with any bad label is refused whole (4xx naming the field), so
  nothing of it is stored; otherwise the answer counts the joined labels and
  names the ids not joined (unknown, expired, duplicate). ``?fanout=true``:
  the batch also went to the other replicas, so ids this sidecar never saw
  are named but not counted unknown (the sender resends the ids no replica
  joined to one sidecar, which counts them).
- ``GET /v1/config``: open. It holds no secret: the token appears only as its
  SHA-256 (of a 256-bit HMAC, ``controller/tokens.py``), the PII salt only as
  the name of its environment variable; the rest is in the pods' ConfigMap.
  The operator reads it before each ``PUT``.

The port listens on all the pod's addresses (``--admin 0.0.0.0:<port>``):
the operator, Prometheus and the kubelet all reach it on the pod IP from
outside the pod, so no narrower bind serves them. Narrowing who reaches it is
the network's job: a NetworkPolicy admitting the operator's and Prometheus'
pods to the admin port (README, "The sidecar's admin port").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.contract.snapshot import ProcessInfo
from driftline_sidecar.counts import take_snapshot
from driftline_sidecar.feedback import Feedback, FeedbackError
from driftline_sidecar.metrics import SidecarMetrics, render
from driftline_sidecar.reservoir import Reservoir

# The model counts as reachable if it answered a request this recently.
RECENT_ANSWER_SECONDS = 10.0


@dataclass
class AdminState:
    """What the admin API reads; ``config`` is replaced by ``PUT /v1/config``."""

    config: SidecarConfig
    metrics: SidecarMetrics
    process: ProcessInfo
    upstream_host: str
    upstream_port: int
    last_upstream_ok: Callable[[], float | None] = lambda: None
    on_config: list[Callable[[SidecarConfig], None]] = field(default_factory=list)
    reservoir: Reservoir | None = None
    feedback: Feedback | None = None


def create_admin_app(state: AdminState) -> Starlette:
    # Plain Starlette (what FastAPI is built on): seven fixed paths need no
    # OpenAPI, and FastAPI's extra modules cost the sidecar ~6 MB of RSS. The
    # synchronous endpoints run in Starlette's thread pool, as before.

    def metrics(request: Request) -> Response:
        return Response(render(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        last = state.last_upstream_ok()
        if last is not None and perf_counter() - last < RECENT_ANSWER_SECONDS:
            return JSONResponse({"status": "ready"})
        if await _reachable(state.upstream_host, state.upstream_port):
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {
                "status": "not ready",
                "reason": f"model at {state.upstream_host}:{state.upstream_port} is not reachable",
            },
            status_code=503,
        )

    def snapshot(request: Request) -> Response:
        taken = take_snapshot(state.metrics, process=state.process)
        return Response(taken.model_dump_json(), media_type="application/json")

    def reservoir(request: Request) -> Response:
        denied = _check_token(state.config.admin_token_sha256, request.headers.get("authorization"))
        if denied is not None:
            return denied
        if state.reservoir is None:
            off = "reservoir.enabled" if not state.config.reservoir.enabled else "capture.enabled"
            why = (
                " (the ModelMonitor's spec.explain.enabled is false)"
                if off == "reservoir.enabled"
                else ""
            )
            return JSONResponse(
                {"error": f"this sidecar keeps no reservoir: {off} is false{why}"},
                status_code=404,
            )
        return Response(state.reservoir.document().model_dump_json(), media_type="application/json")

    async def feedback(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        denied = _check_token(state.config.admin_token_sha256, authorization)
        label_token = state.config.feedback.token_sha256
        if denied is not None and label_token is not None:
            denied = _check_token(label_token, authorization)
        if denied is not None:
            return denied
        if state.feedback is None:
            return JSONResponse(
                {"error": "this sidecar joins no labels (feedback.enabled is false)"},
                status_code=404,
            )
        fanout = request.query_params.get("fanout", "false").lower()
        if fanout not in ("true", "false", "1", "0"):
            return JSONResponse(
                {"error": f"fanout: {fanout!r} is not true or false", "field": "fanout",
                 "problem": "expected true or false"},
                status_code=400,
            )  # fmt: skip
        try:
            ids, labels = state.feedback.parse(await request.body())
        except FeedbackError as error:
            return JSONResponse(
                {"error": str(error), "field": error.field, "problem": error.problem},
                status_code=error.status,
            )
        joined = state.feedback.join(ids, labels, fanout=fanout in ("true", "1"))
        return JSONResponse(joined.document())

    def get_config(request: Request) -> Response:
        return Response(state.config.model_dump_json(), media_type="application/json")

    async def put_config(request: Request) -> Response:
        denied = _check_token(state.config.admin_token_sha256, request.headers.get("authorization"))
        if denied is not None:
            return denied
        try:
            new = SidecarConfig.model_validate_json(await request.body())
        except ValidationError as error:
            return JSONResponse(
                {"error": "invalid sidecar config", "detail": _describe(error)}, status_code=422
            )
        fixed = _changed_outside_routing(state.config, new)
        if fixed:
            return JSONResponse(
                {"error": f"only routing can change at run time, not {', '.join(fixed)}"},
                status_code=422,
            )
        namespace = state.config.namespace
        outside = new.routing.outside(namespace) if namespace is not None else {}
        if outside:
            return JSONResponse(
                {
                    "error": f"routing may name only Services in namespace {namespace}",
                    "detail": [{"field": f, "problem": p} for f, p in outside.items()],
                },
                status_code=422,
            )
        state.config = new
        for listener in state.on_config:
            listener(new)
        return Response(new.model_dump_json(), media_type="application/json")

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/v1/snapshot", snapshot),
            Route("/v1/reservoir", reservoir),
            Route("/v1/feedback", feedback, methods=["POST"]),
            Route("/v1/config", get_config, methods=["GET"]),
            Route("/v1/config", put_config, methods=["PUT"]),
        ]
    )


def _check_token(token_sha256: str | None, authorization: str | None) -> JSONResponse | None:
    if token_sha256 is None:
        return JSONResponse(
            {"error": "disabled: the sidecar has no admin_token_sha256 to check a token against"},
            status_code=404,
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return JSONResponse(
            {"error": "missing bearer token (Authorization: Bearer <token>)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    presented = hashlib.sha256(token.strip().encode()).hexdigest()
    if not hmac.compare_digest(presented, token_sha256):
        return JSONResponse({"error": "wrong bearer token"}, status_code=403)
    return None


def _changed_outside_routing(old: SidecarConfig, new: SidecarConfig) -> list[str]:
    before, after = old.model_dump(exclude={"routing"}), new.model_dump(exclude={"routing"})
    return sorted(key for key in before if before[key] != after[key])


def _describe(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in error.errors()
    ]


async def _reachable(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
