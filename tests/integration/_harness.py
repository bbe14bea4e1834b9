"""Run the operator for real against a Kubernetes API, for the integration tests.

Two API servers, one test code path (the fixtures are in `conftest.py`):
- the shared control plane (../shared/k8s: etcd, kube-apiserver,
  kube-controller-manager), started once per session when it is there;
- otherwise the emulator (`_apiserver.py`, kmock) in its own process.
A real cluster reached through KUBECONFIG is for tests/e2e/ only.

The operator runs as `python -m driftline_operator.main` with a kubeconfig,
exactly as a developer runs it, and the tests talk to the same API through
the official client. Nothing here waits a fixed time: every wait polls for a
condition, with a generous deadline for a loaded machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import yaml
from kubernetes.client import (
    ApiClient,
    ApiextensionsV1Api,
    AppsV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException

from driftline_operator.api.names import GROUP, PLURAL, SIDECAR_NAME, VERSION, config_map_name
from driftline_operator.controller.handlers import WEBHOOK_PATH
from driftline_operator.controller.tls import write_self_signed

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONTROL_PLANE = ROOT.parent / "shared" / "k8s"
DEADLINE = 90.0  # seconds; polling stops at the first success
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], *, deadline: float = DEADLINE) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what`."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        try:
            last = probe()
        except (ApiException, OSError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
    if process.stdout is not None:
        process.stdout.close()


def serve(
    command: list[str], url: str, log: Path, *, deadline: float = DEADLINE
) -> subprocess.Popen[bytes]:
    """Start `command` with its output in `log`; return once `url` answers 200."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{command[:4]} exited:\n{log.read_text()}")
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200

    try:
        wait_for(url, up, deadline=deadline)
    except BaseException:
        _stop(process)
        raise
    return process


# -- API servers ----------------------------------------------------------------------


@dataclass
class ApiServer:
    kubeconfig: Path
    namespace: str  # a namespace of its own for this test module
    real: bool

    def client(self) -> ApiClient:
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))


def _write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "emulator-ignores-it"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


@contextlib.contextmanager
def emulated_apiserver(tmp: Path, *, namespace: str = "ml") -> Iterator[ApiServer]:
    with (tmp / "apiserver.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "_apiserver.py"), namespace],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # printed once it serves
        if not url.startswith("http"):
            raise RuntimeError(
                f"the API emulator did not start: {(tmp / 'apiserver.log').read_text()}"
            )
        kubeconfig = _write_kubeconfig(tmp / "kubeconfig", url)
        yield ApiServer(kubeconfig, namespace=namespace, real=False)
    finally:
        _stop(process)


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (all bound at once, so the OS hands out different ones)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def control_plane_problem() -> str | None:
    """Why the shared control plane (../shared/k8s) cannot start here, or None."""
    if os.environ.get("DRIFTLINE_TESTS_EMULATOR") == "1":
        return "DRIFTLINE_TESTS_EMULATOR=1 asks for the kmock emulator"
    if not (CONTROL_PLANE / "up.sh").exists():
        return f"no control plane at {CONTROL_PLANE}"
    for binary, package in (("etcd", "etcd-server"), ("kubectl", "kubectl")):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (Debian package {package})"
    return None


@dataclass
class ControlPlane:
    """One kube-apiserver + kube-controller-manager for the whole test session."""

    kubeconfig: Path
    state: Path

    def client(self) -> ApiClient:
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout

    def wait_established(self, crd: str) -> None:
        """Until the CRD `crd` serves. Not `kubectl wait`: kubectl 1.20 fails
        on a CRD whose status has no conditions yet (seen on a loaded machine)."""
        extensions = ApiextensionsV1Api(self.client())

        def established() -> bool:
            status = extensions.read_custom_resource_definition(crd).status
            return any(
                c.type == "Established" and c.status == "True" for c in status.conditions or ()
            )

        wait_for(f"the CRD {crd} to be established", established)


@contextlib.contextmanager
def started_control_plane(state: Path) -> Iterator[ControlPlane]:
    """Start ../shared/k8s on free ports, with the ModelMonitor CRD installed."""
    api, etcd, peer, kcm = _free_ports(4)
    env = {
        **os.environ,
        "K8S_APISERVER_PORT": str(api),
        "K8S_ETCD_PORT": str(etcd),
        "K8S_ETCD_PEER_PORT": str(peer),
        "K8S_KCM_PORT": str(kcm),
        "K8S_START_TIMEOUT": "180",
    }
    try:
        started = subprocess.run(
            [str(CONTROL_PLANE / "up.sh"), str(state)],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"../shared/k8s/up.sh failed:\n{started.stdout}{started.stderr}")
        plane = ControlPlane(Path(started.stdout.strip().splitlines()[-1]), state)
        crd = ROOT / "crds" / f"{PLURAL}.{GROUP}.yaml"
        plane.kubectl("apply", "-f", str(crd))
        plane.wait_established(f"{PLURAL}.{GROUP}")
        yield plane
    finally:
        subprocess.run([str(CONTROL_PLANE / "down.sh"), str(state), "--purge"],
                       capture_output=True, timeout=120, check=False)  # fmt: skip


@contextlib.contextmanager
def namespace_on(plane: ControlPlane, namespace: str) -> Iterator[ApiServer]:
    """A namespace of the shared control plane for one test module, deleted after it."""
    api = plane.client()
    CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    try:
        yield ApiServer(plane.kubeconfig, namespace, real=True)
    finally:
        with contextlib.suppress(ApiException):
            CoreV1Api(api).delete_namespace(namespace)
        api.close()


# -- the operator ---------------------------------------------------------------------


@dataclass
class Operator:
    process: subprocess.Popen[Any]
    log: Path
    webhook_url: str
    cafile: Path
    metrics_url: str


@contextlib.contextmanager
def running_operator(
    server: ApiServer,
    tmp: Path,
    *,
    cert_dir: Path,
    operator_namespace: str,
    extra_env: dict[str, str] | None = None,
    log_name: str = "operator.log",
    namespaces: list[str] | None = None,
) -> Iterator[Operator]:
    """The operator serving `namespaces` (default: the module's namespace)."""
    webhook_port, metrics_port, liveness_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(server.kubeconfig),
        "DRIFTLINE_NAMESPACE": operator_namespace,
        "DRIFTLINE_WEBHOOK_HOST": "127.0.0.1",
        "DRIFTLINE_WEBHOOK_PORT": str(webhook_port),
        "DRIFTLINE_WEBHOOK_CERT_DIR": str(cert_dir),
        "DRIFTLINE_METRICS_PORT": str(metrics_port),
        "DRIFTLINE_SIDECAR_IMAGE": "ghcr.io/driftline/sidecar:test",
        **(extra_env or {}),
    }
    log = tmp / log_name
    liveness = f"http://127.0.0.1:{liveness_port}/healthz"
    command = [sys.executable, "-m", "driftline_operator.controller.main", "--verbose"]
    for namespace in namespaces or [server.namespace]:
        command += ["--namespace", namespace]
    command += ["--liveness", liveness]
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    operator = Operator(
        process=process,
        log=log,
        webhook_url=f"https://127.0.0.1:{webhook_port}",
        cafile=cert_dir / "tls.crt",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
    )
    try:

        def alive() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the operator exited:\n{log.read_text()}")
            with urllib.request.urlopen(liveness, timeout=5) as response:
                return response.status == 200

        wait_for("the operator's liveness probe", alive)
        yield operator
    finally:
        _stop(process)


