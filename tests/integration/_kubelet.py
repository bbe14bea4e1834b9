"""A stand-in kubelet for a control plane without nodes, as the kwok project does it.

The Deployment and ReplicaSet controllers of the shared control plane create
real pods; nothing runs them. `FakeKubelet` watches one namespace (polling),
and for each new pod starts a small HTTP server on a loopback address of its
own (127.0.0.N) that answers `/v1/snapshot` like the pod's sidecar would,
then marks the pod Running and Ready at that address. Deleted pods lose
their server and are removed for good (no kubelet would confirm it).

What a pod's "sidecar" reports is crafted from its pod: the role from the
`driftline.io/role` label, and its health from its image (an image with
`bad` in it answers 30 % of its requests with a 500 and is slow). Counts
grow with time at `RATE` requests a second, as real cumulative counters do.
"""

from __future__ import annotations

import http.server
import itertools
import threading
import time
import uuid
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from driftline_sidecar.contract.snapshot import Histogram, ProcessInfo, Snapshot

RATE = 100.0  # requests a second per pod
BAD_ERROR_RATIO = 0.3
GOOD_ERROR_RATIO = 0.0


class _PodSidecar:
    """The snapshot a pod's sidecar would serve, counting from its start."""

    def __init__(self, *, model: str, role: str, version: str, bad: bool) -> None:
        self.started = time.time()
        self.process = ProcessInfo(id=uuid.uuid4().hex, pid=1, start_time=self.started)
        self.model, self.role, self.version, self.bad = model, role, version, bad

    def snapshot(self) -> Snapshot:
        now = time.time()
        total = int(RATE * (now - self.started))
        errors = int(total * (BAD_ERROR_RATIO if self.bad else GOOD_ERROR_RATIO))
        latency = Histogram()
        # Every request in one bucket: ~10 ms when healthy, ~400 ms when bad.
        bucket = next(i for i, b in enumerate(latency.bounds) if b >= (0.4 if self.bad else 0.01))
        latency.counts[bucket] = total
        latency.sum = total * (0.4 if self.bad else 0.01)
        return Snapshot(
            process=self.process,
            taken_at=now,
            model=self.model,
            version=self.version,
            role=self.role,  # type: ignore[arg-type]
            requests={"200": total - errors, "500": errors} if total else {},
            latency=latency,
            upstream_latency=latency,
        )


def _serve(ip: str, port: int, sidecar: _PodSidecar) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/v1/snapshot":
                self.send_error(404)
                return
            body = sidecar.snapshot().model_dump_json().encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((ip, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class FakeKubelet:
    def __init__(self, api: ApiClient, namespace: str, *, admin_port: int, model: str) -> None:
        self._core = CoreV1Api(api)
        self._namespace = namespace
        self._admin_port = admin_port
        self._model = model
        self._addresses = (f"127.0.{n // 250}.{n % 250 + 2}" for n in itertools.count(1))
        self._servers: dict[str, Any] = {}  # pod name: what serves it (`serve`)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> FakeKubelet:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._sync()
            except (ApiException, OSError) as error:  # the next round tries again
                self.errors.append(repr(error))

    def _sync(self) -> None:
        pods = self._core.list_namespaced_pod(self._namespace).items
        for pod in pods:
            name = pod.metadata.name
            if pod.metadata.deletion_timestamp is not None:
                server = self._servers.pop(name, None)
                if server is not None:
                    server.shutdown()
                    server.server_close()
                self._core.delete_namespaced_pod(name, self._namespace, grace_period_seconds=0)
            elif name not in self._servers:
                self._start(pod)

    def serve(self, pod: Any, ip: str) -> Any:
        """What answers at the pod's address (`ip`, the admin port): anything
        with `shutdown()` and `server_close()`. A subclass may run a real sidecar."""
        labels = pod.metadata.labels or {}
        image = pod.spec.containers[0].image
        sidecar = _PodSidecar(
            model=self._model,
            role=labels.get("driftline.io/role", "stable"),
            version=image.rsplit(":", 1)[-1],
            bad="bad" in image,
        )
        return _serve(ip, self._admin_port, sidecar)

    def _start(self, pod: Any) -> None:
        ip = next(self._addresses)
        self._servers[pod.metadata.name] = self.serve(pod, ip)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        containers = [
            {
                "name": c.name,
                "image": c.image,
                "imageID": c.image,
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod.spec.containers
        ]
        status = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": conditions,
            "containerStatuses": containers,
        }
        self._core.patch_namespaced_pod_status(
            pod.metadata.name, self._namespace, {"status": status}
        )
