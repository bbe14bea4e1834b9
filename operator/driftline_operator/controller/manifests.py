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

from collections.abc import Mapping
from typing import Any

import yaml

from driftline_operator.api.names import (
    CONFIG_KEY,
    GROUP,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MONITOR_LABEL,
    PREDICTION_LOG_PATH,
    VERSION,
    config_map_name,
    monitor_label_value,
)
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.controller.tokens import token_sha256
from driftline_operator.webhook.sidecar import reference_profile_path
from driftline_sidecar.contract.config import (
    FeatureConfig,
    FeedbackConfig,
    ModelConfig,
    PredictionConfig,
    PredictionLogConfig,
    ReservoirConfig,
    RoutingConfig,
    SidecarConfig,
    TracingConfig,
)


def sidecar_config(
    spec: ModelMonitorSpec,
    *,
    profile_path: str | None,
    namespace: str | None = None,
    admin_token_sha256: str | None = None,
    routing: RoutingConfig | None = None,
) -> SidecarConfig:
    """The sidecar's config for every pod of the monitor (see the module docstring
    for what each pod gets on its command line instead). `routing` is what the
    operator decided about traffic (shadow mirror, canary weight); `namespace`,
    the monitor's, is the only one the sidecars will route to (its Services)."""
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
        namespace=namespace,
        admin=f"0.0.0.0:{spec.sidecar.admin_port}",
        profile_path=profile_path,
        admin_token_sha256=admin_token_sha256,
        tracing=TracingConfig(sample_ratio=spec.sidecar.trace_sample_ratio),
        prediction_log=PredictionLogConfig(
            path=PREDICTION_LOG_PATH,
            sample_ratio=spec.sidecar.prediction_log_sample_ratio,
        ),
        routing=routing or RoutingConfig(),
        feedback=_feedback(spec),
        reservoir=_reservoir(spec),
    )


def _reservoir(spec: ModelMonitorSpec) -> ReservoirConfig:
    explain = spec.explain
    # Only the explanations read the reservoir: without them it would sample for nobody.
    return ReservoirConfig(
        enabled=explain.enabled,
        size=explain.reservoir_size,
        window_seconds=explain.reservoir_window.seconds,
    )


def _feedback(spec: ModelMonitorSpec) -> FeedbackConfig:
    quality = spec.quality
    if quality is None:
        return FeedbackConfig()
    return FeedbackConfig(
        enabled=True,
        classes=quality.classes,
        positive_class=quality.positive_class,
        segment=quality.segment,
        score_bins=quality.score_bins,
        max_pending=quality.max_pending,
        ttl_seconds=quality.label_ttl.seconds,
        max_batch=quality.max_batch,
        token_sha256=quality.feedback_token_sha256,
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
    admin_token: str,
    routing: RoutingConfig | None = None,
) -> dict[str, Any]:
    """The ConfigMap `driftline-<monitor>-sidecar` holding `sidecar.yaml`.

    `owner` is the ModelMonitor's body (apiVersion, kind, metadata.name/uid);
    `admin_token` goes in as its SHA-256 only (`tokens.token_sha256`).
    """
    config = sidecar_config(
        spec,
        profile_path=reference_profile_path(spec),
        namespace=namespace,
        admin_token_sha256=token_sha256(admin_token),
        routing=routing,
    )
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
