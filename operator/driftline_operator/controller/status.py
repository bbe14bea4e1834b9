"""What a ModelMonitor's status says after reconciling: pure functions, no I/O.

The kopf handlers feed these the object and what they read from the API, and
patch whatever comes back into `.status`. Every field is camelCase, as stored.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from driftline_operator.api.selectors import selects
from driftline_operator.api.spec import LabelSelector
from driftline_operator.api.status import CONFIGURED, READY, PodCounts, condition, upsert_condition
from driftline_operator.webhook.inject import is_injected

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


def not_ready(body: Mapping[str, Any], *, reason: str, message: str, now: str) -> dict[str, Any]:
    """Status for a monitor that cannot work (invalid spec, missing reference)."""
    status = body.get("status") or {}
    return {
        "phase": "Invalid",
        "observedGeneration": body.get("metadata", {}).get("generation"),
        "conditions": upsert_condition(
            status.get("conditions", []),
            condition(READY, "False", reason=reason, message=message),
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
            condition(READY, "True", reason=CONFIGURED, message=message),
            now=now,
        ),
    }


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
