"""The ModelMonitor resource (`driftline.io/v1alpha1`): spec and status as
pydantic models.

This module is the single source of the resource's shape. The CRD's OpenAPI
schema in `crds/` (and in the chart) is generated from these models, so every
field carries its description, default, enum and range here. The operator
validates each ModelMonitor with `ModelMonitorSpec.model_validate` and turns a
failure into a Ready=False condition and a Warning Event.

Field names are camelCase in YAML (`minSamples`) and snake_case in Python
(`min_samples`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from driftline_operator.api.values import (
    Duration,
    Positive,
    PositiveDuration,
    parse_duration,
    parse_ratio,
)


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,  # defaults become typed values too (Duration)
    )


# -- spec ----------------------------------------------------------------------

# A list of objects keyed by their name: the apiserver refuses an entry whose
# name repeats (map-list keys are unique; the 1.20 apiserver checks it too).
_LIST_MAP_BY_NAME: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}


def _refuse_repeated(what: str, names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} names must be unique, repeated: {', '.join(repeated)}")


class LabelSelectorRequirement(ApiModel):
    key: str = Field(description="The label key the selector applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[str] = Field(
        default_factory=list,
        description="Values for In and NotIn; empty for Exists and DoesNotExist.",
    )


class LabelSelector(ApiModel):
    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Pods must carry all of these labels."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Set-based requirements, all of which must hold."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        if not self.match_labels and not self.match_expressions:
            raise ValueError(
                "the selector must name at least one label (an empty one selects every pod)"
            )
        return self


class Feature(ApiModel):
    name: str = Field(min_length=1, description="Feature name, as in the reference profile.")
    path: str | None = Field(
        default=None,
        description=(
            "Where the feature is in a request row: a dotted path for JSON objects, a column "
            "index for list rows, or an input tensor name (Open Inference v2). Default: the name."
        ),
    )
    type: Literal["numeric", "categorical"] = Field(
        default="numeric", description="Numeric values are binned by range, categorical by value."
    )
    pii: Literal["none", "hash"] = Field(
        default="none",
        description="hash: the prediction log stores a salted hash instead of the value.",
    )


class Prediction(ApiModel):
    path: str | None = Field(
        default="prediction",
        description="Dotted path of the predicted class or value in a response row.",
    )
    score: str | None = Field(
        default=None, description="Dotted path of the score or probability in a response row."
    )
    task: Literal["classification", "regression"] = Field(
        default="classification", description="What the model predicts."
    )


class Model(ApiModel):
    name: str = Field(min_length=1, description="Model name, used in metrics and spans.")
    version: str | None = Field(
        default=None,
        description=(
            "Model version reported by the sidecar. Default: the pod's "
            "app.kubernetes.io/version label, else 'unknown'."
        ),
    )
    port: str | int = Field(
        default="http",
        description=(
            "The model container port clients reach (name or number). The sidecar takes it "
            "over; a Service targeting it by name needs no change."
        ),
    )
    container: str | None = Field(
        default=None,
        description="The model container's name. Default: the container that has the port.",
    )
    protocol: Literal["auto", "kserve-v1", "open-inference-v2", "json"] = Field(
        default="auto", description="Inference protocol; auto detects it per request."
    )
    features: list[Feature] = Field(
        default_factory=list,
        description=(
            "Features to capture, each name once. Default: the features of the reference profile."
        ),
        json_schema_extra=_LIST_MAP_BY_NAME,
    )
    prediction: Prediction = Field(
        default_factory=Prediction, description="Where the prediction and score are."
    )

    @field_validator("features")
    @classmethod
    def _unique_feature_names(cls, features: list[Feature]) -> list[Feature]:
        _refuse_repeated("feature", [f.name for f in features])
        return features


class ConfigMapKeyRef(ApiModel):
    name: str = Field(min_length=1, description="ConfigMap name, in the ModelMonitor's namespace.")
    key: str = Field(default="profile.json", description="The key holding the profile JSON.")


class Reference(ApiModel):
    config_map_ref: ConfigMapKeyRef = Field(
        description="The ConfigMap holding the reference profile (driftline profile configmap)."
    )


DriftMethod = Literal["auto", "psi", "ks", "chisquare", "jensenshannon", "wasserstein"]


class Drift(ApiModel):
    window: PositiveDuration = Field(
        default=Duration("10m"), description="How much recent traffic each drift verdict looks at."
    )
    min_samples: int = Field(
        default=100,
        ge=1,
        description="Below this many values a feature is reported as insufficient data.",
    )
    method: DriftMethod = Field(
        default="auto",
        description=(
            "auto: KS / chi-square p-values for small samples, normalised Wasserstein / "
            "Jensen-Shannon for large ones (as Evidently does); or one method for all features."
        ),
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Drift threshold for the chosen method (a p-value for ks and chisquare, a score "
            "otherwise). Default: the method's usual one (psi 0.2, others 0.1, p-values 0.05)."
        ),
    )
    drift_share: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="The dataset drifts when at least this share of features drifts.",
    )


SloMetric = Literal[
    "latency",
    "successRate",
    "errorRate",
    "driftedFeatureShare",
    "predictionDrift",
    "attributionDrift",
    "missingRate",
    "outOfRangeRate",
    "unseenCategoryRate",
    "schemaErrorRate",
    "accuracy",
    "auc",
    "f1",
    "rmse",
    "mae",
    "estimatedAccuracy",
]
# Data-quality SLO metrics: a rate in 0..1 per feature (or per row for schema errors).
DATA_QUALITY_METRICS = frozenset(
    {"missingRate", "outOfRangeRate", "unseenCategoryRate", "schemaErrorRate"}
)
# Model quality from labels: a minimum objective (accuracy, auc, f1) or a maximum (rmse, mae).
QUALITY_AT_LEAST = frozenset({"accuracy", "auc", "f1", "estimatedAccuracy"})
QUALITY_AT_MOST = frozenset({"rmse", "mae"})


class DataQuality(ApiModel):
    min_records: int = Field(
        default=100,
        ge=1,
        description="Below this many rows in the drift window the rates are insufficient data.",
    )
    max_missing_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A feature's share of rows where it is absent, null or of the wrong type.",
    )
    max_out_of_range_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A numeric feature's share of values outside the reference [min, max].",
    )
    max_unseen_category_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A categorical feature's share of values the reference never saw.",
    )
    max_schema_error_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description=(
            "Schema violations (unknown fields, wrong types, absent features) per captured row."
        ),
    )


class Slo(ApiModel):
    name: str = Field(min_length=1, description="A name for the verdict in status and Events.")
    metric: SloMetric = Field(description="What the objective is about.")
    quantile: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="latency: the quantile judged (for example 0.95).",
    )
    max: str | float | None = Field(
        default=None,
        description=(
            "Upper bound: a duration for latency (200ms), a ratio or percentage for "
            "errorRate, driftedFeatureShare and the data-quality rates, a score for "
            "predictionDrift and attributionDrift, a number in the label's units for rmse "
            "and mae."
        ),
    )
    objective: str | float | None = Field(
        default=None,
        description=(
            "successRate: the objective as a ratio or percentage (99.9%); the error budget "
            "is 1 - objective and burn rates are judged over short and long windows. "
            "accuracy, auc, f1, estimatedAccuracy: the least acceptable value (labels from "
            "spec.quality; the estimate needs a profile built with --target and --prediction)."
        ),
    )
    feature: str | None = Field(
        default=None,
        description=(
            "missingRate, outOfRangeRate, unseenCategoryRate: the feature judged. "
            "Default: the feature with the highest rate."
        ),
    )

    # Parsed once, when the spec is validated.
    _max_value: float | None = PrivateAttr(default=None)
    _objective_value: float | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _bound_fits_metric(self) -> Slo:
        if self.metric == "successRate" or self.metric in QUALITY_AT_LEAST:
            if self.objective is None:
                raise ValueError(
                    f"slo {self.name!r}: {self.metric} needs an objective such as 99.9%"
                )
            self._objective_value = parse_ratio(self.objective)
        elif self.metric in QUALITY_AT_MOST:
            if not isinstance(self.max, int | float) or self.max < 0:
                raise ValueError(
                    f"slo {self.name!r}: {self.metric} needs max, a number in the label's units"
                )
            self._max_value = float(self.max)
        elif self.max is None:
            raise ValueError(f"slo {self.name!r}: {self.metric} needs max")
        elif self.metric == "latency":
            if self.quantile is None:
                raise ValueError(f"slo {self.name!r}: latency needs a quantile such as 0.95")
            if not isinstance(self.max, str):
                raise ValueError(f"slo {self.name!r}: latency max must be a duration such as 200ms")
            self._max_value = parse_duration(self.max)
        else:
            self._max_value = parse_ratio(self.max)
        if self.feature is not None and self.metric not in DATA_QUALITY_METRICS - {
            "schemaErrorRate"
        }:
            raise ValueError(f"slo {self.name!r}: feature applies to per-feature rates only")
        return self

    @property
    def max_value(self) -> float | None:
        """The bound as a number: seconds for latency, a ratio otherwise."""
        return self._max_value

    @property
    def objective_value(self) -> float | None:
        """successRate, accuracy, auc, f1: the objective as a ratio in 0..1."""
        return self._objective_value


class Quality(ApiModel):
    classes: list[str] | None = Field(
        default=None,
        min_length=2,
        max_length=50,
        description="Classification: the classes labels may name (required for a classifier).",
    )
    positive_class: str | None = Field(
        default=None,
        description=(
            "Binary classification: the class whose probability the score is, for ROC/PR AUC "
            "and calibration. Default: the second class."
        ),
    )
    segment: str | None = Field(
        default=None,
        description="A categorical feature to split quality by (its profiled categories).",
    )
    score_bins: int = Field(
        default=20, ge=2, le=200, description="Equal-width bins of the score over [0, 1]."
    )
    min_labels: int = Field(
        default=100,
        ge=1,
        description="Below this many labelled predictions a figure is insufficient data.",
    )
    max_pending: int = Field(
        default=1_000_000,
        ge=1,
        description="Predictions each sidecar keeps waiting for a label (about 60 bytes each).",
    )
    label_ttl: PositiveDuration = Field(
        default=Duration("168h"), description="How long a prediction waits for its label."
    )
    max_batch: int = Field(default=10_000, ge=1, description="Labels per feedback request.")
    feedback_token_sha256: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description=(
            "SHA-256 (hex) of the token a label source presents to POST /v1/feedback; "
            "the token itself stays with the label source."
        ),
    )

    @model_validator(mode="after")
    def _positive_is_a_class(self) -> Quality:
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("quality.classes must be unique")
        if self.positive_class is not None and self.positive_class not in (self.classes or []):
            raise ValueError(
                f"quality.positiveClass {self.positive_class!r} is not in quality.classes"
            )
        return self


class Explain(ApiModel):
    """SHAP attributions of live rows (the sidecars' reservoirs) and their drift."""

    enabled: bool = Field(
        default=False,
        description=(
            "Explain sampled live rows against the reference profile's background, by "
            "asking the model container directly (never counted as user traffic)."
        ),
    )
    explanations_per_minute: int = Field(
        default=60,
        ge=1,
        le=6000,
        description=(
            "This monitor's explanation budget; the operator's own cap "
            "(DRIFTLINE_EXPLANATIONS_PER_MINUTE) bounds all monitors together."
        ),
    )
    min_explanations: int = Field(
        default=20,
        ge=1,
        description="Below this many explained rows in the drift window: insufficient data.",
    )
    threshold: float = Field(
        default=0.15,
        gt=0,
        le=1,
        description=(
            "Attribution drift: the total variation distance between the normalised mean "
            "|SHAP| per feature of the window and of the reference, above which it drifted."
        ),
    )
    timeout: PositiveDuration = Field(
        default=Duration("10s"), description="How long one explanation's request may take."
    )
    # The sidecar's own defaults (ReservoirConfig), so the rendered config
    # states them; the sidecar keeps no reservoir while explain is off.
    reservoir_size: int = Field(
        default=128,
        ge=1,
        le=10_000,
        description=(
            "Rows each sidecar samples uniformly per reservoir window; the operator explains "
            "each closed window's rows once."
        ),
    )
    reservoir_window: PositiveDuration = Field(
        default=Duration("60s"),
        description=(
            "How long each sidecar's reservoir window lasts; at most drift.window, so every "
            "drift window holds a closed reservoir window's explanations."
        ),
    )


# Each analysis reads the monitor and lists its pods: a shorter interval
# would make every monitor a steady load on the API server.
MIN_ANALYSIS_INTERVAL = "1s"


class Analysis(ApiModel):
    interval: Annotated[Duration, Positive(at_least=MIN_ANALYSIS_INTERVAL)] = Field(
        default=Duration("30s"),
        description=f"How often the operator analyses; at least {MIN_ANALYSIS_INTERVAL}.",
    )
    # Not bounded by the interval: one analysis ends before the next interval's
    # wait begins, so a slow collection delays the next one rather than overlapping it.
    timeout: PositiveDuration = Field(
        default=Duration("5s"), description="How long to wait for each sidecar's snapshot."
    )


class PrometheusSource(ApiModel):
    url: str = Field(description="Base URL of a Prometheus that scrapes the sidecars' admin ports.")


class Metrics(ApiModel):
    source: Literal["sidecar", "prometheus"] = Field(
        default="sidecar",
        description="sidecar: read each sidecar's snapshot; prometheus: query PromQL.",
    )
    prometheus: PrometheusSource | None = Field(
        default=None, description="Required when source is prometheus."
    )

    @model_validator(mode="after")
    def _prometheus_needs_url(self) -> Metrics:
        if self.source == "prometheus" and self.prometheus is None:
            raise ValueError("metrics.source prometheus needs metrics.prometheus.url")
        return self


class Resources(ApiModel):
    requests: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "100m", "memory": "128Mi"},
        description="Sidecar resource requests.",
    )
    limits: dict[str, str] = Field(
        default_factory=lambda: {"memory": "256Mi"},
        description=(
            "Sidecar limits. No CPU limit by default: throttling a proxy multiplies tail latency."
        ),
    )


