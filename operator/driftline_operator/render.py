"""Render a ModelMonitor into what its pods' sidecars need: the sidecar config
(`SidecarConfig`, the sidecar's own schema), the ConfigMap that carries it, and
the sidecar container and volumes that the injector (`inject.py`) adds to a pod.

One ConfigMap serves every pod of a monitor, so it holds only what is the same
for all of them. What differs per pod is passed by the injector (`inject.py`)
on the sidecar's command line and environment, and wins over the file:

- `--upstream http://127.0.0.1:<model port>`, `--listen 0.0.0.0:<proxy port>`,
  `--admin 0.0.0.0:<admin port>`: the model's port number is known only from
  the pod's containers, and the proxy port is chosen not to clash with them.
  The file's `upstream` and `listen` are therefore the schema's defaults.
- `DRIFTLINE_MODEL_VERSION` (the pod's `app.kubernetes.io/version` label
  unless `spec.model.version` is set) and `DRIFTLINE_ROLE` (the pod's
  `driftline.io/role` label: canary pods carry `driftline.io/role: canary`).

The layout of files inside the sidecar container is fixed here and used by
the injector, so the two cannot disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import yaml

from driftline_operator.crd import GROUP, KIND, VERSION, ModelMonitorSpec
from driftline_sidecar.config import (
    FeatureConfig,
    ModelConfig,
    PredictionConfig,
    PredictionLogConfig,
    RoutingConfig,
    SidecarConfig,
    TracingConfig,
)

CONFIG_DIR = "/etc/driftline"
CONFIG_KEY = "sidecar.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
ADMIN_TOKEN_KEY = "token"  # the key of the admin token Secret
ADMIN_TOKEN_SUBPATH = "admin/token"
ADMIN_TOKEN_PATH = f"{CONFIG_DIR}/{ADMIN_TOKEN_SUBPATH}"
REFERENCE_SUBDIR = "reference"
LOG_DIR = "/var/log/driftline"  # a writable emptyDir: the root filesystem is read-only
PREDICTION_LOG_PATH = f"{LOG_DIR}/predictions.jsonl"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "driftline"
MONITOR_LABEL = "driftline.io/monitor"

SIDECAR_NAME = "driftline-sidecar"
ADMIN_PORT_NAME = "driftline-admin"
RUN_AS_USER = 65532  # the "nonroot" user of distroless images
ROLE_LABEL = "driftline.io/role"
VERSION_LABEL = "app.kubernetes.io/version"
CONFIG_VOLUME = "driftline-config"
LOG_VOLUME = "driftline-log"
TMP_VOLUME = "driftline-tmp"

_MAX_NAME = 253  # a ConfigMap name is a DNS subdomain
_MAX_LABEL_VALUE = 63


def _shortened(text: str, room: int) -> str:
    """text if it fits in room characters, else a prefix and a hash of the whole."""
    if len(text) <= room:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[: room - len(digest) - 1].rstrip('-.')}-{digest}"


def config_map_name(monitor_name: str) -> str:
    """`driftline-<monitor>-sidecar` (a hash stands in for the end of very long names)."""
    room = _MAX_NAME - len("driftline--sidecar")
    return f"driftline-{_shortened(monitor_name, room)}-sidecar"


def admin_secret_name(monitor_name: str) -> str:
    """`driftline-<monitor>-admin`: the Secret with the sidecars' admin token."""
    room = _MAX_NAME - len("driftline--admin")
    return f"driftline-{_shortened(monitor_name, room)}-admin"


def monitor_label_value(monitor_name: str) -> str:
    """The monitor's name as a label value (at most 63 characters)."""
    return _shortened(monitor_name, _MAX_LABEL_VALUE)


def reference_profile_path(spec: ModelMonitorSpec) -> str | None:
    """Where the injector mounts the reference profile; None without a reference."""
    if spec.reference is None:
        return None
    return f"{CONFIG_DIR}/{REFERENCE_SUBDIR}/{spec.reference.config_map_ref.key}"


