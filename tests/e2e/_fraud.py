"""examples/fraud, as the tests vary it: more Deployments, a rollout, traffic.

Everything starts from the example's own files, so the pods run with its
securityContext, probes and named port, and the monitor with its features,
reference and SLOs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from _cluster import EXAMPLE, Cluster, chart_images, wait_for

TRAFFIC = (Path(__file__).parent / "_traffic.py").read_text()
Obj = dict[str, Any]


def example(file: str) -> Obj:
    return dict(yaml.safe_load((EXAMPLE / file).read_text()))


def model(name: str, app: str, *, version: str, replicas: int, canary: bool = False,
          env: dict[str, str] | None = None) -> Obj:  # fmt: skip
    """The example's Deployment as `name`: pods labelled app=`app`, a track
    (stable or canary, for the Services) and, for a canary, the role label."""
    deployment = copy.deepcopy(example("deployment.yaml"))
    track = {"track": "canary" if canary else "stable"}
    deployment["metadata"] = {"name": name, "labels": {"app": app}}
    deployment["spec"]["replicas"] = replicas
    deployment["spec"]["selector"] = {"matchLabels": {"app": app, **track}}
    template = deployment["spec"]["template"]
    template["metadata"]["labels"] = {
        "app": app, **track, "app.kubernetes.io/version": version,
        **({"driftline.io/role": "canary"} if canary else {}),
    }  # fmt: skip
    (container,) = template["spec"]["containers"]
    container["env"] = [{"name": k, "value": v} for k, v in (env or {}).items()]
    return deployment


def service(name: str, selector: dict[str, str]) -> Obj:
    document = copy.deepcopy(example("service.yaml"))
    document["metadata"] = {"name": name}
    document["spec"]["selector"] = selector
    return document


def monitor(name: str, app: str, **spec: Any) -> Obj:
    """The example's ModelMonitor for pods app=`app`, analysed every 5 s."""
    document = copy.deepcopy(example("modelmonitor.yaml"))
    document["metadata"] = {"name": name}
    document["spec"]["selector"] = {"matchLabels": {"app": app}}
    document["spec"]["analysis"] = {"interval": "5s"}
    document["spec"].update(spec)
    return document


def start_traffic(cluster: Cluster, namespace: str, name: str, url: str, *, rate: float,
                  seconds: float, shift: float = 0.0) -> None:  # fmt: skip
    """A pod (not injected: it is a client) that sends traffic to `url`."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"driftline.io/inject": "false"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "client",
                "image": chart_images()["sidecar"],
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-c", TRAFFIC, url, str(rate), str(seconds), str(shift)],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
            }],
        },
    }  # fmt: skip
    cluster.apply(namespace, pod)


def traffic_result(cluster: Cluster, namespace: str, name: str) -> dict[str, int]:
    """The status codes the traffic pod got, once it is done."""
    wait_for(
        f"traffic pod {namespace}/{name} to finish",
        lambda: (
            cluster.kubectl_json("-n", namespace, "get", "pod", name)["status"]["phase"]
            in ("Succeeded", "Failed")
        ),
        deadline=600,
    )
    return dict(json.loads(cluster.kubectl("-n", namespace, "logs", name).strip().splitlines()[-1]))