class Sidecar(ApiModel):
    image: str | None = Field(
        default=None, description="Sidecar image. Default: the operator's configured image."
    )
    admin_port: int = Field(default=9090, ge=1, le=65535, description="The sidecar's admin port.")
    resources: Resources = Field(default_factory=Resources, description="Sidecar resources.")
    trace_sample_ratio: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of requests that get a sampled span."
    )
    prediction_log_sample_ratio: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Share of requests written to the prediction log."
    )
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP endpoint for spans. Default: export nowhere."
    )


class ObjectRef(ApiModel):
    name: str = Field(min_length=1, description="Object name, in the ModelMonitor's namespace.")


class ServiceRef(ApiModel):
    name: str = Field(min_length=1, description="Service name, in the ModelMonitor's namespace.")
    port: str | int = Field(default="http", description="Service port (name or number).")


class Comparison(ApiModel):
    max_accuracy_decrease: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description=(
            "With spec.quality (a classifier): how much lower than stable's the candidate's "
            "labelled accuracy may be (a larger drop fails only when significant); the canary "
            "holds until both have quality.minLabels labels."
        ),
    )
    max_disagreement: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Classification: the largest share of requests where the answers may differ.",
    )
    max_score_difference: float | None = Field(
        default=None, ge=0.0, description="Regression: the largest mean absolute difference."
    )
    max_error_rate_increase: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="How much higher than stable's the candidate's error rate may be.",
    )
    max_latency_increase: Duration = Field(
        default=Duration("50ms"),
        description="How much higher than stable's the candidate's p95 may be.",
    )
    max_score_drift: float = Field(
        # Two windows of a few hundred predictions from one distribution are up
        # to ~0.13 apart by chance (10 bins), so a tighter default would judge
        # sampling noise; a relabelled model in the demo is ~0.5 away.
        default=0.2,
        ge=0.0,
        le=1.0,
        description=(
            "Jensen-Shannon distance (base 2) allowed between the two score distributions; "
            "a larger one fails only when a chi-square test also finds the difference significant."
        ),
    )
    max_attribution_distance: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description=(
            "canary: explain the same sampled live rows against stable and the candidate and "
            "fail when the total variation distance between their normalised mean |SHAP| per "
            "feature is above this (the candidate relies on other features). Off unless set; "
            "needs spec.explain.enabled (its budget, background and minExplanations: below "
            "that many rows explained on both, the canary holds)."
        ),
    )


