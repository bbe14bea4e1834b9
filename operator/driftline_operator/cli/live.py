"""A live ModelMonitor as a report's inputs (``driftline report --monitor NAME``).

Read the way the operator reads it: the monitor's spec and status, its
reference profile from the ConfigMap ``spec.reference`` names, the stable
pods ``webhook.inject.pod_targets`` picks, and their counts from the source
``spec.metrics`` asks for (``sources.factory.make_source``: the sidecars'
snapshots, or Prometheus). The counts are cumulative, so the report judges
everything each sidecar counted since it started, merged over the pods, with
the monitor's own ``spec.drift`` (the operator judges a sliding
``spec.drift.window`` of the same counts).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient
from pydantic import ValidationError

from driftline_operator import kube
from driftline_operator.api.events import Event, EventType
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.api.status import ModelMonitorStatus
from driftline_operator.cli.compare import Comparison, Dataset, DriftInputError
from driftline_operator.cli.status import Reader
from driftline_operator.sources import MetricsSource, PodTarget
from driftline_operator.sources.factory import make_source
from driftline_operator.webhook.inject import pod_targets
from driftline_sidecar.contract.profile import ReferenceProfile
from driftline_sidecar.contract.snapshot import LayoutMismatch, Snapshot, merge

JUDGED_ROLE = "stable"  # as the operator: a canary or shadow is the rollout's business


@dataclass
class LiveMonitor:
    comparison: Comparison
    spec: ModelMonitorSpec
    status: ModelMonitorStatus | None
    events: list[tuple[str, Event]]  # (time, Event), oldest first
    left_out: dict[str, str]  # pod -> why its counts are not in the report


def _first_error(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    return ".".join(str(p) for p in first["loc"]) + f": {first['msg']}"


def read_profile(
    api: ApiClient, namespace: str, spec: ModelMonitorSpec, where: str
) -> tuple[ReferenceProfile, str, str]:
    """The profile, the sha256 of its document (as the sidecar hashes it), and where it is."""
    if spec.reference is None:
        raise DriftInputError(
            f"{where} has no spec.reference: there is no profile to judge drift against"
        )
    ref = spec.reference.config_map_ref
    location = f"ConfigMap {namespace}/{ref.name} key {ref.key!r}"
    config_map = kube.read(api, kube.CONFIGMAPS, namespace, ref.name)
    if config_map is None:
        raise DriftInputError(f"{where}: spec.reference.configMapRef: {location} not found")
    text = (config_map.get("data") or {}).get(ref.key)
    if text is None:
        raise DriftInputError(f"{where}: spec.reference.configMapRef: {location} is missing")
    try:
        profile = ReferenceProfile.model_validate_json(text)
    except ValidationError as error:
        raise DriftInputError(
            f"{location} is not a Driftline profile: {_first_error(error)}"
        ) from None
    return profile, hashlib.sha256(text.encode()).hexdigest(), location


async def _collect(
    source: MetricsSource, targets: Sequence[PodTarget]
) -> tuple[dict[str, Snapshot], dict[str, str]]:
    try:
        collection = await source.collect(targets, now=time.time())
    finally:
        await source.close()
    return collection.snapshots, dict(collection.unreachable)


def _merged(
    snapshots: dict[str, Snapshot], sha: str, left_out: dict[str, str]
) -> tuple[Snapshot | None, int]:
    total: Snapshot | None = None
    pods = 0
    for pod, snapshot in sorted(snapshots.items()):
        if snapshot.profile_sha256 not in (sha, ""):
            left_out[pod] = f"binned against another profile ({snapshot.profile_sha256[:12]})"
            continue
        try:
            total = snapshot if total is None else merge([total, snapshot])
        except LayoutMismatch as error:
            left_out[pod] = f"counts do not add up with the other pods: {error}"
            continue
        pods += 1
    return total, pods


def read_monitor(
    api: ApiClient, namespace: str, name: str, *, timeout: float = 10.0
) -> LiveMonitor:
    where = f"ModelMonitor {namespace}/{name}"
    reader = Reader(api)
    body = reader.monitor(namespace, name)
    try:
        spec = ModelMonitorSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        raise DriftInputError(f"{where}: spec.{_first_error(error)}") from None
    status: ModelMonitorStatus | None
    try:
        status = ModelMonitorStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = None  # an operator of another version: the counts still make a report
    profile, sha, location = read_profile(api, namespace, spec, where)
    pods = kube.list_objects(api, kube.PODS, namespace, selector=spec.selector)
    targets = [t for t in pod_targets(pods, spec) if t.role == JUDGED_ROLE]
    if not targets:
        raise DriftInputError(
            f"{where}: no running {JUDGED_ROLE} pod with the sidecar to ask for counts"
        )
    source = make_source(spec.metrics, timeout=timeout)
    snapshots, left_out = asyncio.run(_collect(source, targets))
    counts, answered = _merged(snapshots, sha, left_out)
    if counts is None:
        why = "; ".join(f"{pod}: {reason}" for pod, reason in sorted(left_out.items()))
        raise DriftInputError(f"{where}: no counts from any {JUDGED_ROLE} pod ({why})")
    comparison = Comparison(
        profile=profile,
        counts=counts,
        reference=Dataset(location, "profile", profile.source.rows),
        current=Dataset(
            f"{answered} {JUDGED_ROLE} pod(s) of {where}, counted since each sidecar started",
            "snapshot",
            counts.capture.records,
        ),
        absent=[f for f in profile.features if f not in counts.features],
    )
    uid = body["metadata"].get("uid", "")
    events = [_event(e) for e in reader.events(namespace, name, uid)]
    return LiveMonitor(comparison, spec, status, events, left_out)


def _event(raw: dict[str, Any]) -> tuple[str, Event]:
    at = str(raw.get("lastTimestamp") or raw.get("eventTime") or raw.get("firstTimestamp") or "")
    kind: EventType = "Warning" if raw.get("type") == "Warning" else "Normal"
    return at, Event(kind, str(raw.get("reason") or ""), str(raw.get("message") or ""))
