"""The ModelMonitor's status as pydantic models, its condition types and
reasons, and the one condition builder every writer of status uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field

from driftline_operator.api.spec import ApiModel

Phase = Literal[
    "Pending", "Invalid", "Healthy", "Degraded", "Progressing", "Paused", "Succeeded", "Failed"
]

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    type: str = Field(description="Ready, Injected, DriftDetected, SLOsMet, RolloutProgressing, …")
    status: ConditionStatus = Field(description="Whether the condition holds.")
    reason: str = Field(description="CamelCase reason, e.g. InvalidSpec.")
    message: str = Field(default="", description="What is wrong or right, for humans.")
    last_transition_time: str | None = Field(
        default=None, description="When status last changed (RFC 3339)."
    )


class PodCounts(ApiModel):
    selected: int = Field(default=0, description="Running pods the selector matches.")
    monitored: int = Field(default=0, description="Selected pods that carry the sidecar.")
    not_injected: int = Field(
        default=0,
        description="Selected pods without the sidecar (created before the ModelMonitor).",
    )
    unreachable: list[str] = Field(
        default_factory=list, description="Pods whose sidecar did not answer the last collection."
    )


class WindowFigures(ApiModel):
    role: str = Field(default="stable", description="stable, canary or shadow.")
    seconds: float = Field(default=0.0, description="Length of the window.")
    requests: int = Field(default=0, description="Requests in the window.")
    requests_per_second: float = Field(default=0.0, description="Request rate.")
    error_rate: float | None = Field(default=None, description="Share of 5xx responses.")
    p50_ms: float | None = Field(default=None, description="Median latency in milliseconds.")
    p95_ms: float | None = Field(default=None, description="95th percentile latency in ms.")
    p99_ms: float | None = Field(default=None, description="99th percentile latency in ms.")


class FeatureDriftStatus(ApiModel):
    name: str = Field(description="Feature name (or 'prediction').")
    method: str = Field(description="Statistic used for the verdict.")
    score: float | None = Field(default=None, description="The statistic's value.")
    threshold: float = Field(description="The threshold it is judged against.")
    status: Literal["ok", "drift", "insufficient_data"] = Field(description="The verdict.")
    samples: int = Field(default=0, description="Values in the drift window.")


class DriftStatus(ApiModel):
    status: Literal["ok", "drift", "insufficient_data", "no_reference"] = Field(
        default="no_reference", description="The dataset verdict."
    )
    drifted_share: float | None = Field(default=None, description="Share of drifted features.")
    drifted: int = Field(default=0, description="Number of drifted features.")
    features: list[FeatureDriftStatus] = Field(
        default_factory=list, description="The most drifted features, highest score first."
    )
    prediction: FeatureDriftStatus | None = Field(
        default=None, description="Drift of the prediction score."
    )


class FeatureQualityStatus(ApiModel):
    name: str = Field(description="Feature name.")
    rows: int = Field(default=0, description="Rows in the drift window that could carry it.")
    missing_rate: float | None = Field(
        default=None, description="Share of rows where it is absent, null or of the wrong type."
    )
    out_of_range_rate: float | None = Field(
        default=None, description="Numeric: share of its values outside the reference [min, max]."
    )
    unseen_category_rate: float | None = Field(
        default=None, description="Categorical: share of its values the reference never saw."
    )
    breaches: list[str] = Field(
        default_factory=list, description="The rates above their threshold (metric names)."
    )


class DataQualityStatus(ApiModel):
    status: Literal["ok", "degraded", "insufficient_data"] = Field(
        default="insufficient_data", description="degraded: some rate is above its threshold."
    )
    rows: int = Field(default=0, description="Captured rows in the drift window.")
    schema_error_rate: float | None = Field(
        default=None, description="Schema violations per captured row (capped at 1)."
    )
    schema_errors: int = Field(
        default=0, description="Unknown fields, wrong types and absent features, counted."
    )
    features: list[FeatureQualityStatus] = Field(
        default_factory=list, description="Every captured feature, worst first."
    )
    breaches: list[str] = Field(
        default_factory=list,
        description="Rates above their threshold: <feature>/<metric>, or schemaErrorRate.",
    )


class ClassQualityStatus(ApiModel):
    name: str = Field(description="The class.")
    support: int = Field(default=0, description="Labels of this class.")
    precision: float | None = Field(default=None, description="None: never predicted.")
    recall: float | None = Field(default=None, description="None: no label of this class.")
    f1: float | None = Field(default=None, description="Harmonic mean of precision and recall.")
    roc_auc: float | None = Field(
        default=None, description="Multiclass: this class's ROC AUC against the rest."
    )
    pr_auc: float | None = Field(
        default=None, description="Multiclass: this class's average precision against the rest."
    )


class QualityFigures(ApiModel):
    role: str = Field(default="stable", description="stable, canary or shadow.")
    segment: str | None = Field(
        default=None, description="The segment feature's value; unset for all segments together."
    )
    labels: int = Field(default=0, description="Labelled predictions the figures come from.")
    status: Literal["ok", "insufficient_data"] = Field(
        default="insufficient_data", description="insufficient_data below quality.minLabels."
    )
    message: str = Field(default="", description="The sample count and what it is judged on.")
    accuracy: float | None = Field(default=None, description="Share of correct predictions.")
    macro_f1: float | None = Field(default=None, description="Mean F1 over the classes.")
    classes: list[ClassQualityStatus] = Field(
        default_factory=list, description="Per-class precision, recall and F1."
    )
    roc_auc: float | None = Field(
        default=None, description="ROC AUC of binned scores (multiclass: macro one-vs-rest)."
    )
    roc_auc_bound: float | None = Field(
        default=None, description="The most score binning can move roc_auc."
    )
    pr_auc: float | None = Field(
        default=None, description="Average precision (multiclass: macro one-vs-rest)."
    )
    ece: float | None = Field(
        default=None, description="Expected calibration error (multiclass: macro one-vs-rest)."
    )
    log_loss: float | None = Field(
        default=None, description="Log loss with scores at their bin's midpoint."
    )
    estimated_accuracy: float | None = Field(
        default=None,
        description=(
            "Classification with a calibrated profile: accuracy estimated from the scores "
            "of every prediction in the window, labelled or not (CBPE)."
        ),
    )
    estimated_from: int = Field(default=0, description="Scored predictions the estimate is over.")
    estimate_error: float | None = Field(
        default=None, description="accuracy - estimatedAccuracy, once labels are in."
    )
    mae: float | None = Field(default=None, description="Regression: mean absolute error.")
    rmse: float | None = Field(default=None, description="Regression: root mean squared error.")
    bias: float | None = Field(default=None, description="Regression: mean (predicted - actual).")
    r2: float | None = Field(default=None, description="Regression: coefficient of determination.")


class LabelStatus(ApiModel):
    joined: int = Field(default=0, description="Labels joined to their prediction.")
    unknown: int = Field(
        default=0,
        description=(
            "Labels for ids no replica served (labels fanned out to every replica count "
            "unknown once, at the one sidecar the sender resends them to)."
        ),
    )
    expired: int = Field(default=0, description="Labels that came after their prediction expired.")
    duplicate: int = Field(default=0, description="Labels for an already labelled prediction.")


class QualityStatus(ApiModel):
    window_seconds: float = Field(default=0.0, description="How much recent labelling it covers.")
    labels: LabelStatus = Field(
        default_factory=LabelStatus, description="Labels posted in the window, by outcome."
    )
    figures: list[QualityFigures] = Field(
        default_factory=list, description="Per role: all segments, then each segment."
    )


class SloStatus(ApiModel):
    name: str = Field(description="The SLO's name.")
    verdict: Literal["ok", "breach", "insufficient_data"] = Field(description="The verdict.")
    value: float | None = Field(default=None, description="The measured value.")
    objective: float | None = Field(default=None, description="The bound it was judged against.")
    burn_rate: float | None = Field(
        default=None, description="successRate: error budget burn rate over the window."
    )
    message: str = Field(default="", description="The verdict in words.")


class FeatureAttributionStatus(ApiModel):
    name: str = Field(description="Feature name.")
    share: float = Field(description="Its share of the summed mean |SHAP| in the drift window.")
    reference_share: float = Field(description="Its share in the reference attributions.")


class CanaryFeatureStatus(ApiModel):
    name: str = Field(description="Feature name.")
    stable: float = Field(description="Its share of stable's summed mean |SHAP|.")
    canary: float = Field(description="Its share of the canary's, on the same rows.")


class CanaryAttributionsStatus(ApiModel):
    explained: int = Field(
        default=0, description="Rows explained against both stable and the canary."
    )
    distance: float | None = Field(
        default=None,
        description="Total variation distance between the two models' shares (none: no rows).",
    )
    limit: float = Field(description="spec.rollout.comparison.maxAttributionDistance.")
    features: list[CanaryFeatureStatus] = Field(
        default_factory=list,
        description="The features either model relies on most, by the larger share.",
    )


class ExplanationsStatus(ApiModel):
    status: Literal["ok", "drift", "insufficient_data"] = Field(
        description="Attribution drift's verdict over the drift window."
    )
    explained: int = Field(default=0, description="Rows explained in the drift window.")
    distance: float | None = Field(
        default=None,
        description="Total variation distance between the window's and the reference's shares.",
    )
    threshold: float = Field(description="spec.explain.threshold.")
    top_features: list[FeatureAttributionStatus] = Field(
        default_factory=list, description="Features by share of mean |SHAP|, largest first."
    )
    reference_top: list[str] = Field(
        default_factory=list, description="The reference's top features by attribution."
    )
    canary: CanaryAttributionsStatus | None = Field(
        default=None,
        description=(
            "With rollout.comparison.maxAttributionDistance and canary pods: the same rows "
            "explained against stable and the canary, over the drift window."
        ),
    )


class PendingActions(ApiModel):
    actions: list[str] = Field(
        default_factory=list,
        description="In order: StartCanary, SetWeight:<percent>, PromoteCanary, …",
    )
    previous_phase: Literal["Progressing", "Paused", "Succeeded", "Failed"] | None = Field(
        default=None, description="The rollout's phase before the decision."
    )


class RolloutStatus(ApiModel):
    phase: Literal["Progressing", "Paused", "Succeeded", "Failed"] | None = Field(
        default=None,
        description=(
            "The rollout's own phase (the monitor's phase moves on once a rollout ends); "
            "unset before the first rollout."
        ),
    )
    step: int = Field(default=0, description="Index into rollout.steps.")
    weight: float = Field(default=0.0, description="Current canary traffic weight in percent.")
    failures: int = Field(default=0, description="Consecutive failed analyses.")
    step_started_at: str | None = Field(default=None, description="When the step began.")
    decision: str | None = Field(default=None, description="The last decision and its reason.")
    revision: str | None = Field(
        default=None, description="The canary pod template hash this rollout is about."
    )
    pending: PendingActions | None = Field(
        default=None,
        description=(
            "The actions of the decision above, recorded before they are taken and removed "
            "once all are done; an operator restarted in between takes them again."
        ),
    )
    baseline: str | None = Field(
        default=None,
        description=(
            "canary at weight 100: stable's last full window (JSON), the canary's comparison "
            "while stable serves nothing."
        ),
    )
    labelled: str | None = Field(
        default=None,
        description=(
            "A live canary: stable's and the canary's counts summed since the rollout began "
            "(JSON, without per-feature bins), which labelled quality and its estimate are "
            "judged on; a restarted operator goes on from them."
        ),
    )


class ModelMonitorStatus(ApiModel):
    phase: Phase = Field(default="Pending", description="Where the monitor is.")
    observed_generation: int | None = Field(
        default=None, description="The spec generation this status is about."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions.")
    pods: PodCounts = Field(default_factory=PodCounts, description="Pods the monitor covers.")
    windows: list[WindowFigures] = Field(
        default_factory=list, description="Golden signals of the last window, per role."
    )
    requests_per_second: float | None = Field(
        default=None, description="Stable request rate (for the printer column)."
    )
    p95_ms: float | None = Field(default=None, description="Stable p95 latency in ms.")
    error_percent: float | None = Field(default=None, description="Stable error rate in percent.")
    drift: DriftStatus = Field(default_factory=DriftStatus, description="Drift verdicts.")
    data_quality: DataQualityStatus | None = Field(
        default=None, description="Data-quality rates over the drift window (stable role)."
    )
    quality: QualityStatus | None = Field(
        default=None, description="Model quality from ground-truth labels (spec.quality)."
    )
    slos: list[SloStatus] = Field(default_factory=list, description="SLO verdicts.")
    explanations: ExplanationsStatus | None = Field(
        default=None, description="SHAP attributions of live rows (spec.explain)."
    )
    rollout: RolloutStatus | None = Field(default=None, description="Rollout progress.")
    last_analysis_time: str | None = Field(
        default=None, description="When the last analysis ran (RFC 3339)."
    )


# -- conditions -----------------------------------------------------------------
READY = "Ready"
SLOS_MET = "SLOsMet"
DRIFT_DETECTED = "DriftDetected"
EXPLANATIONS_AVAILABLE = "ExplanationsAvailable"
CANDIDATE_FIT = "CandidateFit"  # shadow: whether the candidate is fit to promote
# Reasons of the Ready condition (CamelCase, as Kubernetes conventions ask).
INVALID_SPEC = "InvalidSpec"
REFERENCE_NOT_FOUND = "ReferenceNotFound"
INVALID_REFERENCE = "InvalidReference"  # the profile is not JSON, or not a profile
CONFIGURED = "SidecarConfigured"


def condition(
    type: str,
    status: ConditionStatus,
    *,
    reason: str,
    message: str = "",
    previous: Condition | None = None,
    now: str | None = None,
) -> Condition:
    """A condition as it is now. Its transition time moves only when its status
    does (what `kubectl wait` and humans reading it rely on): it is kept from
    `previous` when the status is the same, else it is `now`."""
    same = previous is not None and previous.status == status
    since = previous.last_transition_time if same and previous else None
    return Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since or now,
    )


def upsert_condition(
    conditions: Iterable[Mapping[str, Any]], new: Condition, *, now: str
) -> list[dict[str, Any]]:
    """Stored conditions (as in `.status.conditions`) with `new` set in them."""
    result: list[dict[str, Any]] = []
    previous: Condition | None = None
    for stored in conditions:
        if stored.get("type") == new.type:
            previous = Condition.model_validate(stored)
        else:
            result.append(dict(stored))
    updated = condition(
        new.type,
        new.status,
        reason=new.reason,
        message=new.message,
        previous=previous,
        now=now,
    )
    result.append(updated.model_dump(by_alias=True))
    return result


def is_ready(body: Mapping[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == READY and c.get("status") == "True" for c in conditions)