class Rollout(ApiModel):
    strategy: Literal["none", "shadow", "canary", "guard"] = Field(
        default="none", description="How a new model version is brought in."
    )
    stable_ref: ObjectRef | None = Field(
        default=None,
        description=(
            "canary: the Deployment serving the current version; guard: the Deployment to "
            "guard (default: the one owning the selected pods)."
        ),
    )
    canary_ref: ObjectRef | None = Field(
        default=None, description="canary: the Deployment serving the candidate."
    )
    canary_service: ServiceRef | None = Field(
        default=None,
        description="canary with the sidecar router: the Service in front of the canary pods.",
    )
    shadow_service: ServiceRef | None = Field(
        default=None, description="shadow: the Service the candidate is reached through."
    )
    shadow_percent: float = Field(
        default=100.0, ge=0.0, le=100.0, description="shadow: share of requests mirrored."
    )
    router: Literal["sidecar", "gateway-api", "istio", "replicas"] = Field(
        default="sidecar", description="What moves canary traffic."
    )
    route_ref: ObjectRef | None = Field(
        default=None,
        description="gateway-api: the HTTPRoute; istio: the VirtualService that carries the weights.",
    )
    steps: list[Annotated[int, Field(ge=0, le=100)]] = Field(
        default_factory=lambda: [5, 25, 50, 100],
        description="Canary traffic weights in percent, walked in order.",
    )
    interval: PositiveDuration = Field(
        default=Duration("30s"), description="How long each step is held."
    )
    failure_limit: int = Field(
        default=2, ge=1, description="Consecutive failed analyses that trigger a rollback."
    )
    progress_deadline: PositiveDuration = Field(
        default=Duration("10m"),
        description="How long a step may wait for enough data before the rollout fails.",
    )
    bake_time: PositiveDuration = Field(
        default=Duration("5m"), description="guard: how long a new revision's pods are judged."
    )
    comparison: Comparison = Field(
        default_factory=Comparison, description="Candidate-versus-stable margins."
    )

    @model_validator(mode="after")
    def _strategy_has_what_it_needs(self) -> Rollout:
        if self.strategy == "canary":
            if self.stable_ref is None or self.canary_ref is None:
                raise ValueError("rollout.strategy canary needs stableRef and canaryRef")
            if self.router == "sidecar" and self.canary_service is None:
                raise ValueError("rollout.router sidecar needs rollout.canaryService")
            if self.router in ("gateway-api", "istio") and self.route_ref is None:
                raise ValueError(f"rollout.router {self.router} needs rollout.routeRef")
            if any(b < a for a, b in zip(self.steps, self.steps[1:], strict=False)):
                raise ValueError("rollout.steps must not decrease")
            if not self.steps:
                raise ValueError("rollout.steps must name at least one weight")
        if self.strategy == "shadow" and self.shadow_service is None:
            raise ValueError("rollout.strategy shadow needs rollout.shadowService")
        return self


