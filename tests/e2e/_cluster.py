"""The cluster the end-to-end tests run on, and how they talk to it.

Two ways to get one, one code path after that (the fixtures are in
`conftest.py`):
- node mode of ../shared/k8s (`up.sh --node`: a real single-node Kubernetes
  1.20 with kubelet, containerd, kube-proxy and Service DNS on this machine),
  brought up by the tests themselves, with both images built from the
  `Dockerfile` by `image.sh` and tagged as the chart's defaults name them;
- a cluster of your own through KUBECONFIG (a `kind-*` context, or the one
  DRIFTLINE_TEST_CONTEXT names), with the images already on its nodes
  (`make kind-load`).
Either way the tests install the chart themselves, as a user would.

The base image archive is cached between runs on the same machine
(`~/.cache/driftline/k8s-images`, K8S_IMAGE_CACHE of base-image.sh); nothing
else outlives the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import yaml
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT.parent / "shared" / "k8s"
EXAMPLE = ROOT / "examples" / "fraud"
CHART = ROOT / "charts" / "driftline"
IMAGE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "driftline"
RELEASE, RELEASE_NAMESPACE = "driftline", "driftline-system"
T = TypeVar("T")


def chart_images() -> dict[str, str]:
    """The images the chart's defaults name: {"operator": ..., "sidecar": ...}."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    tag = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    return {
        part: f"{values[part]['image']['repository']}:{values[part]['image']['tag'] or tag}"
        for part in ("operator", "sidecar")
    }


def helm_binary() -> str | None:
    """helm on PATH, else the one scripts/install-helm.sh put beside this Python."""
    beside_python = Path(sys.executable).parent / "helm"
    return shutil.which("helm") or (str(beside_python) if beside_python.exists() else None)


def wait_for(what: str, probe: Callable[[], T | None], *, deadline: float = 180.0) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what`."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        try:
            last = probe()
        except (ApiException, OSError, subprocess.CalledProcessError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(1)
    raise AssertionError(f"timed out after {deadline:.0f}s waiting for {what}; last: {last!r}")


@dataclass
class Cluster:
    kubeconfig: Path
    artifacts: Path  # logs and listings kept for a failed run

    def client(self) -> ApiClient:
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def run(self, tool: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """kubectl or helm against this cluster; unless `check` is False,
        raises with its output when it fails (else returns that output)."""
        binary = helm_binary() if tool == "helm" else shutil.which(tool)
        result = subprocess.run(
            [str(binary), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if not check:
            return result.stdout + result.stderr
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, f"{tool} {' '.join(args)}", result.stdout, result.stderr
            )
        return result.stdout

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.run("kubectl", *args, stdin=stdin)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def apply(self, namespace: str, *documents: dict[str, Any]) -> None:
        self.kubectl("-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump_all(documents))


# -- node mode -------------------------------------------------------------------


def node_mode_problem() -> str | None:
    """Why node mode cannot start on this machine, or None. up.sh checks the
    rest itself and says so ("node mode: ...")."""
    if not (K8S / "up.sh").exists():
        return f"no ../shared/k8s at {K8S}"
    if os.geteuid() != 0:
        return "node mode needs root (kubelet, containerd, iptables)"
    tools = {
        "etcd": "etcd-server", "containerd": "containerd", "runc": "runc",
        "buildah": "buildah", "debootstrap": "debootstrap", "gcc": "gcc",
        "iptables": "iptables", "conntrack": "conntrack", "kubectl": "kubectl",
    }  # fmt: skip
    missing = sorted({package for tool, package in tools.items() if shutil.which(tool) is None})
    if missing:
        return f"node mode needs the Debian packages {', '.join(missing)} (scripts/setup.sh)"
    if helm_binary() is None:
        return "helm is not installed (scripts/install-helm.sh)"
    return None


class NodeModeUnavailable(Exception):
    """up.sh refused this machine (its own "node mode: ..." check)."""


def _script(name: str, *args: str, log: Path, env: dict[str, str] | None = None) -> str:
    """Run one of ../shared/k8s's scripts, its output into `log`; its last line back."""
    with log.open("a") as out:
        out.write(f"$ {name} {' '.join(args)}\n")
        out.flush()
        result = subprocess.run(
            [str(K8S / name), *args], env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=out, text=True, timeout=900, check=False,
        )  # fmt: skip
        out.write(result.stdout)
    if result.returncode != 0:
        text = log.read_text()
        refusal = [line for line in text.splitlines() if line.startswith("node mode: ")]
        if name == "up.sh" and refusal:
            raise NodeModeUnavailable(refusal[-1])
        raise RuntimeError(f"{name} {' '.join(args)} failed:\n{text[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


@contextmanager
def node_cluster(state: Path, artifacts: Path) -> Iterator[Cluster]:
    """A node-mode cluster with Driftline's images on it; torn down afterwards."""
    log = artifacts / "node-mode.log"
    try:
        kubeconfig = Path(_script("up.sh", "--node", str(state), log=log))
        cache = {"K8S_IMAGE_CACHE": str(IMAGE_CACHE / "k8s-images")}
        base = _script("base-image.sh", str(state), log=log, env=cache)
        for part, image in chart_images().items():
            _script(
                "image.sh", str(state), image, str(ROOT),
                "-f", str(ROOT / "Dockerfile"), "--target", part, "--build-arg", f"BASE={base}",
                log=log,
            )  # fmt: skip
        yield Cluster(kubeconfig, artifacts)
    finally:
        if (state / "logs").is_dir():
            shutil.copytree(state / "logs", artifacts / "node-logs", dirs_exist_ok=True)
        _script("down.sh", str(state), "--purge", log=log)


# -- a cluster of your own ---------------------------------------------------------


def own_cluster_problem(path: str) -> str | None:
    """Why KUBECONFIG's cluster is not one to run on, or None."""
    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=path)
    except Exception as error:  # any failure to read it means: skip, and say why
        return f"KUBECONFIG={path} cannot be read: {error}"
    context = active["name"]
    if context != os.environ.get("DRIFTLINE_TEST_CONTEXT") and not context.startswith("kind-"):
        return (
            f"refusing to run against context {context!r}: use a kind cluster or set "
            "DRIFTLINE_TEST_CONTEXT to the context meant for tests"
        )
    if helm_binary() is None or shutil.which("kubectl") is None:
        return "helm and kubectl are needed on PATH"
    return None