def injects_sidecar(operator: Operator, namespace: str) -> bool:
    """POST an AdmissionReview for a selected pod; whether the answer adds the sidecar."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "fraud-", "namespace": namespace, "labels": {"app": "fraud"}},
        "spec": {"containers": [{"name": "model", "image": "registry.local/fraud:1",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    }  # fmt: skip
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk,
            "requestResource": gvr, "name": "", "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": None, "dryRun": False,
        },
    }  # fmt: skip
    context = ssl.create_default_context(cafile=str(operator.cafile))
    request = urllib.request.Request(
        operator.webhook_url + WEBHOOK_PATH,
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())["response"]
    assert answer["allowed"] is True
    ops = json.loads(base64.b64decode(answer["patch"])) if answer.get("patch") else []
    return any(
        isinstance(op.get("value"), dict) and op["value"].get("name") == SIDECAR_NAME for op in ops
    )


# -- replicas coordinated by a Lease ---------------------------------------------------


LEASE = "driftline-operator"
ACTING_STARTED = "Activity 'configure_acting' succeeded"


class Replicas:
    """Operator processes started and stopped at will, each named
    `replica-<letter>`, that name being the start of its Lease identity."""

    def __init__(
        self, server: ApiServer, tmp: Path, *, lease_namespace: str, env: dict[str, str]
    ) -> None:
        self.server = server
        self.env = env  # DRIFTLINE_LEASE_* timings and anything else
        self.api = server.client()
        self.tmp = tmp
        self.lease_namespace = lease_namespace
        self.running: dict[str, Operator] = {}
        self._stack = contextlib.ExitStack()
        write_self_signed(tmp / "tls")

    def start(self, name: str) -> Operator:
        env = {
            "DRIFTLINE_LEASE_NAME": LEASE,
            "DRIFTLINE_POD_NAME": name,
            **self.env,
        }
        operator = self._stack.enter_context(
            running_operator(
                self.server, self.tmp, cert_dir=self.tmp / "tls",
                operator_namespace=self.lease_namespace, extra_env=env,
                log_name=f"{name}.log",
            )
        )  # fmt: skip
        self.running[name] = operator
        return operator

    def lease(self) -> dict[str, Any]:
        """The Lease's spec ({} before anyone created it)."""
        try:
            response = CoordinationV1Api(self.api).read_namespaced_lease(
                LEASE, self.lease_namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        spec: dict[str, Any] = json.loads(response.data).get("spec") or {}
        return spec

    def holder(self) -> str | None:
        """The replica holding the Lease (None: nobody, or released)."""
        identity = self.lease().get("holderIdentity")
        return identity.split("_", 1)[0] if identity else None

    def leader(self) -> str:
        return wait_for("a replica holding the Lease", self.holder)

    def acted(self, name: str) -> bool:
        return ACTING_STARTED in self.running[name].log.read_text()

    def close(self) -> None:
        self._stack.close()
        self.api.close()


# -- objects --------------------------------------------------------------------------


def monitor(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelMonitor",
        "metadata": {"name": name},
        "spec": spec,
    }


def create_monitor(api: ApiClient, namespace: str, body: dict[str, Any]) -> None:
    CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def get_monitor(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        response = CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return json.loads(response.data)


def ready_condition(body: dict[str, Any] | None) -> dict[str, Any] | None:
    conditions = ((body or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def wait_for_ready(
    api: ApiClient, namespace: str, name: str, *, status: str, reason: str
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = get_monitor(api, namespace, name)
        condition = ready_condition(body)
        if condition and (condition["status"], condition["reason"]) == (status, reason):
            return body
        return None

    return wait_for(f"ModelMonitor {namespace}/{name} Ready={status} ({reason})", probe)


def events_for(api: ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    response = CoreV1Api(api).list_namespaced_event(namespace, _preload_content=False)
    items = json.loads(response.data).get("items") or []
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]


def read_config_map(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        response = CoreV1Api(api).read_namespaced_config_map(
            name, namespace, _preload_content=False
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return json.loads(response.data)


def run_injected_sidecar(
    api: ApiClient,
    namespace: str,
    monitor_name: str,
    upstream: str,
    workdir: Path,
    *,
    admin_port: int,
    ip: str = "127.0.0.1",
    adjust: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """A sidecar run as injected into a pod at ``ip``: the config the operator
    rendered for ``monitor_name`` (its prediction log in ``workdir``, then
    ``adjust``ed), its admin port on that address; returns the process and
    its proxy address."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_map = read_config_map(api, namespace, config_map_name(monitor_name))
    assert config_map is not None
    config = yaml.safe_load(config_map["data"]["sidecar.yaml"])
    config["prediction_log"]["path"] = str(workdir / "predictions.jsonl")
    if adjust is not None:
        adjust(config)
    (workdir / "sidecar.yaml").write_text(yaml.safe_dump(config))
    proxy = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "driftline_sidecar.main", "--config"]
    command += [str(workdir / "sidecar.yaml"), "--upstream", upstream, "--listen", proxy]
    command += ["--admin", f"{ip}:{admin_port}"]
    return serve(command, f"http://{ip}:{admin_port}/healthz", workdir / "sidecar.log"), proxy


def deployment(name: str, app: str, *, image: str, replicas: int, canary: bool) -> dict[str, Any]:
    track = "canary" if canary else "stable"
    labels = {"app": app, "track": track}
    pod_labels = {**labels, **({"driftline.io/role": "canary"} if canary else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                # No webhook on this control plane: the pods say they carry the sidecar.
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {"driftline.io/injected": "true"},
                },
                "spec": {"containers": [{"name": "model", "image": image}]},
            },
        },
    }


def start_canary(
    api: ApiClient,
    namespace: str,
    app: str,
    *,
    admin_port: int,
    canary_image: str = "model:2",
    stable_replicas: int = 2,
    rollout: dict[str, Any] | None = None,
    **spec: Any,
) -> None:
    """`app`-v1 (image model:1) and its canary `app`-v2 (at zero replicas), and
    the ModelMonitor `app` rolling the canary out with the replicas router:
    steps 25 and 50 every 2 s, rolled back after 2 failures, unless `rollout`
    says otherwise; `spec` adds to the monitor's spec."""
    apps = AppsV1Api(api)
    for name, image, replicas, canary in (
        (f"{app}-v1", "model:1", stable_replicas, False),
        (f"{app}-v2", canary_image, 0, True),
    ):
        body = deployment(name, app, image=image, replicas=replicas, canary=canary)
        apps.create_namespaced_deployment(namespace, body)
    spec = {
        "selector": {"matchLabels": {"app": app}},
        "model": {"name": "fraud", "protocol": "json"},
        "analysis": {"interval": "1s", "timeout": "2s"},
        "sidecar": {"adminPort": admin_port},
        "rollout": {
            "strategy": "canary",
            "stableRef": {"name": f"{app}-v1"},
            "canaryRef": {"name": f"{app}-v2"},
            "router": "replicas",
            "steps": [25, 50],
            "interval": "2s",
            "failureLimit": 2,
            **(rollout or {}),
        },
        **spec,
    }
    create_monitor(api, namespace, monitor(app, spec))
