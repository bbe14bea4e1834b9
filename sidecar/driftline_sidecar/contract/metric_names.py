"""The names of the sidecar's Prometheus metrics, their labels, and the fixed
label values the snapshot is read from: spelled here once.

The sidecar defines its metrics with them (``driftline_sidecar.metrics`` and
``routing_metrics``), and ``contract.reader`` reads the samples back with them,
in the sidecar (``/v1/snapshot``) and in the operator's Prometheus source.

A counter's name ends in ``_total`` as its samples do (prometheus_client drops
it from the family name only); a histogram's or summary's samples add
``_bucket``, ``_sum`` and ``_count`` to its name.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

PREFIX: Final = "driftline_"

# Labels of every series: the sidecar's model, version and role.
MODEL: Final = "model"
VERSION: Final = "version"
ROLE: Final = "role"
BASE_LABELS: Final = (MODEL, VERSION, ROLE)

# Further labels (bounded values only).
PROFILE_SHA256: Final = "profile_sha256"
CODE: Final = "code"
FEATURE: Final = "feature"
BIN: Final = "bin"  # "0" is the lowest bin
CLASS: Final = "class"
REASON: Final = "reason"
QUEUE: Final = "queue"
KIND: Final = "kind"
TARGET: Final = "target"
OUTCOME: Final = "outcome"
SIDE: Final = "side"
STAGE: Final = "stage"  # a model's Server-Timing metric name, at most MAX_STAGES of them

# The sidecar: identity, requests and capture.
SIDECAR_INFO: Final = PREFIX + "sidecar_info"  # {profile_sha256}, always 1
REQUESTS: Final = PREFIX + "requests_total"  # {code}
REQUESTS_IN_FLIGHT: Final = PREFIX + "requests_in_flight"
REQUEST_DURATION: Final = PREFIX + "request_duration_seconds"  # histogram
UPSTREAM_DURATION: Final = PREFIX + "upstream_duration_seconds"  # histogram
# Where a request's time goes: request duration = model duration + sidecar overhead.
MODEL_DURATION: Final = PREFIX + "model_duration_seconds"  # histogram, until the answer's end
SIDECAR_OVERHEAD: Final = PREFIX + "sidecar_overhead_seconds"  # histogram
# The model's own stages, from its Server-Timing response header (dur, in seconds).
MODEL_STAGE_DURATION: Final = PREFIX + "model_stage_duration_seconds"  # {stage}, histogram
SERVER_TIMING_MALFORMED: Final = PREFIX + "server_timing_malformed_total"
REQUEST_BYTES: Final = PREFIX + "request_bytes_total"
RESPONSE_BYTES: Final = PREFIX + "response_bytes_total"
CAPTURE_RECORDS: Final = PREFIX + "capture_records_total"
CAPTURE_BODIES_PARSED: Final = PREFIX + "capture_bodies_parsed_total"
CAPTURE_SKIPPED: Final = PREFIX + "capture_skipped_total"  # {reason: SkipReason}
CAPTURE_DROPPED: Final = PREFIX + "capture_dropped_total"  # {queue: DropQueue}
# Captured exchanges whose request was counted but whose response could not be read.
CAPTURE_RESPONSES_UNREAD: Final = PREFIX + "capture_responses_unread_total"  # {reason}
SCHEMA_VIOLATIONS: Final = PREFIX + "schema_violations_total"  # {kind: SchemaViolation}

# Binned features and predictions.
FEATURE_BIN: Final = PREFIX + "feature_bin_total"  # {feature, bin}
FEATURE_MISSING: Final = PREFIX + "feature_missing_total"  # {feature}
FEATURE_OUT_OF_RANGE: Final = PREFIX + "feature_out_of_range_total"  # {feature}
PREDICTION_CLASS: Final = PREFIX + "prediction_class_total"  # {class}
PREDICTION_BIN: Final = PREFIX + "prediction_bin_total"  # {bin}
PREDICTION_MISSING: Final = PREFIX + "prediction_missing_total"
PREDICTION_OUT_OF_RANGE: Final = PREFIX + "prediction_out_of_range_total"
PREDICTION_SCORE: Final = PREFIX + "prediction_score"  # histogram

# The canary split and the shadow mirror.
ROUTED_REQUESTS: Final = PREFIX + "routed_requests_total"  # {target: ROUTED_TO_CANARY}
CANARY_WEIGHT: Final = PREFIX + "canary_weight_percent"  # gauge: the split this sidecar applies
SHADOW_REQUESTS: Final = PREFIX + "shadow_requests_total"  # {outcome: ShadowOutcome}
SHADOW_REQUESTS_IN_FLIGHT: Final = PREFIX + "shadow_requests_in_flight"
SHADOW_ERRORS: Final = PREFIX + "shadow_errors_total"  # {side: Side}
SHADOW_DURATION: Final = PREFIX + "shadow_duration_seconds"  # {side: Side}, histogram
SHADOW_ABS_DIFFERENCE: Final = PREFIX + "shadow_abs_difference"  # summary
SHADOW_REL_DIFFERENCE: Final = PREFIX + "shadow_rel_difference"  # summary

ROUTED_TO_CANARY: Final = "canary"

# Ground truth joined to predictions (POST /v1/feedback). Segments and classes
# are bounded: the configured classes and the segment feature's profiled
# categories, each with "__other__".
SEGMENT: Final = "segment"  # "" without a segment feature
ACTUAL: Final = "actual"
PREDICTED: Final = "predicted"
QUANTITY: Final = "quantity"
LABELLED_AS: Final = "labelled_as"  # OneVsRest: the label was the class, or another
LABELS: Final = PREFIX + "labels_total"  # {outcome: LabelOutcome}
LABELS_PENDING: Final = PREFIX + "labels_pending"  # gauge: predictions waiting for a label
QUALITY_CONFUSION: Final = PREFIX + "quality_confusion_total"  # {segment, actual, predicted}
QUALITY_SCORE_BIN: Final = PREFIX + "quality_score_bin_total"  # {segment, actual, bin}
QUALITY_REGRESSION: Final = PREFIX + "quality_regression_sum"  # {segment, quantity}, a gauge
# Multiclass: every prediction's own score (its class's probability) by predicted
# class, in the score buckets, for the label-free accuracy estimate.
PREDICTED_CLASS_SCORE: Final = PREFIX + "predicted_class_score"  # {class}, histogram
# Multiclass: each class's score in score bins, labelled as that class or not.
QUALITY_CLASS_SCORE_BIN: Final = (
    PREFIX + "quality_class_score_bin_total"  # {segment, class, labelled_as, bin}
)
# Stage names past the first MAX_STAGES a sidecar saw are counted as OTHER_STAGE.
MAX_STAGES: Final = 16
OTHER_STAGE: Final = "__other__"


class SkipReason(StrEnum):
    """Why an exchange was forwarded but not captured."""

    UNPARSED = "unparsed"
    TOO_LARGE = "too_large"


class ResponseUnread(StrEnum):
    """Why a captured exchange's response was not read (its request still was)."""

    ENCODING = "encoding"  # a content coding capture does not decode
    CORRUPT = "corrupt"  # not what its content coding says
    TOO_LARGE = "too_large"  # over capture.max_body_bytes, or decoding past max_decoded_bytes
    UNPARSED = "unparsed"  # not JSON, or JSON in no shape the protocol knows


