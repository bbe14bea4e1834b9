"""What the sidecar costs: the same load direct to the model and through the sidecar.

Run: ``.venv/bin/python bench/sidecar_overhead.py`` (about a minute).

A demo model server answering in ~1 ms; requests are 1 KB JSON bodies with 20
numeric features; clients keep their connections alive. All columns run at
once and are measured in interleaved rounds (``--rounds``), so load from
elsewhere on the machine hits them alike. Printed, each against the direct
baseline measured in the same run:

- throughput with a fixed number of concurrent clients;
- latency p50/p99 at a fixed 300 req/s, and what the proxy adds to them;
- the sidecar's CPU seconds per request (``/proc/<pid>/stat``) at 300 req/s
  and at saturation (during the throughput slices), and its RSS;
- an nginx ``proxy_pass`` column as the floor, when ``/usr/sbin/nginx`` exists;
- with ``--baseline-src DIR``, one more sidecar column run from another source
  tree (e.g. ``git archive <commit> sidecar | tar -x -C DIR``), to compare two
  versions under the same load in the same run.

The sidecar runs with full capture on (20 binned features, prediction and
score, prediction log sampled at 1 %) and tracing off (no ``OTEL_*``).

The targets (issue 14) are ratios to the columns of the same run: CPU per
request <= 1.5x nginx's (at 300 req/s and at saturation), added p99 <= 0.3 ms,
throughput >= 0.7x direct, RSS <= 50 MB. Measured on a shared, heavily loaded
2-core machine (three runs, with ``--baseline-src`` the tree before issue 14's
sidecar work, so only same-run ratios mean anything): CPU per request at
300 req/s 439-550 us against the baseline's 506-672 (2.6-2.8x nginx against
2.97-3.36x); RSS 73 MB against 80 (numpy, pydantic, uvicorn and FastAPI were
imported at start; aiohttp only at the first shadow mirror). The hot path
compiled with mypyc (server, upstream, proxy) measured the same as pure
Python within the noise: its cost is in uvloop, httptools and the kernel.
Where the time goes at saturation (py-spy ``--gil``, 2026-12-02): 20 % in
``transport.write`` of the request to the model (the send syscall), 7 % in
the write to the client, 29 % in serving a request (``_serve``/``_answer``,
forwarding included), 18 % in the capture worker (parsing, extracting,
binning), the rest in the event loop. The RSS is mostly imports: numpy
15 MB, prometheus_client 9 (with the http.server, ssl and email modules it
imports), pydantic 4-6, uvicorn with click and watchfiles 5.5, Starlette 2;
numpy, uvloop, httptools, orjson, prometheus_client, pydantic, the
OpenTelemetry SDK, yaml and yarl alone make 51 MB in a bare interpreter, so
50 MB is out of reach with them. The admin API on plain Starlette instead of
FastAPI (2026-12-02): RSS 71.0 MB against 77.7 in the same run, CPU alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import uvloop

from driftline_operator.cli.demo.serve import write_sidecar_config

N_FEATURES = 20
NGINX = "/usr/sbin/nginx"
# Issue 14's targets for the sidecar, against the columns of the same run.
TARGETS = {"cpu_vs_nginx": 1.5, "added_p99_ms": 0.3, "rps_vs_direct": 0.7, "rss_mb": 50.0}
TICK = os.sysconf("SC_CLK_TCK")
# At 300 req/s for 6 s, p99 is the 18th slowest request: a single 60 ms pause
# moves it. Max and this count tell one pause from a slow tail.
STALL_MS = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body() -> bytes:
    rng = random.Random(5)
    row: dict[str, object] = {f"f{i}": round(rng.gauss(0, 1), 12) for i in range(N_FEATURES)}
    row["context"] = ""
    padding = 1024 - len(json.dumps(row))
    row["context"] = "x" * max(padding, 0)
    return json.dumps(row).encode()


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open in {timeout:.0f} s")


@contextmanager
def started(
    command: list[str], port: int, log: Path, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        wait_port(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def sidecar_config(model_port: int, port: int, admin: int, workdir: Path) -> Path:
    return write_sidecar_config(
        workdir,
        name="bench",
        model_port=model_port,
        proxy_port=port,
        admin_port=admin,
        features=N_FEATURES,
        bins=[-1.5, -0.5, 0.0, 0.5, 1.5],
        sample_ratio=0.01,
    )


def nginx_config(model_port: int, port: int, workdir: Path) -> Path:
    path = workdir / "nginx.conf"
    path.write_text(f"""
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    upstream model {{ server 127.0.0.1:{model_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return path


async def throughput(url: str, payload: bytes, *, clients: int, seconds: float) -> float:
    """Requests per second with ``clients`` concurrent keep-alive loops."""
    done = 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                async with session.post(url, data=payload) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"{url}: HTTP {response.status}")
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return done / (time.perf_counter() - began)


async def fixed_rate(
    url: str, payload: bytes, *, rate: float, seconds: float, pid: int | None = None
) -> tuple[np.ndarray, float]:
    """Latencies (seconds) of requests sent open-loop at ``rate`` per second, and
    the CPU seconds process ``pid`` used meanwhile (after the warm-up)."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            began = time.perf_counter()
            async with session.post(url, data=payload) as response:
                await response.read()
            latencies.append(time.perf_counter() - began)

        for _ in range(20):  # warm the pool
            await one()
        latencies.clear()
        cpu_before = cpu_seconds(pid) if pid else 0.0
        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    return np.asarray(latencies), cpu


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Column:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    stalled: int  # requests slower than STALL_MS: one pause of the loop or the CPU shows here
    cpu_us: float | None = None
    saturated_cpu_us: float | None = None  # during the throughput slices
    rss_mb: float | None = None


@dataclass
class Target:
    name: str
    url: str
    pid: int | None
    done: int = 0
    busy_seconds: float = 0.0
    latencies: list[np.ndarray] = field(default_factory=list)
    cpu_seconds: float = 0.0
    saturated_cpu_seconds: float = 0.0

    def column(self) -> Column:
        latencies = np.concatenate(self.latencies)
        column = Column(
            self.name,
            self.done / self.busy_seconds,
            float(np.percentile(latencies, 50) * 1000),
            float(np.percentile(latencies, 99) * 1000),
            float(latencies.max() * 1000),
            int((latencies > STALL_MS / 1000).sum()),
        )
        if self.pid:
            column.cpu_us = self.cpu_seconds / len(latencies) * 1e6
            column.saturated_cpu_us = self.saturated_cpu_seconds / self.done * 1e6
            column.rss_mb = rss_mb(self.pid)
        return column


async def measure(targets: list[Target], payload: bytes, args: argparse.Namespace) -> None:
    """Round-robin slices, the order rotating each round, so a burst of load from
    elsewhere on the machine hits every column alike instead of one."""
    slice_seconds = args.seconds / args.rounds
    for round_ in range(args.rounds):
        shift = round_ % len(targets)
        for target in targets[shift:] + targets[:shift]:
            # This client's own full GC passes took 17-25 ms: they would show
            # as the proxy's p99. Collect between slices, never during one.
            gc.collect()
            gc.disable()
            began = time.perf_counter()
            cpu_before = cpu_seconds(target.pid) if target.pid else 0.0
            rps = await throughput(target.url, payload, clients=args.clients, seconds=slice_seconds)
            elapsed = time.perf_counter() - began
            if target.pid:
                target.saturated_cpu_seconds += cpu_seconds(target.pid) - cpu_before
            target.done += round(rps * elapsed)
            target.busy_seconds += elapsed
            latencies, cpu = await fixed_rate(
                target.url, payload, rate=args.rate, seconds=slice_seconds, pid=target.pid
            )
            gc.enable()
            target.latencies.append(latencies)
            target.cpu_seconds += cpu


def report(columns: list[Column], args: argparse.Namespace) -> None:
    direct = columns[0]
    print(f"\nload: 1 KB JSON, {N_FEATURES} features, model ~1 ms, keep-alive clients")
    print(f"throughput: {args.clients} concurrent clients, {args.seconds:.0f} s each")
    print(f"latency: open loop at {args.rate:.0f} req/s, {args.seconds:.0f} s each")
    print(f"columns measured in {args.rounds} interleaved rounds\n")
    print(f"{'':24}" + "".join(f"{c.name:>16}" for c in columns))
    rows = [
        ("throughput req/s", lambda c: f"{c.rps:.0f}"),
        ("  vs direct", lambda c: f"{c.rps / direct.rps:.2f}x"),
        ("p50 ms", lambda c: f"{c.p50_ms:.3f}"),
        ("p99 ms", lambda c: f"{c.p99_ms:.3f}"),
        ("max ms", lambda c: f"{c.max_ms:.3f}"),
        (f"requests > {STALL_MS:g} ms", lambda c: f"{c.stalled}"),
        ("added p50 ms", lambda c: f"{c.p50_ms - direct.p50_ms:+.3f}"),
        ("added p99 ms", lambda c: f"{c.p99_ms - direct.p99_ms:+.3f}"),
        ("proxy CPU us/req", lambda c: "-" if c.cpu_us is None else f"{c.cpu_us:.0f}"),
        (
            "  at saturation",
            lambda c: "-" if c.saturated_cpu_us is None else f"{c.saturated_cpu_us:.0f}",
        ),
        ("proxy RSS MB", lambda c: "-" if c.rss_mb is None else f"{c.rss_mb:.1f}"),
    ]
    nginx = next((c for c in columns if c.name == "nginx"), None)
    if nginx is not None and nginx.cpu_us and nginx.p50_ms > direct.p50_ms:
        rows += [
            (
                "  CPU vs nginx",
                lambda c: "-" if not c.cpu_us else f"{c.cpu_us / nginx.cpu_us:.2f}x",
            ),
            (
                "  saturated vs nginx",
                lambda c: (
                    "-"
                    if not c.saturated_cpu_us or not nginx.saturated_cpu_us
                    else f"{c.saturated_cpu_us / nginx.saturated_cpu_us:.2f}x"
                ),
            ),
            (
                "  added p50 vs nginx",
                lambda c: (
                    "-"
                    if c is direct
                    else f"{(c.p50_ms - direct.p50_ms) / (nginx.p50_ms - direct.p50_ms):.2f}x"
                ),
            ),
        ]
    for label, cell in rows:
        print(f"{label:24}" + "".join(f"{cell(c):>16}" for c in columns))
    sidecar = next(c for c in columns if c.name == "sidecar")
    checks = [
        ("added p99", sidecar.p99_ms - direct.p99_ms, TARGETS["added_p99_ms"], " ms"),
        ("throughput", sidecar.rps / direct.rps, TARGETS["rps_vs_direct"], "x direct"),
        ("RSS", sidecar.rss_mb or 0.0, TARGETS["rss_mb"], " MB"),
    ]
    if nginx is not None and nginx.cpu_us and nginx.saturated_cpu_us:
        checks[:0] = [
            ("CPU/req", (sidecar.cpu_us or 0.0) / nginx.cpu_us, TARGETS["cpu_vs_nginx"], "x nginx"),
            (
                "  saturated",
                (sidecar.saturated_cpu_us or 0.0) / nginx.saturated_cpu_us,
                TARGETS["cpu_vs_nginx"],
                "x nginx",
            ),
        ]
    print("\ntargets (sidecar, issue 14):")
    for label, value, target, unit in checks:
        at_least = unit == "x direct"
        verdict = "ok" if (value >= target if at_least else value <= target) else "MISSED"
        bound = ">=" if at_least else "<="
        print(f"  {label:16} {value:8.3f}{unit} (target {bound} {target:g}{unit})  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement and column")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved slices per column")
    parser.add_argument("--rate", type=float, default=300.0, help="req/s for the latency run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="a directory holding another sidecar/ source tree: measured as one more column",
    )
    args = parser.parse_args(argv)
    payload = body()
    workdir = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    python = sys.executable
    model_port, sidecar_port, admin_port = free_port(), free_port(), free_port()
    model_cmd = [
        python,
        "-m",
        "driftline_operator.cli.demo.model_server",
        "--port",
        str(model_port),
    ]
    model_cmd += ["--features", str(N_FEATURES), "--latency-ms", "1"]
    config = sidecar_config(model_port, sidecar_port, admin_port, workdir)
    sidecar_cmd = [python, "-m", "driftline_sidecar.main", "--config", str(config)]
    sidecar_cmd += ["--log-level", "warning"]
    with ExitStack() as running:
        running.enter_context(started(model_cmd, model_port, workdir / "model.log"))
        sidecar = running.enter_context(started(sidecar_cmd, sidecar_port, workdir / "sidecar.log"))
        targets = [
            Target("direct", f"http://127.0.0.1:{model_port}/predict", None),
            Target("sidecar", f"http://127.0.0.1:{sidecar_port}/predict", sidecar.pid),
        ]
        if args.baseline_src is not None:
            port, admin = free_port(), free_port()
            base = workdir / "baseline"
            base.mkdir()
            command = [python, "-m", "driftline_sidecar.main", "--log-level", "warning"]
            command += ["--config", str(sidecar_config(model_port, port, admin, base))]
            path = {"PYTHONPATH": str(args.baseline_src.resolve() / "sidecar")}
            baseline = running.enter_context(started(command, port, base / "log", env=path))
            targets.append(Target("baseline", f"http://127.0.0.1:{port}/predict", baseline.pid))
        if Path(NGINX).exists():
            nginx_port = free_port()
            conf = nginx_config(model_port, nginx_port, workdir)
            nginx_cmd = [NGINX, "-p", str(workdir), "-c", str(conf)]
            nginx_cmd += ["-e", str(workdir / "nginx-error.log"), "-g", "daemon off;"]
            nginx = running.enter_context(started(nginx_cmd, nginx_port, workdir / "nginx.log"))
            targets.append(Target("nginx", f"http://127.0.0.1:{nginx_port}/predict", nginx.pid))
        gc.freeze()  # what is imported and started by now is never garbage
        uvloop.run(measure(targets, payload, args))
        columns = [target.column() for target in targets]
        snapshot = json.loads(urlopen_text(f"http://127.0.0.1:{admin_port}/v1/snapshot"))
    print(f"(sidecar captured {snapshot['capture']['records']} rows, "
          f"dropped {snapshot['capture']['dropped']})")  # fmt: skip
    report(columns, args)
    return 0


def urlopen_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


if __name__ == "__main__":
    raise SystemExit(main())
