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
        if config.webhook_cert_dir is not None:
            missing = [p for p in (config.certfile, config.keyfile) if p and not p.is_file()]
            if missing:
                names = ", ".join(str(p) for p in missing)
                raise SettingsError(
                    f"DRIFTLINE_WEBHOOK_CERT_DIR={str(config.webhook_cert_dir)!r}: missing {names} "
                    "(mount the webhook's TLS Secret there, or unset it for a self-signed one)"
                )
        return config