class AlertWebhook(ApiModel):
    url: str = Field(description="Receives a JSON POST (Slack-compatible) on each phase change.")


class Alerting(ApiModel):
    webhook: AlertWebhook | None = Field(default=None, description="A notification hook.")


NotificationEvent = Literal["rollout", "drift", "slo", "dataQuality"]
Severity = Literal["info", "warning", "critical"]


def _every_event() -> list[NotificationEvent]:
    return ["rollout", "drift", "slo", "dataQuality"]


class NotificationRoute(ApiModel):
    receiver: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "A receiver the operator is installed with (chart value "
            "notifications.receivers[].name); its URL or routing key stays in the "
            "operator's Secret, never in the ModelMonitor."
        ),
    )
    events: list[NotificationEvent] = Field(
        default_factory=_every_event,
        min_length=1,
        description=(
            "What it is told: rollout (phase changes: started, paused, promoted, rolled "
            "back), drift (dataset, prediction and attribution drift detected and cleared), "
            "slo (an SLO breached and recovered), dataQuality (a feature's missing, "
            "out-of-range or unseen-category rate, or the schema error rate, above its "
            "spec.dataQuality threshold and back)."
        ),
    )
    min_severity: Severity = Field(
        default="info",
        description=(
            "The least severity it is told (rollout started or promoted: info; drift, data "
            "quality, a paused rollout: warning; an SLO breach, a rolled-back rollout: "
            "critical). A recovery has the severity of what it ends, so it reaches every "
            "route that was told of the breach."
        ),
    )

    @field_validator("events")
    @classmethod
    def _events_once(cls, events: list[NotificationEvent]) -> list[NotificationEvent]:
        repeated = sorted({e for e in events if events.count(e) > 1})
        if repeated:
            raise ValueError(f"events must name each kind once, repeated: {', '.join(repeated)}")
        return events