class DropQueue(StrEnum):
    """The queue that was full."""

    CAPTURE = "capture"
    LOG = "log"


class SchemaViolation(StrEnum):
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"


class ShadowOutcome(StrEnum):
    MIRRORED = "mirrored"
    DROPPED = "dropped"
    COMPARED = "compared"
    AGREED = "agreed"


class Side(StrEnum):
    """Which upstream a mirrored request's error or latency is counted for."""

    STABLE = "stable"
    SHADOW = "shadow"


class LabelOutcome(StrEnum):
    """What became of a label posted to ``/v1/feedback``."""

    JOINED = "joined"
    UNKNOWN = "unknown"  # no prediction with that id (never seen, or forgotten at a restart)
    EXPIRED = "expired"  # its prediction waited longer than feedback.ttl_seconds, or was evicted
    DUPLICATE = "duplicate"  # its prediction already has a label


class OneVsRest(StrEnum):
    """A multiclass score's label: the class the score is for, or another one."""

    CLASS = "class"
    REST = "rest"


class RegressionQuantity(StrEnum):
    """The sums a regression's quality is computed from (error = predicted - actual)."""

    COUNT = "count"
    ACTUAL = "actual"
    ACTUAL_SQUARED = "actual_squared"
    ERROR = "error"
    ABS_ERROR = "abs_error"
    SQUARED_ERROR = "squared_error"
