"""Real processes on loopback: the demo model server and the sidecar in front of it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

N_FEATURES = 4
STABLE_SEED, OTHER_SEED = 7, 11  # the demo model server's default seed, and another
READY_TIMEOUT = 60.0  # generous: a loaded 2-core machine starts Python slowly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float = READY_TIMEOUT, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


PROMETHEUS = "/usr/bin/prometheus"
needs_prometheus = pytest.mark.skipif(
    shutil.which(PROMETHEUS) is None, reason="no /usr/bin/prometheus (Debian package prometheus)"
)


@contextlib.contextmanager
def running_prometheus(tmp: Path, targets: list[str]) -> Iterator[str]:
    """A real Prometheus scraping ``targets`` (host:port) every second; yields its URL."""
    config = tmp / "prometheus.yml"
    job = {"job_name": "driftline-sidecar", "static_configs": [{"targets": targets}]}
    config.write_text(
        yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]})
    )
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(url + "/-/ready", process, log, timeout=90)
        yield url
    finally:
        _stop(process)


def _wait_http(
    url: str, process: subprocess.Popen[bytes], log: Path, *, timeout: float = READY_TIMEOUT
) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{url}: process exited early:\n{log.read_text()}")
        return httpx.get(url, timeout=2.0).status_code == 200

    wait_until(up, timeout=timeout, what=url)


@dataclass
class ModelServer:
    url: str
    process: subprocess.Popen[bytes]


def start_model(tmp: Path, *args: str) -> ModelServer:
    port = free_port()
    log = tmp / f"model-{port}.log"
    command = [
        sys.executable,
        "-m",
        "driftline_operator.cli.demo.model_server",
        "--port",
        str(port),
    ]
    command += ["--features", str(N_FEATURES), *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/healthz", process, log)
    except BaseException:
        _stop(process)
        raise
    return ModelServer(url, process)


@contextlib.contextmanager
def running_model(tmp: Path, *args: str) -> Iterator[ModelServer]:
    """``start_model`` stopped on the way out."""
    server = start_model(tmp, *args)
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    with running_model(tmp_path_factory.mktemp("model")) as server:
        yield server


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """A candidate with other weights than ``model``'s: it disagrees on part of the inputs."""
    with running_model(tmp_path_factory.mktemp("other"), "--seed", str(OTHER_SEED)) as server:
        yield server


@dataclass
class Sidecar:
    proxy: str
    admin: str
    process: subprocess.Popen[bytes]
    config: dict[str, Any]
    log: Path
    workdir: Path

    def snapshot(self) -> dict[str, Any]:
        return httpx.get(self.admin + "/v1/snapshot", timeout=10).json()

    def metrics(self) -> str:
        return httpx.get(self.admin + "/metrics", timeout=10).text

    def wait_records(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first snapshot for which ``predicate`` holds (capture runs off the hot path)."""
        seen: dict[str, Any] = {}

        def check() -> bool:
            seen.update(self.snapshot())
            return predicate(seen)

        try:
            wait_until(check, timeout=30, what="capture counts")
        except AssertionError:
            raise AssertionError(f"capture counts never matched; last snapshot: {seen}") from None
        return seen


def sidecar_config(upstream: str, workdir: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model": {"name": "fraud", "version": "v1", "protocol": "auto"},
        "upstream": upstream,
        "listen": f"127.0.0.1:{free_port()}",
        "admin": f"127.0.0.1:{free_port()}",
        "prediction_log": {"path": str(workdir / "predictions.jsonl"), "sample_ratio": 1.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def start_sidecar(
    workdir: Path, config: dict[str, Any], *, env: dict[str, str] | None = None
) -> Sidecar:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = workdir / "sidecar.log"
    command = [sys.executable, "-m", "driftline_sidecar.main", "--config", str(path)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    sidecar = Sidecar(
        proxy=f"http://{config['listen']}",
        admin=f"http://{config['admin']}",
        process=process,
        config=config,
        log=log,
        workdir=workdir,
    )
    try:
        _wait_http(sidecar.admin + "/healthz", process, log)
        # The proxy listener starts with the admin one; make sure it accepts too.
        wait_until(lambda: _accepts(config["listen"]), what="the proxy port")
    except BaseException:
        _stop(process)
        raise
    return sidecar


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    """Start sidecars with ``factory(upstream, **config_overrides)``; all stopped at teardown."""
    started: list[Sidecar] = []

    def factory(upstream: str, *, env: dict[str, str] | None = None, **overrides: Any) -> Sidecar:
        workdir = tmp_path / f"sidecar{len(started)}"
        workdir.mkdir()
        sidecar = start_sidecar(workdir, sidecar_config(upstream, workdir, **overrides), env=env)
        started.append(sidecar)
        return sidecar

    try:
        yield factory
    finally:
        for sidecar in started:
            _stop(sidecar.process)


@pytest.fixture(scope="module")
def sidecar(model: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    """A sidecar in front of the shared model server, no features configured,
    shared by a module's tests (use ``sidecar_factory`` to assert on counts)."""
    workdir = tmp_path_factory.mktemp("sidecar")
    started = start_sidecar(workdir, sidecar_config(model.url, workdir))
    try:
        yield started
    finally:
        _stop(started.process)


class OtlpReceiver:
    """A tiny OTLP/HTTP endpoint collecting decoded spans."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
