"""The demo's processes: two model servers, each behind its own sidecar.

```
 traffic ──► stable sidecar ──► stable model server
                 │ routing.canary_weight %
                 ▼
             canary sidecar (role canary) ──► candidate model server
```

The stable sidecar is the only entry point, as a Service in front of the
stable pods would be; its admin API takes config pushes with a bearer token
(the sidecar router's path). Every child writes to its own log file in the
work directory, so the demo's output stays readable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml

from driftline_operator.cli.demo.training import N_FEATURES, Serving

READY_TIMEOUT = 60.0  # a loaded 2-core machine starts Python slowly
STOP_TIMEOUT = 15.0
FEATURE_BINS = [-1.0, -0.5, 0.0, 0.5, 1.0]
# The explanations' sample of rows: a window closes every 2 s, so each tick finds new rows.
RESERVOIR = {"window_seconds": 2.0, "size": 12}


class FleetError(RuntimeError):
    """A child process did not start or answer; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def revision(serving: Serving) -> str:
    """What a pod-template hash is to the operator: changes when what is served changes."""
    text = json.dumps(
        [serving.model.weights, serving.model.bias, serving.latency_ms, serving.error_rate]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Child:
    name: str
    command: list[str]
    log: Path
    ready_url: str
    process: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = field(default=None, repr=False)

    async def start(self, session: aiohttp.ClientSession) -> None:
        self._out = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.command, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FleetError(
                    f"{self.name} exited with code {self.process.returncode}; {self._tail()}"
                )
            try:
                async with session.get(self.ready_url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
        raise FleetError(
            f"{self.name} not ready at {self.ready_url} after {READY_TIMEOUT:.0f}s; {self._tail()}"
        )

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        if self._out is not None:
            self._out.close()
            self._out = None

    def _tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-15:] if self.log.exists() else []
        return f"log {self.log}:\n" + "\n".join(lines)


@dataclass
class Pod:
    """One model server and its sidecar: what a pod of the model is in a cluster."""

    role: str  # stable | canary
    serving: Serving
    model: Child
    sidecar: Child
    proxy_url: str
    admin_url: str
    model_url: str
    revision: str


CLASSES = ("ok", "fraud")  # what the demo model answers


class Fleet:
    """Starts, promotes and stops the demo's pods; ``async with`` stops them all."""

    def __init__(self, *, workdir: Path, stable: Serving, candidate: Serving) -> None:
        self.workdir = workdir
        self.token = secrets.token_urlsafe(24)
        self.canary = self._pod("canary", candidate, version="v2", canary_url=None)
        self.stable = self._pod("stable", stable, version="v1", canary_url=self.canary.proxy_url)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def __aenter__(self) -> Fleet:
        try:
            # The canary first: the stable sidecar's routing points at it.
            for pod in (self.canary, self.stable):
                await pod.model.start(self.session)
                await pod.sidecar.start(self.session)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for pod in (self.stable, self.canary):
            await pod.sidecar.stop()
            await pod.model.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def promote(self) -> None:
        """Stable takes the candidate: its model server restarts with the
        candidate's weights and settings on the same port, behind the same
        sidecar (what copying the canary's pod template onto stable does)."""
        candidate = self.canary.serving
        await self.stable.model.stop()
        self.stable.model = self._model_child(
            "stable", candidate, port=_port(self.stable.model_url)
        )
        self.stable.serving, self.stable.revision = candidate, revision(candidate)
        await self.stable.model.start(self.session)

    async def stop_canary(self) -> None:
        """The canary scaled to zero: its sidecar and model server stop."""
        await self.canary.sidecar.stop()
        await self.canary.model.stop()

    async def set_faults(
        self, *, latency_ms: float | None = None, error_rate: float | None = None
    ) -> None:
        """Make the running candidate slow or failing (``POST /control``)."""
        faults: dict[str, float] = {}
        if latency_ms is not None:
            faults["latency_ms"] = latency_ms
        if error_rate is not None:
            faults["error_rate"] = error_rate
        async with self.session.post(f"{self.canary.model_url}/control", json=faults) as response:
            if response.status != 200:
                raise FleetError(
                    f"candidate /control answered {response.status}: {await response.text()}"
                )

    async def routing(self) -> dict[str, Any]:
        """The stable sidecar's routing section, as it runs now (``GET /v1/config``)."""
        async with self.session.get(f"{self.stable.admin_url}/v1/config") as response:
            response.raise_for_status()
            document = await response.json()
        return dict(document.get("routing") or {})

    def _pod(self, role: str, serving: Serving, *, version: str, canary_url: str | None) -> Pod:
        model_port, proxy_port, admin_port = free_port(), free_port(), free_port()
        model = self._model_child(role, serving, port=model_port)
        config = self._sidecar_config(
            role,
            version=version,
            model_port=model_port,
            proxy_port=proxy_port,
            admin_port=admin_port,
            canary_url=canary_url,
        )
        command = [sys.executable, "-m", "driftline_sidecar.main", "--config", str(config)]
        admin = f"http://127.0.0.1:{admin_port}"
        sidecar = Child(
            f"{role} sidecar", command, self.workdir / f"{role}-sidecar.log", f"{admin}/readyz"
        )
        return Pod(
            role=role,
            serving=serving,
            model=model,
            sidecar=sidecar,
            proxy_url=f"http://127.0.0.1:{proxy_port}",
            admin_url=admin,
            model_url=f"http://127.0.0.1:{model_port}",
            revision=revision(serving),
        )

    def _model_child(self, role: str, serving: Serving, *, port: int) -> Child:
        weights = serving.model.save(self.workdir / f"{role}-{revision(serving)}.json")
        command = [sys.executable, "-m", "driftline_operator.cli.demo.model_server"]
        command += ["--port", str(port), "--features", str(N_FEATURES), "--weights", str(weights)]
        command += [
            "--latency-ms",
            str(serving.latency_ms),
            "--error-rate",
            str(serving.error_rate),
        ]
        url = f"http://127.0.0.1:{port}"
        return Child(
            f"{role} model server", command, self.workdir / f"{role}-model.log", f"{url}/healthz"
        )

    def _sidecar_config(
        self,
        role: str,
        *,
        version: str,
        model_port: int,
        proxy_port: int,
        admin_port: int,
        canary_url: str | None,
    ) -> Path:
        document: dict[str, Any] = {
            "model": {
                "name": "demo",
                "version": version,
                "role": role,
                "protocol": "json",
                "features": [{"name": f"f{i}", "bins": FEATURE_BINS} for i in range(N_FEATURES)],
                "prediction": {"path": "prediction", "score": "probability"},
            },
            "upstream": f"http://127.0.0.1:{model_port}",
            "listen": f"127.0.0.1:{proxy_port}",
            "admin": f"127.0.0.1:{admin_port}",
            "admin_token_sha256": hashlib.sha256(self.token.encode()).hexdigest(),
            "tracing": {"sample_ratio": 0.0},  # the demo exports no spans: spare the CPU
            "reservoir": RESERVOIR,
            "prediction_log": {"enabled": False},
            "feedback": {  # the traffic's labels (--scenario quality) join here
                "enabled": True,
                "classes": list(CLASSES),
                "positive_class": "fraud",
                "max_pending": 100_000,
                "path": str(self.workdir / f"{role}-pending.bin"),
            },
        }
        if canary_url is not None:
            document["routing"] = {"canary_url": canary_url, "canary_weight": 0.0}
        path = self.workdir / f"{role}-sidecar.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])
