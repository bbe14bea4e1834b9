"""What a ModelMonitor's status says after reconciling: pure functions, no I/O.

The kopf handlers feed these the object and what they read from the API, and
patch whatever comes back into `.status`. Every field is camelCase, as stored.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from driftline_operator.crd import Condition, LabelSelector, PodCounts
from driftline_operator.inject import is_injected, selects

READY = "Ready"

# Reasons of the Ready condition (CamelCase, as Kubernetes conventions ask).
INVALID_SPEC = "InvalidSpec"
REFERENCE_NOT_FOUND = "ReferenceNotFound"
CONFIGURED = "SidecarConfigured"

# Phases the analysis owns; reconciling a valid spec does not overwrite them.
_ANALYSED_PHASES = frozenset(
    {"Healthy", "Degraded", "Progressing", "Paused", "Succeeded", "Failed"}
)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def field_path(loc: Sequence[str | int], *, root: str = "spec") -> str:
    """('drift', 'threshold') -> 'spec.drift.threshold'; list indices as [i]."""
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def invalid_spec_message(error: ValidationError) -> str:
    """One line per problem, each naming the field by its YAML (camelCase) path."""
    problems: list[str] = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        # Echo scalars the user typed; whole objects would only add noise.
        if item["type"] != "missing" and isinstance(given, str | int | float | bool):
            message += f" (got {given!r})"
        problems.append(f"{field_path(item['loc'])}: {message}")
    return "; ".join(problems)


def upsert_condition(
    conditions: Iterable[Mapping[str, Any]],
    *,
    type: str,
    status: str,
    reason: str,
    message: str,
    now: str,
) -> list[dict[str, Any]]:
    """The conditions with one of them set; its transition time moves only when its
    status does (what `kubectl wait` and humans reading it rely on)."""
    result: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for condition in conditions:
        if condition.get("type") == type:
            previous = condition
        else:
            result.append(dict(condition))
    changed = previous is None or previous.get("status") != status
    since = now if changed or not previous else previous.get("lastTransitionTime", now)
    new = Condition(
        type=type, status=status, reason=reason, message=message, last_transition_time=since
    )
    result.append(new.model_dump(by_alias=True))
    return result


def not_ready(body: Mapping[str, Any], *, reason: str, message: str, now: str) -> dict[str, Any]:
    """Status for a monitor that cannot work (invalid spec, missing reference)."""
    status = body.get("status") or {}
    return {
        "phase": "Invalid",
        "observedGeneration": body.get("metadata", {}).get("generation"),
        "conditions": upsert_condition(
            status.get("conditions", []),
            type=READY,
            status="False",
            reason=reason,
            message=message,
            now=now,
        ),
    }


def ready(body: Mapping[str, Any], *, config_map: str, pods: PodCounts, now: str) -> dict[str, Any]:
    """Status for a valid monitor whose sidecar config is in place."""
    status = body.get("status") or {}
    phase = status.get("phase")
    message = f"sidecar config in ConfigMap {config_map}; {describe_pods(pods)}"
    return {
        "phase": phase if phase in _ANALYSED_PHASES else "Pending",
        "observedGeneration": body.get("metadata", {}).get("generation"),
        "pods": pods.model_dump(by_alias=True),
        "conditions": upsert_condition(
            status.get("conditions", []),
            type=READY,
            status="True",
            reason=CONFIGURED,
            message=message,
            now=now,
        ),
    }


def is_ready(body: Mapping[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == READY and c.get("status") == "True" for c in conditions)


def _is_live(pod: Mapping[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def pod_counts(
    pods: Iterable[Mapping[str, Any]], selector: LabelSelector, *, unreachable: Sequence[str] = ()
) -> PodCounts:
    """Selected, monitored (carry the sidecar) and not-injected live pods.

    Pods that existed before their ModelMonitor have no sidecar; they are
    counted here so that a user sees them, rather than being restarted.
    """
    selected = [
        pod
        for pod in pods
        if _is_live(pod) and selects(selector, pod.get("metadata", {}).get("labels") or {})
    ]
    monitored = sum(1 for pod in selected if is_injected(dict(pod)))
    return PodCounts(
        selected=len(selected),
        monitored=monitored,
        not_injected=len(selected) - monitored,
        unreachable=list(unreachable),
    )


def describe_pods(pods: PodCounts) -> str:
    text = f"{pods.monitored} of {pods.selected} selected pods carry the sidecar"
    if pods.not_injected:
        text += (
            f"; {pods.not_injected} were created before the ModelMonitor "
            "and are injected when restarted (kubectl rollout restart)"
        )
    return text
