"""Pod mutation: which pods a ModelMonitor selects, and the JSON patch
(RFC 6902) that adds the Driftline sidecar to one of them.

Pure functions on plain dicts (the pod as the admission webhook receives it).

How the sidecar takes over the model's port: the model container's named port
(say `http`, 8000) is renamed (`http-model`), and the sidecar declares a port
with the original name on a free number (8080 unless taken). A Service with
`targetPort: http` then reaches the sidecar, which proxies to
`127.0.0.1:8000`. The model's own probes that used the old name are pointed at
the new one, so they still check the model itself. A model port without a
name cannot be taken over (a Service targets it by number, and the model
still listens on that number); the sidecar's proxy port is then named
`driftline-proxy`, and a Service must target that name to go through it.

Canary pods carry the label `driftline.io/role: canary` (shadow pods
`shadow`); the sidecar reads it through the downward API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubernetes.utils import parse_quantity

from driftline_operator.api.names import (
    INJECT_ANNOTATION,
    INJECTED_ANNOTATION,
    MONITOR_ANNOTATION,
    MONITORED_LABEL,
    ROLE_LABEL,
    SIDECAR_NAME,
)
from driftline_operator.api.selectors import selects
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.sources import PodTarget
from driftline_operator.webhook.sidecar import sidecar_container, sidecar_volumes

UNNAMED_PROXY_PORT_NAME = "driftline-proxy"
DEFAULT_PROXY_PORT = 8080


Patch = list[dict[str, Any]]


class InjectionError(Exception):
    """The pod cannot be injected as the ModelMonitor asks; the message says why."""


@dataclass(frozen=True)
class InjectSettings:
    """Operator-wide defaults; a ModelMonitor's `spec.sidecar` wins over them."""

    sidecar_image: str
    pull_policy: str = "IfNotPresent"
    otlp_endpoint: str | None = None


# -- selection -------------------------------------------------------------------


def is_injected(pod: Mapping[str, Any]) -> bool:
    metadata = pod.get("metadata") or {}
    if (metadata.get("annotations") or {}).get(INJECTED_ANNOTATION) == "true":
        return True
    return any(c.get("name") == SIDECAR_NAME for c in _containers(pod))


def pod_targets(pods: Iterable[Mapping[str, Any]], spec: ModelMonitorSpec) -> list[PodTarget]:
    """The pods whose sidecar can be asked for a snapshot: selected, injected,
    running and with an IP. Others are counted in status, not collected."""
    targets: list[PodTarget] = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        pod_status = pod.get("status") or {}
        if metadata.get("deletionTimestamp") or pod_status.get("phase") != "Running":
            continue
        if not pod_status.get("podIP") or not selects(spec.selector, labels):
            continue
        if not is_injected(dict(pod)):
            continue
        targets.append(
            PodTarget(
                name=metadata.get("name", ""),
                ip=pod_status["podIP"],
                admin_port=spec.sidecar.admin_port,
                role=labels.get(ROLE_LABEL, "stable"),
                model_port=_upstream_port(pod),
            )
        )
    return sorted(targets, key=lambda t: t.name)


def _upstream_port(pod: Mapping[str, Any]) -> int | None:
    """The model's own port, as the injected sidecar's --upstream names it."""
    for container in _containers(pod):
        if container.get("name") != SIDECAR_NAME:
            continue
        args = [str(a) for a in container.get("args") or []]
        if "--upstream" in args[:-1]:
            return urlsplit(args[args.index("--upstream") + 1]).port
    return None


def opted_out(pod: Mapping[str, Any]) -> bool:
    metadata = pod.get("metadata") or {}
    return any(
        str((metadata.get(where) or {}).get(INJECT_ANNOTATION, "")).lower() == "false"
        for where in ("annotations", "labels")
    )


# -- the patch -------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelPort:
    container: int  # index into spec.containers
    number: int
    index: int | None = None  # index into the container's ports, when declared
    name: str | None = None


