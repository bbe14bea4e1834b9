"""Which ModelMonitor, if any, injects a pod being created: pure decisions.

The webhook keeps a kopf index of the ModelMonitors per namespace (one
`MonitorEntry` each, the spec validated once when the object changes, not on
every pod) and asks `choose` for the pod at hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from driftline_operator.api.selectors import selects
from driftline_operator.api.spec import ModelMonitorSpec, spec_from
from driftline_operator.api.status import is_ready
from driftline_operator.webhook.inject import is_injected, opted_out

# Never inject here: the control plane, whatever a ModelMonitor says.
PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonitorEntry:
    name: str
    created: str  # RFC 3339; the oldest monitor wins a tie (stable across restarts)
    spec: ModelMonitorSpec | None  # None: the spec is invalid, never inject for it
    ready: bool  # Ready=True: the sidecar ConfigMap exists, so the pod can mount it

    @property
    def usable(self) -> bool:
        return self.spec is not None and self.ready


def entry_from(body: Mapping[str, Any]) -> MonitorEntry:
    metadata = body.get("metadata", {})
    try:
        spec: ModelMonitorSpec | None = spec_from(dict(body))
    except ValidationError:
        spec = None
    return MonitorEntry(
        name=metadata.get("name", ""),
        created=metadata.get("creationTimestamp") or "",
        spec=spec,
        ready=is_ready(body),
    )


def choose(entries: Iterable[MonitorEntry], labels: Mapping[str, str]) -> MonitorEntry | None:
    """The usable monitor selecting these labels; the oldest if several do."""
    matching = [
        entry
        for entry in entries
        if entry.usable and entry.spec is not None and selects(entry.spec.selector, labels)
    ]
    return min(matching, key=lambda e: (e.created, e.name), default=None)


def skip_reason(
    pod: Mapping[str, Any], *, namespace: str, operator_namespace: str | None
) -> str | None:
    """Why this pod is left as it is, or None when it may be injected."""
    if namespace in PROTECTED_NAMESPACES:
        return f"namespace {namespace} is never injected"
    if operator_namespace and namespace == operator_namespace:
        return "the operator's own namespace is never injected"
    if opted_out(dict(pod)):
        return "the pod opts out (driftline.io/inject: 'false')"
    if is_injected(dict(pod)):
        return "the pod already carries the sidecar"
    return None
