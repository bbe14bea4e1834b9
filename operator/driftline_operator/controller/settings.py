"""Operator-wide settings, read once from the environment.

The Helm chart sets exactly these variables; each field says its unit. A bad
value fails at start-up with the variable's name, never deep inside a handler.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
        if config.webhook_cert_dir is not None:
            missing = [p for p in (config.certfile, config.keyfile) if p and not p.is_file()]
            if missing:
                names = ", ".join(str(p) for p in missing)
                raise SettingsError(
                    f"DRIFTLINE_WEBHOOK_CERT_DIR={str(config.webhook_cert_dir)!r}: missing {names} "
                    "(mount the webhook's TLS Secret there, or unset it for a self-signed one)"
                )
        return config


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
