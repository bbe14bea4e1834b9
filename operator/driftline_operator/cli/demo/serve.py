"""``driftline demo --serve``: a model server with the sidecar in front of it, on localhost.

``main(argv)`` starts the demo model server and a ``driftline-sidecar`` as
child processes, sends some traffic through the proxy, prints where to look,
and keeps both serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

N_FEATURES = 4


def _free_port(preferred: int) -> int:
    """The preferred port if it is free, any free port otherwise."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def _wait_ready(url: str, process: subprocess.Popen[bytes], *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def write_sidecar_config(
    workdir: Path,
    *,
    name: str,
    model_port: int,
    proxy_port: int,
    admin_port: int,
    features: int,
    bins: Sequence[float],
    sample_ratio: float,
) -> Path:
    """``workdir/sidecar.yaml`` for a sidecar in front of the demo model server on
    localhost (features ``f0``..``f<n-1>``, all binned alike); the bench uses it too."""
    document = {
        "model": {
            "name": name,
            "version": "v1",
            "protocol": "json",
            "features": [{"name": f"f{i}", "bins": list(bins)} for i in range(features)],
            "prediction": {"path": "prediction", "score": "probability"},
        },
        "upstream": f"http://127.0.0.1:{model_port}",
        "listen": f"127.0.0.1:{proxy_port}",
        "admin": f"127.0.0.1:{admin_port}",
        "prediction_log": {
            "path": str(workdir / "predictions.jsonl"),
            "sample_ratio": sample_ratio,
        },
    }
    path = workdir / "sidecar.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _send_traffic(proxy: str, *, requests: int) -> None:
    rng = random.Random(1)
    for _ in range(requests):
        row = {f"f{i}": round(rng.gauss(0.0, 1.0), 4) for i in range(N_FEATURES)}
        request = urllib.request.Request(
            f"{proxy}/predict",
            data=json.dumps(row).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10.0) as response:
            response.read()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="driftline demo --serve", description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    parser.add_argument("--admin-port", type=int, default=9090)
    parser.add_argument("--model-port", type=int, default=8081)
    parser.add_argument("--requests", type=int, default=200, help="requests to send at start")
    parser.add_argument("--no-wait", action="store_true", help="exit after the traffic")
    args = parser.parse_args(argv)

    model_port = _free_port(args.model_port)
    proxy_port, admin_port = _free_port(args.port), _free_port(args.admin_port)
    workdir = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    config = write_sidecar_config(
        workdir,
        name="demo",
        model_port=model_port,
        proxy_port=proxy_port,
        admin_port=admin_port,
        features=N_FEATURES,
        bins=[-1.0, -0.5, 0.0, 0.5, 1.0],
        sample_ratio=0.1,
    )
    model_cmd = [sys.executable, "-m", "driftline_operator.cli.demo.model_server"]
    model_cmd += ["--port", str(model_port), "--features", str(N_FEATURES), "--latency-ms", "1"]
    children = [subprocess.Popen(model_cmd)]
    try:
        _wait_ready(f"http://127.0.0.1:{model_port}/healthz", children[0])
        sidecar_cmd = [sys.executable, "-m", "driftline_sidecar.main", "--config", str(config)]
        children.append(subprocess.Popen(sidecar_cmd))
        admin = f"http://127.0.0.1:{admin_port}"
        _wait_ready(f"{admin}/readyz", children[1])
        proxy = f"http://127.0.0.1:{proxy_port}"
        _send_traffic(proxy, requests=args.requests)
        print(
            f"\nDriftline demo is running (files in {workdir}):\n"
            f"  model server   http://127.0.0.1:{model_port}\n"
            f'  through sidecar {proxy}/predict   (POST {{"f0": 0.1, "f1": -0.3, ...}})\n'
            f"  metrics        {admin}/metrics\n"
            f"  snapshot       {admin}/v1/snapshot\n"
            f"  config         {admin}/v1/config\n"
            f"  prediction log {workdir / 'predictions.jsonl'}\n"
            f"Sent {args.requests} requests. Ctrl-C to stop.",
            flush=True,
        )
        if not args.no_wait:
            signal.signal(signal.SIGTERM, _interrupt)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:
        print(f"driftline demo: {error}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(children):
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0
