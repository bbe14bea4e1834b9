"""``driftline-sidecar``: the proxy and the admin API in one process.

The proxy port is ``driftline_sidecar.server`` (httptools on uvloop), the
admin port a uvicorn server, both in one event loop. On SIGTERM or SIGINT the
proxy drains (``ProxyServer.shutdown``: no new connections, ``Connection:
close`` on what it answers from then on, idle connections closed after a short
grace, requests in flight finished), then the capture queue and the prediction
log are flushed, spans exported, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import uvicorn
import uvloop
import yaml
from pydantic import ValidationError
from yarl import URL

from driftline_sidecar.admin import AdminState, create_admin_app
from driftline_sidecar.capture import CaptureWorker
from driftline_sidecar.contract.config import ModelConfig, Role, SidecarConfig, load_config
from driftline_sidecar.contract.profile import ReferenceProfile, load_profile
from driftline_sidecar.counts import Layout, build_layout, file_sha256, new_process_info
from driftline_sidecar.feedback import Feedback, spill_path
from driftline_sidecar.metrics import SCORE_BUCKETS, SidecarMetrics
from driftline_sidecar.predlog import PredictionLog
from driftline_sidecar.proxy import Proxy
from driftline_sidecar.reservoir import Reservoir
from driftline_sidecar.routing import CanarySplit
from driftline_sidecar.server import Limits, ProxyServer
from driftline_sidecar.shadow import ShadowMirror
from driftline_sidecar.tracing import Tracing
from driftline_sidecar.upstream import UpstreamPool

log = logging.getLogger("driftline_sidecar")

# Longest a shutdown waits for the capture queue and the log to flush.
FLUSH_TIMEOUT_SECONDS = 10.0
# Set by the injected pod from its labels (driftline_operator.render); an empty
# value (the label is absent) leaves the config's value.
VERSION_ENV = "DRIFTLINE_MODEL_VERSION"
ROLE_ENV = "DRIFTLINE_ROLE"
ROLE_LABEL = "driftline.io/role"


class ConfigError(Exception):
    """A user error in the config or flags: printed as one message, exit code 2."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="driftline-sidecar",
        description="Reverse proxy in front of one model: metrics, drift counts, traces.",
    )
    parser.add_argument("--config", type=Path, help="sidecar config file (YAML or JSON)")
    parser.add_argument("--model-name", help="run without a config file, for this model")
    parser.add_argument("--upstream", help="the model's URL, e.g. http://127.0.0.1:8081")
    parser.add_argument("--listen", help="proxy address host:port (default 0.0.0.0:8080)")
    parser.add_argument("--admin", help="admin address host:port (default 0.0.0.0:9090)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, *, env: Mapping[str, str] = os.environ) -> SidecarConfig:
    """The config file (or ``--model-name``), then the pod's env, then the flags."""
    if args.config is None and not args.model_name:
        raise ConfigError("give --config FILE, or --model-name NAME to run without a config file")
    try:
        if args.config is not None:
            config = load_config(args.config)
        else:
            config = SidecarConfig(model=ModelConfig(name=args.model_name))
        overrides = {
            key: value
            for key, value in (
                ("upstream", args.upstream),
                ("listen", args.listen),
                ("admin", args.admin),
            )
            if value
        }
        document = config.model_dump()
        document.update(overrides)
        if args.model_name:
            document["model"]["name"] = args.model_name
        _apply_pod_env(document["model"], env)
        config = SidecarConfig.model_validate(document)
        for address in (config.listen, config.admin):
            split_address(address)
        upstream = URL(config.upstream)
        if upstream.scheme not in ("http", "https") or not upstream.host:
            raise ConfigError(f"upstream {config.upstream!r}: expected http://HOST:PORT")
    except ValidationError as error:
        where = args.config or "flags"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}"
            for e in error.errors()
        )
        raise ConfigError(f"{where}: invalid sidecar config: {problems}") from None
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise ConfigError(f"{args.config}: {error}") from None
    return config


def _apply_pod_env(model: dict[str, Any], env: Mapping[str, str]) -> None:
    version = env.get(VERSION_ENV, "").strip()
    if version:
        model["version"] = version
    role = env.get(ROLE_ENV, "").strip()
    if role:
        roles = get_args(Role)
        if role not in roles:
            raise ConfigError(
                f"{ROLE_ENV}={role!r} (from the pod label {ROLE_LABEL}): expected one of "
                f"{', '.join(roles)}; fix the label on the pod template"
            )
        model["role"] = role


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"address {address!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    return host.strip("[]"), int(port)


def load_layout(config: SidecarConfig) -> Layout:
    profile: ReferenceProfile | None = None
    sha = ""
    if config.profile_path and not Path(config.profile_path).exists():
        # The ConfigMap key is optional in the pod: no profile built yet.
        log.warning(
            "profile_path %s does not exist: binning with the config's fixed bins",
            config.profile_path,
        )
    elif config.profile_path:
        try:
            profile = load_profile(config.profile_path)
            sha = file_sha256(config.profile_path)
        except (OSError, ValueError) as error:
            raise ConfigError(f"profile_path {config.profile_path}: {error}") from None
    try:
        return build_layout(config, profile, sha)
    except ValueError as error:
        raise ConfigError(str(error)) from None


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to ``serve``, which runs two."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(app: Any, address: str, *, graceful_seconds: float) -> _Server:
    host, port = split_address(address)
    return _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            # The proxy passes the model's own Server and Date headers through.
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=int(graceful_seconds) + 1,
        )
    )