def sidecar_config(
    spec: ModelMonitorSpec,
    *,
    profile_path: str | None,
    routing: RoutingConfig | None = None,
) -> SidecarConfig:
    """The sidecar's config for every pod of the monitor (see the module docstring
    for what each pod gets on its command line instead). `routing` is what the
    operator decided about traffic (shadow mirror, canary weight)."""
    model = spec.model
    return SidecarConfig(
        model=ModelConfig(
            name=model.name,
            version=model.version or "unknown",
            protocol=model.protocol,
            features=[
                FeatureConfig(name=f.name, path=f.path, type=f.type, pii=f.pii)
                for f in model.features
            ],
            prediction=PredictionConfig(
                path=model.prediction.path,
                score=model.prediction.score,
                task=model.prediction.task,
            ),
        ),
        admin=f"0.0.0.0:{spec.sidecar.admin_port}",
        profile_path=profile_path,
        admin_token_file=ADMIN_TOKEN_PATH,
        tracing=TracingConfig(sample_ratio=spec.sidecar.trace_sample_ratio),
        prediction_log=PredictionLogConfig(
            path=PREDICTION_LOG_PATH,
            sample_ratio=spec.sidecar.prediction_log_sample_ratio,
        ),
        routing=routing or RoutingConfig(),
    )


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference to a ModelMonitor body, so deleting the monitor lets
    Kubernetes' garbage collector delete what the operator made for it."""
    metadata = owner.get("metadata") or {}
    if not metadata.get("name") or not metadata.get("uid"):
        raise ValueError("the owner ModelMonitor needs metadata.name and metadata.uid")
    return {
        "apiVersion": owner.get("apiVersion") or f"{GROUP}/{VERSION}",
        "kind": owner.get("kind") or KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def config_map(
    monitor_name: str,
    namespace: str,
    spec: ModelMonitorSpec,
    *,
    owner: dict[str, Any],
    routing: RoutingConfig | None = None,
) -> dict[str, Any]:
    """The ConfigMap `driftline-<monitor>-sidecar` holding `sidecar.yaml`.

    `owner` is the ModelMonitor's body (apiVersion, kind, metadata.name/uid).
    """
    config = sidecar_config(spec, profile_path=reference_profile_path(spec), routing=routing)
    document = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    header = (
        f"# Rendered by the driftline operator from ModelMonitor {namespace}/{monitor_name}.\n"
        "# Edit the ModelMonitor instead: changes here are overwritten.\n"
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(monitor_name),
            "namespace": namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                MONITOR_LABEL: monitor_label_value(monitor_name),
            },
            "ownerReferences": [owner_reference(owner)],
        },
        "data": {CONFIG_KEY: header + document},
    }


def admin_secret(
    monitor_name: str, namespace: str, *, token: str, owner: dict[str, Any]
) -> dict[str, Any]:
    """The Secret holding the sidecars' admin token (mounted at ADMIN_TOKEN_PATH)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": admin_secret_name(monitor_name),
            "namespace": namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                MONITOR_LABEL: monitor_label_value(monitor_name),
            },
            "ownerReferences": [owner_reference(owner)],
        },
        "stringData": {ADMIN_TOKEN_KEY: token},
    }


def shadow_routing(spec: ModelMonitorSpec, *, namespace: str, port: int) -> RoutingConfig:
    """shadow: mirror spec.rollout.shadowPercent of requests to the shadow Service
    (`port` is its number: a named Service port resolved by the caller)."""
    service = spec.rollout.shadow_service
    if service is None:
        return RoutingConfig()
    return RoutingConfig(
        shadow_url=f"http://{service.name}.{namespace}.svc:{port}",
        shadow_percent=spec.rollout.shadow_percent,
    )


# -- the sidecar container ----------------------------------------------------


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
    # The admin token; optional, so a monitor whose Secret is not written yet
    # never keeps the model from starting (config writes are refused until it is).
    sources.append(
        {
            "secret": {
                "name": admin_secret_name(monitor_name),
                "items": [{"key": ADMIN_TOKEN_KEY, "path": ADMIN_TOKEN_SUBPATH}],
                "optional": True,
            }
        }
    )
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