class ModelMonitorSpec(ApiModel):
    selector: LabelSelector = Field(description="The model's pods: injected and watched.")
    model: Model = Field(description="The model and how to read its requests.")
    reference: Reference | None = Field(
        default=None,
        description="Reference profile for drift. Without it only golden signals are judged.",
    )
    drift: Drift = Field(default_factory=Drift, description="How drift is judged.")
    data_quality: DataQuality = Field(
        default_factory=DataQuality,
        description="Per-feature data-quality thresholds: status, metrics and Events.",
    )
    quality: Quality | None = Field(
        default=None,
        description=(
            "Model quality from ground-truth labels (POST /v1/feedback on each sidecar). "
            "Without it the sidecars join no labels."
        ),
    )
    slos: list[Slo] = Field(
        default_factory=list,
        description="Objectives judged on every analysis window, each name once.",
        json_schema_extra=_LIST_MAP_BY_NAME,
    )
    analysis: Analysis = Field(default_factory=Analysis, description="The analysis loop.")
    metrics: Metrics = Field(default_factory=Metrics, description="Where the counts come from.")
    sidecar: Sidecar = Field(default_factory=Sidecar, description="The injected sidecar.")
    rollout: Rollout = Field(default_factory=Rollout, description="Safe rollout of new versions.")
    alerting: Alerting = Field(
        default_factory=Alerting,
        description="A Slack-shaped hook on each rollout phase change (see notifications).",
    )
    notifications: list[NotificationRoute] = Field(
        default_factory=list,
        description=(
            "Which of the operator's notification receivers are told of this monitor's "
            "rollouts and verdict changes, each receiver once."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["receiver"],
        },
    )
    explain: Explain = Field(
        default_factory=Explain, description="SHAP attributions and attribution drift."
    )

    @field_validator("slos")
    @classmethod
    def _unique_slo_names(cls, slos: list[Slo]) -> list[Slo]:
        _refuse_repeated("slo", [slo.name for slo in slos])
        return slos

    @field_validator("notifications")
    @classmethod
    def _each_receiver_once(cls, routes: list[NotificationRoute]) -> list[NotificationRoute]:
        names = [route.receiver for route in routes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"each receiver may be routed once, repeated: {', '.join(repeated)}")
        return routes

    @model_validator(mode="after")
    def _classifier_quality_has_classes(self) -> ModelMonitorSpec:
        quality = self.quality
        classifier = self.model.prediction.task == "classification"
        if quality is not None and classifier and quality.classes is None:
            raise ValueError("quality.classes must list the classes of a classifier")
        if self.explain.enabled and self.reference is None:
            raise ValueError(
                "explain.enabled needs spec.reference: the explanations' background "
                "comes from the reference profile"
            )
        compared = self.rollout.comparison.max_attribution_distance
        if compared is not None and not self.explain.enabled:
            raise ValueError(
                f"rollout.comparison.maxAttributionDistance {compared:g} needs "
                "explain.enabled: stable and the candidate are compared on explained rows"
            )
        window = self.explain.reservoir_window
        if self.explain.enabled and window.seconds > self.drift.window.seconds:
            raise ValueError(
                f"explain.reservoirWindow {window} is longer than drift.window "
                f"{self.drift.window}: each closed reservoir window is explained once, so "
                "some drift windows would hold no explanations; shorten reservoirWindow"
            )
        return self


# -- status --------------------------------------------------------------------


def spec_from(body: dict[str, Any]) -> ModelMonitorSpec:
    """Validate a ModelMonitor's spec (raises pydantic.ValidationError)."""
    return ModelMonitorSpec.model_validate(body.get("spec") or {})
