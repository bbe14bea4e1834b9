"""One ModelMonitor's analysis loop, without kopf: what the daemon runs each tick.

A tick lists the selected pods, counts them, turns the injected, running
ones into collection targets, hands those to the analysis, and merges what
comes back into `.status`. The daemon in `handlers` owns the timing and posts
the returned Events through kopf.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client import ApiClient

from driftline_operator import kube, status
from driftline_operator.collect import PodTarget
from driftline_operator.crd import ModelMonitorSpec
from driftline_operator.inject import is_injected, selects

ROLE_LABEL = "driftline.io/role"  # canary / shadow pods carry it; the rest are stable

Event = tuple[str, str, str]  # (type, reason, message), as kopf.event takes them


def pod_targets(pods: Iterable[Mapping[str, Any]], spec: ModelMonitorSpec) -> list[PodTarget]:
    """The pods whose sidecar can be asked for a snapshot: selected, injected,
    running and with an IP. Others are counted in status, not collected."""
    targets: list[PodTarget] = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        pod_status = pod.get("status") or {}
        if metadata.get("deletionTimestamp") or pod_status.get("phase") != "Running":
            continue
        if not pod_status.get("podIP") or not selects(spec.selector, labels):
            continue
        if not is_injected(dict(pod)):
            continue
        targets.append(
            PodTarget(
                name=metadata.get("name", ""),
                ip=pod_status["podIP"],
                admin_port=spec.sidecar.admin_port,
                role=labels.get(ROLE_LABEL, "stable"),
            )
        )
    return sorted(targets, key=lambda t: t.name)


class AnalysisLoop:
    """The state one monitor keeps between ticks (the previous collection lives
    in the analysis runner it owns)."""

    def __init__(
        self, *, api: ApiClient, namespace: str, name: str, logger: logging.Logger | Any
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name
        self._logger = logger

    async def tick(self, *, spec: ModelMonitorSpec, body: Mapping[str, Any]) -> list[Event]:
        pods = await asyncio.to_thread(kube.list_pods, self._api, self._namespace, spec.selector)
        counts = status.pod_counts(pods, spec.selector)
        patch: dict[str, Any] = {"pods": counts.model_dump(by_alias=True)}
        events: list[Event] = []
        await asyncio.to_thread(
            kube.patch_monitor_status, self._api, self._namespace, self._name, patch
        )
        return events