def mutate(
    pod: Mapping[str, Any],
    *,
    monitor_name: str,
    spec: ModelMonitorSpec,
    settings: InjectSettings,
) -> Patch:
    """The JSON patch that injects the sidecar; empty for an injected or opted-out pod.

    Raises InjectionError when the pod does not fit the monitor (no such port
    or container, a port clash, impossible resources).
    """
    if is_injected(pod) or opted_out(pod):
        return []
    who = _describe(pod)
    model = _find_model_port(pod, spec, who=who)
    used = _used_ports(pod) | {model.number}
    admin = spec.sidecar.admin_port
    if admin in used:
        raise InjectionError(
            f"{who}: port {admin} is already used in the pod; set spec.sidecar.adminPort "
            f"of ModelMonitor {monitor_name} to a free port"
        )
    proxy = next(p for p in range(DEFAULT_PROXY_PORT, 65536) if p not in used | {admin})
    _check_resources(spec, who=who)

    patch: Patch = []
    proxy_name = UNNAMED_PROXY_PORT_NAME
    if model.name is not None and model.index is not None:
        proxy_name = model.name
        patch += _rename_model_port(pod, model, _port_names(pod))
    sidecar = sidecar_container(
        monitor_name=monitor_name,
        spec=spec,
        image=spec.sidecar.image or settings.sidecar_image,
        pull_policy=settings.pull_policy,
        otlp_endpoint=spec.sidecar.otlp_endpoint or settings.otlp_endpoint,
        upstream_port=model.number,
        proxy=(proxy_name, proxy),
    )
    patch.append({"op": "add", "path": "/spec/containers/-", "value": sidecar})
    patch += _add_volumes(pod, monitor_name=monitor_name, spec=spec, who=who)
    if not pod.get("metadata"):
        patch.append({"op": "add", "path": "/metadata", "value": {}})
    patch += _add_entries(pod, "labels", {MONITORED_LABEL: "true"})
    annotations = {INJECTED_ANNOTATION: "true", MONITOR_ANNOTATION: monitor_name}
    existing = (pod.get("metadata") or {}).get("annotations") or {}
    if not any(key.startswith("prometheus.io/") for key in existing):
        # Never take over scrape hints the model already has: its own metrics
        # would stop being scraped. Such pods need a PodMonitor for driftline-admin.
        annotations |= {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(admin),
            "prometheus.io/path": "/metrics",
        }
    patch += _add_entries(pod, "annotations", annotations)
    return patch


def _containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("spec") or {}).get("containers") or [])


def _describe(pod: Mapping[str, Any]) -> str:
    """`pod ns/name` (the webhook often sees only generateName)."""
    metadata = pod.get("metadata") or {}
    name = metadata.get("name") or f"{metadata.get('generateName', '')}<generated>"
    namespace = metadata.get("namespace")
    return f"pod {namespace}/{name}" if namespace else f"pod {name}"


def _find_model_port(pod: Mapping[str, Any], spec: ModelMonitorSpec, *, who: str) -> _ModelPort:
    containers = _containers(pod)
    wanted = spec.model.port
    # Port names always hold a letter, so "8000" can only mean the number.
    if isinstance(wanted, str) and wanted.isdigit():
        wanted = int(wanted)
    candidates: Sequence[int] = range(len(containers))
    if spec.model.container is not None:
        candidates = [i for i in candidates if containers[i].get("name") == spec.model.container]
        if not candidates:
            names = ", ".join(c.get("name", "?") for c in containers)
            raise InjectionError(
                f"{who} has no container {spec.model.container!r} (spec.model.container); "
                f"its containers are: {names}"
            )
    for i in candidates:
        for j, port in enumerate(containers[i].get("ports") or []):
            if (isinstance(wanted, str) and port.get("name") == wanted) or (
                isinstance(wanted, int) and port.get("containerPort") == wanted
            ):
                return _ModelPort(i, int(port["containerPort"]), j, port.get("name"))
    if isinstance(wanted, int) and len(candidates) == 1:
        return _ModelPort(candidates[0], wanted)  # listening on a port it does not declare
    declared = ", ".join(
        f"{c.get('name')}:{p.get('name') or '-'}/{p.get('containerPort')}"
        for c in containers
        for p in c.get("ports") or []
    )
    raise InjectionError(
        f"{who} has no container port {wanted!r} (spec.model.port); declared ports "
        f"(container:name/number): {declared or 'none'}. Set spec.model.port"
        + (" and spec.model.container" if isinstance(wanted, int) else "")
        + " to the port clients reach."
    )


