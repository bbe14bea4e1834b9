"""What is worth a notification, and which of a monitor's routes hear of it.

Pure: the rollout loop and the controller hand over what they decided or
found (a rollout's phase change, the analysis' verdict-change Events) and
get `Notice`s; `recipients` applies `spec.notifications`; `routes_condition`
says whether every route names a receiver the operator has.

Severity: a rollout that starts, moves on or is promoted is `info`, a paused
one `warning`, a rolled-back one `critical`; drift of any kind and a
data-quality rate above its threshold are `warning`, an SLO breach `critical`. A recovery (`firing=False`) carries the severity of
what it ends, so every route told of a breach is told of its end (and a
PagerDuty incident is resolved by the receiver that opened it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

from driftline_operator.analysis.data_quality import SUBJECT_PREFIX as DATA_QUALITY_SUBJECT
from driftline_operator.api.events import Event
from driftline_operator.api.spec import NotificationEvent, NotificationRoute, Severity
from driftline_operator.api.status import Condition, condition
from driftline_operator.rollout.notifications import SEVERITIES, Notice

NOTIFICATIONS_READY: Final = "NotificationsReady"  # the condition's type
ROUTED: Final = "ReceiversFound"
NO_ROUTES: Final = "NoRoutes"
UNKNOWN_RECEIVER: Final = "UnknownReceiver"

# The analysis' verdict-change Events that are notified: reason -> (event
# kind, signal unless the Event names its subject, severity, firing).
VERDICT_REASONS: Final[Mapping[str, tuple[NotificationEvent, str, Severity, bool]]] = {
    "SLOBreached": ("slo", "slo", "critical", True),
    "SLORecovered": ("slo", "slo", "critical", False),
    "DriftDetected": ("drift", "drift", "warning", True),
    "DriftCleared": ("drift", "drift", "warning", False),
    "PredictionDriftDetected": ("drift", "drift/prediction", "warning", True),
    "PredictionDriftCleared": ("drift", "drift/prediction", "warning", False),
    "AttributionDrifted": ("drift", "drift/attribution", "warning", True),
    "AttributionDriftResolved": ("drift", "drift/attribution", "warning", False),
    # Their own kind: broken inputs (a pipeline dropping a field) are not a
    # changed world, and may need someone else than drift does.
    "DataQualityDegraded": ("dataQuality", "dataQuality", "warning", True),
    "DataQualityRecovered": ("dataQuality", "dataQuality", "warning", False),
}

# A rollout phase that is trouble, and how much.
_ROLLOUT_TROUBLE: Final[Mapping[str, Severity]] = {"Paused": "warning", "Failed": "critical"}


def recipients(routes: Iterable[NotificationRoute], notice: Notice) -> list[str]:
    """The receivers of the routes that take `notice`'s kind at its severity."""
    rank = SEVERITIES.index(notice.severity)
    return [
        route.receiver
        for route in routes
        if notice.kind in route.events and rank >= SEVERITIES.index(route.min_severity)
    ]


def routes_condition(routes: Sequence[NotificationRoute], receivers: Collection[str]) -> Condition:
    """NotificationsReady: False (UnknownReceiver) while a route names a
    receiver the operator was not installed with; the other routes still work."""
    known = ", ".join(sorted(receivers)) or "none"
    unknown = [r.receiver for r in routes if r.receiver not in receivers]
    if unknown:
        where = ", ".join(
            f"spec.notifications[{i}].receiver {r.receiver!r}"
            for i, r in enumerate(routes)
            if r.receiver in unknown
        )
        return condition(
            NOTIFICATIONS_READY,
            "False",
            reason=UNKNOWN_RECEIVER,
            message=(
                f"{where}: the operator has no such receiver (it has: {known}); add it to the "
                "chart's notifications.receivers, or route to one it has. The other routes "
                "are notified."
            ),
        )
    if not routes:
        return condition(
            NOTIFICATIONS_READY, "True", reason=NO_ROUTES, message="spec.notifications is empty"
        )
    names = ", ".join(r.receiver for r in routes)
    return condition(NOTIFICATIONS_READY, "True", reason=ROUTED, message=f"notified: {names}")


def rollout_notice(
    *,
    namespace: str,
    monitor: str,
    previous_phase: str | None,
    phase: str | None,
    event: Event,
    numbers: Mapping[str, Any],
) -> Notice:
    """A rollout's phase change: firing while it is paused or failed, and the
    change that leaves such a phase resolves it."""
    trouble = _ROLLOUT_TROUBLE.get(phase or "")
    ended = _ROLLOUT_TROUBLE.get(previous_phase or "")
    return Notice(
        namespace=namespace,
        monitor=monitor,
        kind="rollout",
        signal="rollout",
        firing=trouble is not None,
        severity=trouble or ended or "info",
        reason=event.reason,
        message=f"{previous_phase or 'None'} → {phase or 'None'}: {event.message}",
        numbers={"Phase": phase or "None", **numbers},
    )


def verdict_notices(
    events: Iterable[Event], *, namespace: str, monitor: str, status: Mapping[str, Any]
) -> list[Notice]:
    """The analysis' verdict changes among `events`, with the figures the
    status patch (`status`, camelCase) holds for them."""
    notices = []
    for event in events:
        known = VERDICT_REASONS.get(event.reason)
        if known is None:
            continue
        kind, signal, severity, firing = known
        signal = event.subject or signal
        notices.append(
            Notice(
                namespace=namespace,
                monitor=monitor,
                kind=kind,
                signal=signal,
                firing=firing,
                severity=severity,
                reason=event.reason,
                message=event.message,
                numbers=_figures(signal, status),
            )
        )
    return notices


def _figures(signal: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers behind a verdict, from the status patch."""
    if signal.startswith("slo/"):
        name = signal.removeprefix("slo/")
        slos: list[dict[str, Any]] = status.get("slos") or []
        slo = next((s for s in slos if s.get("name") == name), {})
        return {k: slo[k] for k in ("value", "objective", "burnRate") if slo.get(k) is not None}
    if signal == "drift":
        drift = status.get("drift") or {}
        return {k: drift[k] for k in ("driftedShare", "drifted") if drift.get(k) is not None}
    if signal == "drift/prediction":
        prediction = (status.get("drift") or {}).get("prediction") or {}
        return {k: prediction[k] for k in ("method", "score", "threshold") if k in prediction}
    if signal == "drift/attribution":
        explanations = status.get("explanations") or {}
        return {k: explanations[k] for k in ("distance", "threshold") if k in explanations}
    if signal.startswith(DATA_QUALITY_SUBJECT):
        return _data_quality_figures(signal.removeprefix(DATA_QUALITY_SUBJECT), status)
    return {}


def _data_quality_figures(key: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """The rate now (`<feature>/<metric>`, or `schemaErrorRate`) and its rows."""
    quality = status.get("dataQuality") or {}
    feature, _, metric = key.rpartition("/")
    if not feature:
        found = {metric: quality.get(metric), "rows": quality.get("rows")}
        return {k: v for k, v in found.items() if v is not None}
    features: list[dict[str, Any]] = quality.get("features") or []
    row = next((f for f in features if f.get("name") == feature), {})
    found = {"feature": feature, metric: row.get(metric), "rows": row.get("rows")}
    return {k: v for k, v in found.items() if v is not None}