def _prediction_log(config: SidecarConfig, layout: Layout) -> PredictionLog | None:
    if not config.prediction_log.enabled:
        return None
    pii = {f.name for f in layout.features if f.pii == "hash"}
    try:
        return PredictionLog(config.prediction_log, pii_fields=pii)
    except OSError as error:  # the proxy still serves; the log is the sidecar's own business
        log.warning("prediction log disabled: %s", error)
        return None


async def serve(config: SidecarConfig, layout: Layout) -> None:
    model = config.model
    numeric_prediction = layout.prediction.kind == "numeric"
    score_buckets = SCORE_BUCKETS
    if model.prediction.task == "regression" and numeric_prediction and layout.prediction.edges:
        score_buckets = layout.prediction.edges
    metrics = SidecarMetrics(
        model=model.name,
        version=model.version,
        role=model.role,
        features=layout.bins_per_feature,
        prediction_bins=layout.prediction.n_bins,
        score_buckets=score_buckets,
        profile_sha256=layout.profile_sha256,
    )
    upstream = URL(config.upstream)
    upstream_host, upstream_port = upstream.host or "127.0.0.1", upstream.port or 80
    prediction_log = _prediction_log(config, layout)
    worker = None
    reservoir = None
    feedback = None
    if config.capture.enabled and config.feedback.enabled:
        feedback = Feedback(config, layout, registry=metrics.registry, path=spill_path(config))
    if config.capture.enabled:
        if config.reservoir.enabled:
            reservoir = Reservoir(config.reservoir, layout.features)
        worker = CaptureWorker(
            config=config,
            layout=layout,
            metrics=metrics,
            prediction_log=prediction_log,
            reservoir=reservoir,
            feedback=feedback,
        )
    tracing = Tracing.from_env(
        sample_ratio=config.tracing.sample_ratio,
        model=model.name,
        version=model.version,
        role=model.role,
        upstream_host=upstream_host,
        upstream_port=upstream_port,
    )
    pool = UpstreamPool(
        host=upstream_host,
        port=upstream_port,
        timeout_seconds=config.upstream_timeout_seconds,
        tls=upstream.scheme == "https",
    )
    # The canary gets its own pool (routing.py), so it cannot take the local
    # model's connections; the shadow, off the hot path, an aiohttp session
    # (opened at its first mirror).
    split = CanarySplit(config.routing, timeout_seconds=config.upstream_timeout_seconds)
    metrics.routing.canary_weight.set(split.weight)

    def route(new: SidecarConfig) -> None:
        split.update(new.routing)
        metrics.routing.canary_weight.set(split.weight)

    shadow = ShadowMirror(config=config, metrics=metrics.routing)
    proxy = Proxy(
        upstream=config.upstream,
        pool=pool,
        metrics=metrics,
        capture=worker.submit if worker is not None else None,
        max_capture_bytes=config.capture.max_body_bytes,
        tracing=tracing,
        split=split,
        shadow=shadow,
    )
    state = AdminState(
        config=config,
        metrics=metrics,
        process=new_process_info(),
        upstream_host=upstream_host,
        upstream_port=upstream_port,
        last_upstream_ok=lambda: proxy.last_upstream_ok,
        on_config=[route, shadow.update],
        reservoir=reservoir,
        feedback=feedback,
    )
    limits = config.proxy
    proxy_server = ProxyServer(
        proxy,
        limits=Limits(
            max_body_bytes=limits.max_request_body_bytes,
            header_timeout_seconds=limits.header_timeout_seconds,
            body_timeout_seconds=limits.body_timeout_seconds,
        ),
        drain_grace_seconds=limits.drain_grace_seconds,
    )
    admin_app = create_admin_app(state)
    if tracing is not None:
        tracing.instrument_admin(admin_app)
    admin_server = _server(admin_app, config.admin, graceful_seconds=1)
    await proxy_server.start(*split_address(config.listen))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker_task = asyncio.create_task(worker.run()) if worker is not None else None
    admin = asyncio.create_task(admin_server.serve())
    await _freeze_when_started(admin_server, admin)
    log.info(
        "driftline-sidecar: proxy %s -> %s, admin %s, model %s/%s (%s)",
        config.listen,
        config.upstream,
        config.admin,
        model.name,
        model.version,
        model.role,
    )
    await asyncio.wait([asyncio.create_task(stop.wait()), admin], return_when="FIRST_COMPLETED")

    log.info("driftline-sidecar: shutting down, draining requests in flight")
    await proxy_server.shutdown(timeout=config.upstream_timeout_seconds + 1)
    await shadow.drain(timeout=FLUSH_TIMEOUT_SECONDS)
    await shadow.close()
    if worker is not None and worker_task is not None:
        try:
            await asyncio.wait_for(worker.drain(), timeout=FLUSH_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("driftline-sidecar: capture queue not drained in time")
        worker_task.cancel()
    if prediction_log is not None:
        await asyncio.to_thread(prediction_log.close)
    if feedback is not None:
        feedback.close()
    if tracing is not None:
        await asyncio.to_thread(tracing.shutdown)
    admin_server.should_exit = True
    await admin
    log.info("driftline-sidecar: stopped")


async def _freeze_when_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Once everything long-lived exists (uvicorn imports its protocol modules
    as it starts), move it out of the garbage collector's full passes: they
    scanned ~all of it and paused the proxy 20-30 ms under load."""
    for _ in range(500):  # 5 s at most; without it, freezing less is still right
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = build_config(args)
        layout = load_layout(config)
    except ConfigError as error:
        print(f"driftline-sidecar: {error}", file=sys.stderr)
        return 2
    uvloop.run(serve(config, layout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
