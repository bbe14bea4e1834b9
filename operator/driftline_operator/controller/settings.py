"""Operator-wide settings, read once from the environment.

The Helm chart sets exactly these variables; each field says its unit. A bad
value fails at start-up with the variable's name, never deep inside a handler.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from driftline_operator.rollout.notifications import (
    PAGERDUTY_EVENTS_URL,
    Receiver,
    ReceiverError,
    parse_receivers,
)

DEFAULT_SIDECAR_IMAGE = "ghcr.io/driftline/sidecar:0.1.0"

# Field name -> environment variable. The chart and the README use these names.
ENVIRONMENT = {
    "sidecar_image": "DRIFTLINE_SIDECAR_IMAGE",
    "namespace": "DRIFTLINE_NAMESPACE",
    "webhook_port": "DRIFTLINE_WEBHOOK_PORT",
    "webhook_host": "DRIFTLINE_WEBHOOK_HOST",
    "webhook_cert_dir": "DRIFTLINE_WEBHOOK_CERT_DIR",
    "metrics_port": "DRIFTLINE_METRICS_PORT",
    "otlp_endpoint": "DRIFTLINE_OTLP_ENDPOINT",
    "pod_name": "DRIFTLINE_POD_NAME",
    "lease_name": "DRIFTLINE_LEASE_NAME",
    "lease_duration_seconds": "DRIFTLINE_LEASE_DURATION_SECONDS",
    "lease_renew_deadline_seconds": "DRIFTLINE_LEASE_RENEW_DEADLINE_SECONDS",
    "lease_retry_period_seconds": "DRIFTLINE_LEASE_RETRY_PERIOD_SECONDS",
    "shutdown_drain_seconds": "DRIFTLINE_SHUTDOWN_DRAIN_SECONDS",
    "shard_namespaces": "DRIFTLINE_SHARD_NAMESPACES",
    "prometheus_rule_labels": "DRIFTLINE_PROMETHEUS_RULE_LABELS",
    "explanations_per_minute": "DRIFTLINE_EXPLANATIONS_PER_MINUTE",
    "explainer_processes": "DRIFTLINE_EXPLAINER_PROCESSES",
    "explainer_url": "DRIFTLINE_EXPLAINER_URL",
    "notification_receivers": "DRIFTLINE_NOTIFICATION_RECEIVERS",
    "notification_dir": "DRIFTLINE_NOTIFICATION_DIR",
    "pagerduty_url": "DRIFTLINE_PAGERDUTY_URL",
}


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


class OperatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sidecar_image: str = Field(
        default=DEFAULT_SIDECAR_IMAGE,
        min_length=1,
        description="Image injected as the sidecar unless a ModelMonitor names its own.",
    )
    namespace: str | None = Field(
        default=None,
        description="The operator's own namespace: its pods are never injected.",
    )
    webhook_port: int = Field(
        default=9443, ge=1, le=65535, description="TCP port of the admission webhook (HTTPS)."
    )
    webhook_host: str = Field(
        default="0.0.0.0", description="Address the admission webhook listens on."
    )
    webhook_cert_dir: Path | None = Field(
        default=None,
        description=(
            "Directory with tls.crt and tls.key for the webhook. Unset: a self-signed "
            "certificate is generated at start-up (local and test runs only)."
        ),
    )
    metrics_port: int = Field(
        default=9100, ge=1, le=65535, description="TCP port of the operator's /metrics."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint given to injected sidecars. Unset: spans go nowhere.",
    )
    pod_name: str | None = Field(
        default=None,
        description="This replica's pod name, the start of its identity in the Lease.",
    )
    lease_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        max_length=253,
        description=(
            "The coordination.k8s.io Lease in `namespace` whose holder alone acts on "
            "ModelMonitors (see `election`). Unset: this process always acts (one replica)."
        ),
    )
    lease_duration_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How long a standby waits, after it last saw the Lease change, to take it over.",
    )
    lease_renew_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long the leader keeps trying to renew before it stops acting.",
    )
    lease_retry_period_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between the leader's renewals and between a standby's attempts.",
    )
    shutdown_drain_seconds: float = Field(
        default=0.0,
        ge=0,
        description=(
            "On SIGTERM, seconds the webhook is still served after the Lease is released, "
            "while the pod leaves the Service's endpoints."
        ),
    )

    # Sharding: several operator Deployments, each with its own Lease, each
    # acting on the ModelMonitors of its own namespaces; every replica of every
    # shard still serves the webhook for all of them. By namespace, not by
    # label: kopf then never sees another shard's monitors, so it never takes
    # their finalizer off (a label filter is applied after kopf has seen them).
    shard_namespaces: tuple[str, ...] = Field(
        default=(),
        description=(
            "Act only on ModelMonitors in these namespaces (comma-separated, globs as kopf "
            "allows). Empty: every namespace the operator serves."
        ),
    )

    prometheus_rule_labels: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Labels for each monitor's PrometheusRule, as key=value,key=value: what the "
            "Prometheus' ruleSelector asks for (kube-prometheus-stack: release=<its release>)."
        ),
    )

    # The hard cap over every monitor's spec.explain.explanationsPerMinute:
    # shap is CPU-bound, and the operator's pod has a CPU limit.
    explanations_per_minute: int = Field(
        default=600,
        ge=0,
        description="Explanations per minute for all ModelMonitors together (0: none).",
    )
    explainer_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes explanations run in (started when a monitor asks).",
    )
    explainer_url: str | None = Field(
        default=None,
        pattern=r"^http://[^/\s]+/?$",
        description=(
            "The explainer Deployment's Service (http://host:port): explanations run there, "
            "not in this process's workers; the budgets above still hold."
        ),
    )

    # Notification receivers (chart value notifications.receivers): their
    # URLs and routing keys are mounted Secret files, never read through the API.
    notification_receivers: str = Field(
        default="",
        description=(
            "Receivers as name=type,name=type (type: slack, teams, pagerduty, webhook); "
            "each one's URL or routing key is the file notification_dir/name."
        ),
    )
    notification_dir: Path = Field(
        default=Path("/etc/driftline/receivers"),
        description="Directory of the receivers' mounted Secret keys, one file per receiver.",
    )
    pagerduty_url: str = Field(
        default=PAGERDUTY_EVENTS_URL,
        min_length=1,
        description="PagerDuty's Events API v2 endpoint (EU accounts: events.eu.pagerduty.com).",
    )

    @field_validator("prometheus_rule_labels", mode="before")
    @classmethod
    def _key_value_pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = [part.strip() for part in value.split(",") if part.strip()]
        bad = [p for p in pairs if "=" not in p or not p.split("=", 1)[0].strip()]
        if bad:
            raise ValueError(f"expected key=value,key=value, got {', '.join(bad)}")
        return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}

    @field_validator("shard_namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def receivers(self) -> dict[str, Receiver]:
        return parse_receivers(self.notification_receivers, self.notification_dir)

    @property
    def certfile(self) -> Path | None:
        return None if self.webhook_cert_dir is None else self.webhook_cert_dir / "tls.crt"

    @property
    def keyfile(self) -> Path | None:
        return None if self.webhook_cert_dir is None else self.webhook_cert_dir / "tls.key"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read the DRIFTLINE_* variables; empty ones count as unset."""
        env = os.environ if environ is None else environ
        values = {
            field: env[variable]
            for field, variable in ENVIRONMENT.items()
            if env.get(variable, "").strip()
        }
        try:
            config = cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{ENVIRONMENT[str(e['loc'][0])]}={values.get(str(e['loc'][0]))!r}: {e['msg']}"
                for e in error.errors()
            )
            raise SettingsError(f"invalid operator settings: {problems}") from None
        if config.lease_name is not None:
            _check_lease(config)
        _check_receivers(config)
        if config.webhook_cert_dir is not None:
            missing = [p for p in (config.certfile, config.keyfile) if p and not p.is_file()]
            if missing:
                names = ", ".join(str(p) for p in missing)
                raise SettingsError(
                    f"DRIFTLINE_WEBHOOK_CERT_DIR={str(config.webhook_cert_dir)!r}: missing {names} "
                    "(mount the webhook's TLS Secret there, or unset it for a self-signed one)"
                )
        return config


