"""The sidecar's configuration: one document, rendered by the operator from a
ModelMonitor into a ConfigMap, or written by hand for a sidecar run alone.

This schema is a contract between the operator and the sidecar (DESIGN.md,
"Sidecar"); change it in both in one step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yarl import URL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Protocol = Literal["auto", "kserve-v1", "open-inference-v2", "json"]
Role = Literal["stable", "canary", "shadow"]


class FeatureConfig(_Strict):
    """One input feature and where to find it in a request row."""

    name: str = Field(min_length=1)
    # json protocol: dotted path inside a row ("amount", "user.country");
    # kserve-v1 rows given as lists and v2 tensors: the column index as a string,
    # or the v2 input tensor name. Defaults to the feature name.
    path: str | None = None
    type: Literal["numeric", "categorical"] = "numeric"
    pii: Literal["none", "hash"] = "none"
    # Fixed interior bin edges used while no reference profile is loaded.
    bins: list[float] | None = None

    @property
    def location(self) -> str:
        return self.path or self.name


class PredictionConfig(_Strict):
    """Where the prediction (class or value) and its score are in a response row."""

    path: str | None = "prediction"
    score: str | None = None
    task: Literal["classification", "regression"] = "classification"
    # Fixed interior bin edges for the score while no reference profile is loaded.
    bins: list[float] | None = None


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    version: str = "unknown"
    role: Role = "stable"
    protocol: Protocol = "auto"
    features: list[FeatureConfig] = Field(default_factory=list)
    prediction: PredictionConfig = Field(default_factory=PredictionConfig)

    @field_validator("features")
    @classmethod
    def _unique_names(cls, features: list[FeatureConfig]) -> list[FeatureConfig]:
        names = [f.name for f in features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names must be unique, repeated: {', '.join(duplicates)}")
        return features


class CaptureConfig(_Strict):
    enabled: bool = True
    max_body_bytes: int = Field(default=1 << 20, ge=0)  # larger bodies pass uncaptured
    # A compressed response (gzip, deflate) is decoded for capture up to this
    # many bytes; past it the response is not read (its request still is).
    max_decoded_bytes: int = Field(default=8 << 20, ge=0)
    queue_size: int = Field(default=10_000, ge=1)  # requests waiting for parsing
    batch_size: int = Field(default=512, ge=1)  # rows binned together with numpy


class ReservoirConfig(_Strict):
    """A uniform sample of recent feature rows for the explainer (``/v1/reservoir``).

    Per window of ``window_seconds`` the sidecar keeps at most ``size`` rows,
    drawn uniformly from all rows captured in it; the last closed window is
    kept beside the open one. Only declared features that are not PII enter
    it. Filled by the capture worker, off the hot path: the cost per row is a
    counter decrement until the next row to keep (Algorithm L).
    """

    enabled: bool = True
    size: int = Field(default=128, ge=1, le=10_000)
    window_seconds: float = Field(default=60.0, gt=0)


class TracingConfig(_Strict):
    # Exporter and endpoint come from the standard OTEL_* variables; this only
    # decides how many requests get a sampled span.
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class ProxyConfig(_Strict):
    """Limits of the proxy port, per client request (nginx answers alike).

    A body is refused (413) over ``max_request_body_bytes``, from its
    Content-Length before it is read, or while a chunked one is read. nginx's
    1 MiB default is too small for model batches (a batch of 1,000 rows of 100
    features as JSON is ~1-2 MiB; images more); 32 MiB lets batches through
    while bounding what one request holds in memory (the body is buffered
    whole before it is forwarded). A head must arrive within
    ``header_timeout_seconds`` of its first byte and a body within
    ``body_timeout_seconds`` of its head (of ``100 Continue``, when the client
    asked for it), else 408: a client that sends a head and then a trickle, or
    nothing, no longer holds a connection and its buffers indefinitely. On
    shutdown idle keep-alive connections stay open ``drain_grace_seconds``, so
    a request already on its way is answered (with ``Connection: close``).
    """

    max_request_body_bytes: int = Field(default=32 << 20, ge=0)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    drain_grace_seconds: float = Field(default=1.0, ge=0)


class PredictionLogConfig(_Strict):
    enabled: bool = True
    path: str = "/var/log/driftline/predictions.jsonl"
    sample_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    max_bytes: int = Field(default=50 << 20, ge=1024)
    backups: int = Field(default=3, ge=0)
    # Salt for hashing fields marked `pii: hash`; read from this env variable so
    # it never sits in a ConfigMap.
    salt_env: str = "DRIFTLINE_PII_SALT"
    queue_size: int = Field(default=10_000, ge=1)


class FeedbackConfig(_Strict):
    """Ground-truth labels joined to predictions (``POST /v1/feedback``).

    Every captured row waits in a bounded store of pending predictions (kept
    in ``path``, so it survives a restart) until its label arrives or it
    expires; a label joins the row whose request carried its id in
    ``X-Request-ID`` (row r > 0 of a batched request: ``<id>:<r>``)."""

    enabled: bool = False
    # Classification: the labels a model may be told; a label outside them is
    # refused, a prediction outside them counts as "__other__".
    classes: list[str] | None = Field(default=None, min_length=2, max_length=50)
    # Binary classification: the class whose probability the score is
    # (default: the second class), for ROC/PR AUC and calibration.
    positive_class: str | None = None
    # A categorical feature to split quality by (its profiled categories, then "__other__").
    segment: str | None = None
    score_bins: int = Field(default=20, ge=2, le=200)  # equal-width bins over [0, 1]
    max_pending: int = Field(default=1_000_000, ge=1)
    ttl_seconds: float = Field(default=7 * 86400, gt=0)
    max_batch: int = Field(default=10_000, ge=1)  # labels per POST
    # The spill file; default: next to the prediction log.
    path: str | None = None
    # Besides the admin token, a token whose SHA-256 this is may post labels.
    token_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _classes_hold_positive(self) -> FeedbackConfig:
        if self.classes is not None:
            if len(set(self.classes)) != len(self.classes):
                raise ValueError("feedback.classes must be unique")
            if self.positive_class is not None and self.positive_class not in self.classes:
                raise ValueError(
                    f"feedback.positive_class {self.positive_class!r} is not one of feedback.classes"
                )
        return self


class RoutingConfig(_Strict):
    """Traffic the sidecar sends elsewhere (shadow mirror, canary split)."""

    canary_url: str | None = None
    canary_weight: float = Field(default=0.0, ge=0.0, le=100.0)  # percent of requests
    shadow_url: str | None = None
    shadow_percent: float = Field(default=0.0, ge=0.0, le=100.0)  # of locally served requests
    shadow_concurrency: int = Field(default=16, ge=1)  # mirrors in flight; over it: dropped
    shadow_timeout_seconds: float = Field(default=5.0, gt=0)  # then it counts as a shadow error

    @field_validator("canary_url", "shadow_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and (URL(url).scheme not in ("http", "https") or not URL(url).host):
            raise ValueError(
                f"{url!r} is not an http(s) URL; give e.g. http://fraud-canary.ml.svc:80"
            )
        if url is not None and URL(url).raw_user is not None:
            raise ValueError(f"{url!r}: a routing URL carries no user or password")
        return url

    def outside(self, namespace: str) -> dict[str, str]:
        """The targets (field → why) that are not a Service in ``namespace``.

        The operator routes to Services of the monitor's own namespace only
        (``http://<service>.<namespace>.svc:<port>``, the canary's and the
        shadow's), so that is all a sidecar started in that namespace accepts:
        ``<service>.<namespace>.svc`` or its ``.svc.cluster.local`` form. No
        other host, no IP address, no other namespace's Service.
        """
        allowed = (f"{namespace}.svc", f"{namespace}.svc.cluster.local")
        problems = {}
        for field, url in (("canary_url", self.canary_url), ("shadow_url", self.shadow_url)):
            host = (URL(url).host or "") if url else ""
            service, _, domain = host.partition(".")
            if url and not (_SERVICE_NAME.fullmatch(service) and domain in allowed):
                problems[f"routing.{field}"] = (
                    f"{url!r} is not a Service in namespace {namespace}: this sidecar routes "
                    f"only to http://<service>.{namespace}.svc[.cluster.local]:<port>"
                )
        return problems


_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1035, as Services are named
_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # RFC 1123 label


class SidecarConfig(_Strict):
    model: ModelConfig
    # The namespace of the pods' ModelMonitor (the operator sets it). With one,
    # routing may send traffic only to Services in it (``RoutingConfig.outside``);
    # without one (a sidecar run by hand, the demo) anywhere. Fixed at start.
    namespace: str | None = Field(default=None, pattern=_NAMESPACE)
    upstream: str = "http://127.0.0.1:8081"  # the model container, on loopback
    listen: str = "0.0.0.0:8080"  # the proxy port
    admin: str = "0.0.0.0:9090"  # /metrics, /healthz, /readyz, /v1/*
    upstream_timeout_seconds: float = Field(default=30.0, gt=0)
    # Reference profile JSON (a mounted ConfigMap key); without it the fixed
    # bins in the feature config are used.
    profile_path: str | None = None
    # Admin writes (PUT /v1/config) need a bearer token whose SHA-256 (hex) is
    # this. A hash, so the config document (a ConfigMap, and GET /v1/config)
    # never holds the token, and the operator needs no Secret to hand it out.
    admin_token_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    reservoir: ReservoirConfig = Field(default_factory=ReservoirConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    prediction_log: PredictionLogConfig = Field(default_factory=PredictionLogConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)

    @model_validator(mode="after")
    def _feedback_knows_the_classes(self) -> SidecarConfig:
        feedback = self.feedback
        classifier = self.model.prediction.task == "classification"
        if feedback.enabled and classifier and feedback.classes is None:
            raise ValueError("feedback.classes must list the classes of a classifier")
        return self


def load_config(path: str | Path) -> SidecarConfig:
    """Read a JSON or YAML config file (JSON is YAML) and validate it."""
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    if not isinstance(document, dict):
        raise ValueError(
            f"{path}: the sidecar config must be a mapping, got {type(document).__name__}"
        )
    config = SidecarConfig.model_validate(document)
    if config.namespace is not None:
        problems = config.routing.outside(config.namespace)
        if problems:
            raise ValueError("; ".join(f"{field}: {why}" for field, why in problems.items()))
    return config
