"""What promotion and rollback do to Deployments, and the shell that carries
out a rollout decision's actions.

Templates are identified by `template_hash`: a hash of the pod template
without the `pod-template-hash` label Kubernetes adds to ReplicaSets, so a
Deployment's template and the ReplicaSet made from it hash the same, and a
stable Deployment that took the canary's template hashes like the canary.

Each write replaces the template exactly (a merge patch that also removes
keys the new template lacks) and is guarded by the resourceVersion it was
computed from; a conflict (409) is read again and retried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient

from driftline_operator.api.names import ROLE_LABEL
from driftline_operator.kube import (
    DEPLOYMENTS,
    REPLICASETS,
    Obj,
    aget,
    alist_objects,
    apatch,
    aupdate,
    replacing,
    selector_of,
)
from driftline_operator.rollout.machine import (
    Action,
    PromoteCanary,
    RestoreRevision,
    ScaleCanaryToZero,
    SetWeight,
    StartCanary,
)
from driftline_operator.rollout.routers import Router, RouterError, RouteTarget

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
# Canary pods carry driftline.io/role: canary (names.ROLE_LABEL); it says where
# a template runs, not what it runs, so hashes ignore it and promotion drops it.


def template_of(obj: Obj) -> Obj:
    """A Deployment's or ReplicaSet's pod template, without the hash label."""
    template = json.loads(json.dumps(obj.get("spec", {}).get("template") or {}))
    labels = template.get("metadata", {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return template  # type: ignore[no-any-return]


def _selector_labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {})


def template_hash(obj: Obj) -> str:
    """What a template runs, ignoring the labels its owner selects pods by
    (they differ between stable and canary by necessity) and the role label."""
    template = template_of(obj)
    labels = template.get("metadata", {}).get("labels")
    if labels:
        for key in [*_selector_labels(obj), ROLE_LABEL]:
            labels.pop(key, None)
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


async def read(api: ApiClient, namespace: str, name: str) -> Obj:
    return await aget(api, DEPLOYMENTS, namespace, name)


async def copy_template(api: ApiClient, namespace: str, name: str, template: Obj) -> None:
    """Give Deployment `name` exactly this pod template (a rolling update)."""

    def change(deployment: Obj) -> Obj | None:
        current = template_of(deployment)
        if current == template:
            return None
        return {"spec": {"template": replacing(current, template)}}

    await aupdate(api, DEPLOYMENTS, namespace, name, change)


async def promote(api: ApiClient, namespace: str, *, stable: str, canary: str) -> None:
    """The stable Deployment takes the canary's pod template, except the
    labels each Deployment selects its pods by: stable keeps its own (else
    the API refuses a template its selector does not match), and the role
    label: promoted pods are stable, whatever the canary's were."""
    source = await read(api, namespace, canary)
    template = template_of(source)
    metadata = template.setdefault("metadata", {})
    labels = {k: v for k, v in (metadata.get("labels") or {}).items()}
    for key in [*_selector_labels(source), ROLE_LABEL]:
        labels.pop(key, None)
    target = await read(api, namespace, stable)
    own_role = (template_of(target).get("metadata", {}).get("labels") or {}).get(ROLE_LABEL)
    role = {ROLE_LABEL: own_role} if own_role is not None else {}
    metadata["labels"] = {**labels, **role, **_selector_labels(target)}
    await copy_template(api, namespace, stable, template)


async def scale(api: ApiClient, namespace: str, name: str, replicas: int) -> None:
    body = {"spec": {"replicas": replicas}}
    await apatch(api, DEPLOYMENTS, namespace, name, body, subresource="scale")


async def start_canary(api: ApiClient, namespace: str, *, stable: str, canary: str) -> None:
    """A canary scaled to zero (by an earlier promotion or rollback) gets as
    many pods as stable has, so the analysis compares like with like."""
    deployment = await read(api, namespace, canary)
    if deployment.get("spec", {}).get("replicas", 1) == 0:
        replicas = (await read(api, namespace, stable)).get("spec", {}).get("replicas", 1)
        await scale(api, namespace, canary, max(1, int(replicas)))


@dataclass(frozen=True)
class Revision:
    number: int  # the deployment.kubernetes.io/revision annotation
    hash: str  # template_hash of its template
    template: Obj
    name: str = ""  # the ReplicaSet's name (its pods name it as their owner)


async def revisions(api: ApiClient, namespace: str, name: str) -> list[Revision]:
    """The Deployment's ReplicaSets as revisions, newest first."""
    deployment = await read(api, namespace, name)
    selector = selector_of(deployment)
    uid = deployment["metadata"].get("uid")
    found = []
    for replica_set in await alist_objects(api, REPLICASETS, namespace, selector=selector):
        owners = replica_set["metadata"].get("ownerReferences") or []
        if uid is not None and not any(o.get("uid") == uid for o in owners):
            continue  # another Deployment's ReplicaSet with overlapping labels
        number = (replica_set["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)
        if number is not None:
            found.append(
                Revision(
                    int(number),
                    template_hash(replica_set),
                    template_of(replica_set),
                    replica_set["metadata"].get("name", ""),
                )
            )
    return sorted(found, key=lambda r: r.number, reverse=True)


async def previous_revision(api: ApiClient, namespace: str, name: str) -> str | None:
    """The hash of the revision before the current template (`rollout undo`'s target)."""
    current = template_hash(await read(api, namespace, name))
    for revision in await revisions(api, namespace, name):
        if revision.hash != current:
            return revision.hash
    return None


async def restore(api: ApiClient, namespace: str, name: str, revision_hash: str) -> None:
    """Roll the Deployment back to the template of an earlier revision."""
    for revision in await revisions(api, namespace, name):
        if revision.hash == revision_hash:
            await copy_template(api, namespace, name, revision.template)
            return
    raise RouterError(
        f"Deployment {namespace}/{name} has no ReplicaSet with template {revision_hash} to roll "
        "back to (revisionHistoryLimit may have removed it); roll back by hand"
    )


async def carry_out(
    actions: Sequence[Action],
    *,
    api: ApiClient,
    router: Router | None,
    target: RouteTarget,
    deployment: str | None = None,
) -> None:
    """Take a decision's actions in order. `deployment` is the guarded
    Deployment (guard strategy, which routes nothing: `router` None); the
    others act on the target's pair."""
    namespace = target.namespace
    for action in actions:
        match action:
            case SetWeight(weight=weight):
                if router is None:
                    raise RouterError(f"{action} needs a traffic router")
                await router.set_weight(target, weight)
            case StartCanary():
                if getattr(router, "scales_pods", False):
                    continue  # the replicas router sizes the canary itself
                await start_canary(api, namespace, stable=target.stable, canary=target.canary)
            case PromoteCanary():
                await promote(api, namespace, stable=target.stable, canary=target.canary)
            case ScaleCanaryToZero():
                await scale(api, namespace, target.canary, 0)
            case RestoreRevision(revision=revision):
                await restore(api, namespace, deployment or target.stable, revision)
            case _:
                _unreachable: Any = action
                raise TypeError(f"unknown rollout action {_unreachable!r}")