def _check_receivers(config: OperatorConfig) -> None:
    """Each declared receiver parses and has its mounted file: a missing
    Secret key fails at start-up, not at the first notification."""
    names = ENVIRONMENT
    try:
        receivers = config.receivers
    except ReceiverError as error:
        raise SettingsError(
            f"{names['notification_receivers']}={config.notification_receivers!r}: {error}"
        ) from None
    missing = sorted(r.name for r in receivers.values() if not r.path.is_file())
    if missing:
        raise SettingsError(
            f"{names['notification_dir']}={str(config.notification_dir)!r}: no file for "
            f"receiver {', '.join(missing)} (mount each receiver's Secret key there, "
            "named after the receiver)"
        )


def _check_lease(config: OperatorConfig) -> None:
    """The Lease's timings hold together as client-go requires: a leader gives
    up (renew deadline) before a standby may take over (duration), and retries
    at least twice within its deadline."""
    names = ENVIRONMENT
    if config.namespace is None:
        raise SettingsError(
            f"{names['lease_name']}={config.lease_name!r} needs {names['namespace']} "
            "(the Lease lives in the operator's own namespace)"
        )
    duration = config.lease_duration_seconds
    deadline = config.lease_renew_deadline_seconds
    retry = config.lease_retry_period_seconds
    if not deadline < duration:
        raise SettingsError(
            f"{names['lease_renew_deadline_seconds']}={deadline:g} must be less than "
            f"{names['lease_duration_seconds']}={duration:g}"
        )
    if not 2 * retry <= deadline:
        raise SettingsError(
            f"{names['lease_retry_period_seconds']}={retry:g} must be at most half of "
            f"{names['lease_renew_deadline_seconds']}={deadline:g}"
        )