def _all_containers(pod: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod.get("spec") or {}
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def _used_ports(pod: Mapping[str, Any]) -> set[int]:
    # Init containers count too: sidecar-style ones run beside the model.
    return {
        int(p["containerPort"])
        for c in _all_containers(pod)
        for p in c.get("ports") or []
        if "containerPort" in p
    }


def _port_names(pod: Mapping[str, Any]) -> set[str]:
    return {p["name"] for c in _all_containers(pod) for p in c.get("ports") or [] if "name" in p}


_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def renamed_port(name: str, taken: set[str]) -> str:
    """The model port's new name: `<name>-model`, a valid IANA_SVC_NAME
    (at most 15 characters, no `--`) not used elsewhere in the pod."""
    for suffix in ("-model", *(f"-model{n}" for n in range(2, 10))):
        base = name[: 15 - len(suffix)].rstrip("-")
        candidate = f"{base}{suffix}"
        if candidate not in taken and "--" not in candidate and _SVC_NAME.match(candidate):
            return candidate
    raise InjectionError(f"no free name to rename port {name!r} to")


def _rename_model_port(pod: Mapping[str, Any], model: _ModelPort, taken: set[str]) -> Patch:
    assert model.name is not None and model.index is not None
    new = renamed_port(model.name, taken)
    container = _containers(pod)[model.container]
    base = f"/spec/containers/{model.container}"
    patch: Patch = [{"op": "replace", "path": f"{base}/ports/{model.index}/name", "value": new}]
    # Named probe ports resolve within the container: keep them on the model.
    for field, handlers in _port_users(container):
        for handler in ("httpGet", "tcpSocket"):
            if (handlers.get(handler) or {}).get("port") == model.name:
                patch.append(
                    {"op": "replace", "path": f"{base}/{field}/{handler}/port", "value": new}
                )
    return patch


def _port_users(container: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(JSON-pointer suffix, handler holder) for every probe and lifecycle hook."""
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if container.get(probe):
            yield probe, container[probe]
    for hook in ("postStart", "preStop"):
        if (container.get("lifecycle") or {}).get(hook):
            yield f"lifecycle/{hook}", container["lifecycle"][hook]


def _check_resources(spec: ModelMonitorSpec, *, who: str) -> None:
    resources = spec.sidecar.resources
    try:
        requests = {k: parse_quantity(v) for k, v in resources.requests.items()}
        limits = {k: parse_quantity(v) for k, v in resources.limits.items()}
    except ValueError as error:
        raise InjectionError(f"{who}: spec.sidecar.resources: {error}") from None
    for name, limit in limits.items():
        if name in requests and requests[name] > limit:
            raise InjectionError(
                f"{who}: spec.sidecar.resources.requests.{name} "
                f"{resources.requests[name]} exceeds the limit {resources.limits[name]}"
            )


def _add_volumes(
    pod: Mapping[str, Any], *, monitor_name: str, spec: ModelMonitorSpec, who: str
) -> Patch:
    volumes = sidecar_volumes(monitor_name=monitor_name, spec=spec)
    existing = (pod.get("spec") or {}).get("volumes")
    if not existing:
        return [{"op": "add", "path": "/spec/volumes", "value": volumes}]
    clash = {v["name"] for v in volumes} & {v.get("name") for v in existing}
    if clash:
        raise InjectionError(f"{who} already has volumes named {', '.join(sorted(clash))}")
    return [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]


def _escape(key: str) -> str:
    """A map key as a JSON-pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _add_entries(pod: Mapping[str, Any], field: str, entries: dict[str, str]) -> Patch:
    """Add labels or annotations, creating the map when the pod has none."""
    if not (pod.get("metadata") or {}).get(field):
        return [{"op": "add", "path": f"/metadata/{field}", "value": entries}]
    return [
        {"op": "add", "path": f"/metadata/{field}/{_escape(key)}", "value": value}
        for key, value in entries.items()
    ]
