"""The injected sidecar container and its volumes, rendered from a spec."""

from __future__ import annotations

from typing import Any

from driftline_operator.api.names import (
    ADMIN_PORT_NAME,
    CONFIG_DIR,
    CONFIG_KEY,
    CONFIG_PATH,
    CONFIG_VOLUME,
    LOG_DIR,
    LOG_VOLUME,
    REFERENCE_SUBDIR,
    ROLE_LABEL,
    SIDECAR_NAME,
    TMP_VOLUME,
    VERSION_LABEL,
    config_map_name,
)
from driftline_operator.api.spec import ModelMonitorSpec

RUN_AS_USER = 65532  # the "nonroot" user of distroless images


def reference_profile_path(spec: ModelMonitorSpec) -> str | None:
    """Where the injector mounts the reference profile; None without a reference."""
    if spec.reference is None:
        return None
    return f"{CONFIG_DIR}/{REFERENCE_SUBDIR}/{spec.reference.config_map_ref.key}"


def sidecar_container(
    *,
    monitor_name: str,
    spec: ModelMonitorSpec,
    image: str,
    pull_policy: str,
    otlp_endpoint: str | None,
    upstream_port: int,
    proxy: tuple[str, int],
) -> dict[str, Any]:
    """The sidecar container for one pod: it proxies `proxy` (port name, number)
    to the model on `upstream_port` and serves its admin API on spec.sidecar.adminPort."""
    proxy_name, proxy_port = proxy
    admin = spec.sidecar.admin_port
    resources = {
        kind: dict(values)
        for kind, values in (
            ("requests", spec.sidecar.resources.requests),
            ("limits", spec.sidecar.resources.limits),
        )
        if values
    }
    return {
        "name": SIDECAR_NAME,
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": [
            "--config",
            CONFIG_PATH,
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
            "--listen",
            f"0.0.0.0:{proxy_port}",
            "--admin",
            f"0.0.0.0:{admin}",
        ],
        "ports": [
            {"name": proxy_name, "containerPort": proxy_port, "protocol": "TCP"},
            {"name": ADMIN_PORT_NAME, "containerPort": admin, "protocol": "TCP"},
        ],
        "env": _env(monitor_name=monitor_name, spec=spec, otlp_endpoint=otlp_endpoint),
        "resources": resources,
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": LOG_VOLUME, "mountPath": LOG_DIR},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": ADMIN_PORT_NAME},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": ADMIN_PORT_NAME},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def _env(
    *, monitor_name: str, spec: ModelMonitorSpec, otlp_endpoint: str | None
) -> list[dict[str, Any]]:
    endpoint = otlp_endpoint
    version = (
        {"value": spec.model.version}
        if spec.model.version
        else _field(f"metadata.labels['{VERSION_LABEL}']")
    )
    env: list[dict[str, Any]] = [
        {"name": "DRIFTLINE_MONITOR", "value": monitor_name},
        {"name": "DRIFTLINE_POD_NAME", **_field("metadata.name")},
        {"name": "DRIFTLINE_POD_NAMESPACE", **_field("metadata.namespace")},
        # Empty when the label is absent: the sidecar then keeps its config's value.
        {"name": "DRIFTLINE_MODEL_VERSION", **version},
        {"name": "DRIFTLINE_ROLE", **_field(f"metadata.labels['{ROLE_LABEL}']")},
        {"name": "OTEL_SERVICE_NAME", "value": spec.model.name},
        {
            # $(VAR) refers to the variables above; Kubernetes expands it.
            "name": "OTEL_RESOURCE_ATTRIBUTES",
            "value": (
                "k8s.pod.name=$(DRIFTLINE_POD_NAME),"
                "k8s.namespace.name=$(DRIFTLINE_POD_NAMESPACE),"
                f"k8s.container.name={SIDECAR_NAME},"
                f"driftline.monitor={monitor_name}"
            ),
        },
        {"name": "OTEL_TRACES_EXPORTER", "value": "otlp" if endpoint else "none"},
        {"name": "OTEL_METRICS_EXPORTER", "value": "none"},  # metrics are Prometheus'
        {"name": "OTEL_LOGS_EXPORTER", "value": "none"},
        {"name": "OTEL_PROPAGATORS", "value": "tracecontext,baggage"},
    ]
    if endpoint:
        env += [
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "http/protobuf"},
        ]
    return env


def sidecar_volumes(*, monitor_name: str, spec: ModelMonitorSpec) -> list[dict[str, Any]]:
    # One projected volume holds the config and the reference profile: a
    # ConfigMap mount nested inside another is fragile (read-only, and the
    # kubelet's atomic writer owns the directory).
    sources: list[dict[str, Any]] = [
        {
            "configMap": {
                "name": config_map_name(monitor_name),
                "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
            }
        }
    ]
    if spec.reference is not None:
        ref = spec.reference.config_map_ref
        sources.append(
            {
                "configMap": {
                    "name": ref.name,
                    "items": [{"key": ref.key, "path": f"{REFERENCE_SUBDIR}/{ref.key}"}],
                    # A missing profile must not keep the model itself from starting.
                    "optional": True,
                }
            }
        )
    return [
        {"name": CONFIG_VOLUME, "projected": {"sources": sources}},
        # Above the prediction log's own bound (4 x 50 MiB), so rotation, not
        # eviction of the whole pod, is what keeps it small.
        {"name": LOG_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}},
    ]
