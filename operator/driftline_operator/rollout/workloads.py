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

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import aiohttp
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from driftline_operator.api.names import ROLE_LABEL
from driftline_operator.kube import (
    DEPLOYMENTS,
    REPLICASETS,
    Conflict,
    NotFound,
    Obj,
    aget,
    alist_objects,
    apatch,
    aread,
    aupdate,
    replacing,
    selector_of,
)
from driftline_operator.rollout.loop import Revision, owner_name
from driftline_operator.rollout.machine import (
    Action,
    ActionError,
    PromoteCanary,
    RestoreRevision,
    ScaleCanaryToZero,
    SetWeight,
    StartCanary,
)
from driftline_operator.rollout.routers import Router, RouterError, RouteTarget
from driftline_operator.rollout.routers.factory import router_for

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
# Canary pods carry driftline.io/role: canary (names.ROLE_LABEL); it says where
# a template runs, not what it runs, so hashes ignore it and promotion drops it.


def template_of(obj: Obj) -> Obj:
    """A Deployment's or ReplicaSet's pod template, without the hash label."""
    template = cast(Obj, json.loads(json.dumps(obj.get("spec", {}).get("template") or {})))
    labels = template.get("metadata", {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return template


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
    try:
        await apatch(api, DEPLOYMENTS, namespace, name, body, subresource="scale")
    except ApiException as error:
        if error.status == 404:
            raise NotFound(f"Deployment {namespace}/{name} does not exist") from error
        raise


async def start_canary(api: ApiClient, namespace: str, *, stable: str, canary: str) -> None:
    """A canary scaled to zero (by an earlier promotion or rollback) gets as
    many pods as stable has, so the analysis compares like with like."""
    deployment = await read(api, namespace, canary)
    if deployment.get("spec", {}).get("replicas", 1) == 0:
        replicas = (await read(api, namespace, stable)).get("spec", {}).get("replicas", 1)
        await scale(api, namespace, canary, max(1, int(replicas)))


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


class NotFinalized(ActionError):
    """Traffic is not (yet) all back on stable; the message says what is left
    and why. The monitor's deletion has to wait and try again."""


# What a router or the API raises when one step of finalizing fails.
_FINALIZE_ERRORS = (
    RouterError,
    NotFound,
    Conflict,
    ApiException,
    aiohttp.ClientError,
    TimeoutError,
)


async def finalize(api: ApiClient, *, router: Router, target: RouteTarget) -> None:
    """A canary's ModelMonitor is being deleted: the router sends all traffic
    back to stable, the canary Deployment is scaled to zero, and the router
    is asked again to confirm the canary's weight reads 0 (Flagger's
    finalizer). Every step is idempotent, so a retry repeats only harmless work.

    A stable Deployment that no longer exists has no traffic to take back
    (its namespace may be going away), and a canary Deployment that no longer
    exists needs no scaling. Anything else that fails raises `NotFinalized`.
    """
    who = f"ModelMonitor {target.namespace}/{target.monitor}"
    try:
        if await aread(api, DEPLOYMENTS, target.namespace, target.stable) is None:
            return
        await router.finalize(target)
    except _FINALIZE_ERRORS as error:
        raise NotFinalized(f"{who}: could not send all traffic back to stable: {error}") from error
    try:
        await carry_out((ScaleCanaryToZero(),), api=api, router=router, target=target)
    except NotFound:
        pass  # the canary Deployment is gone: nothing runs it, nothing to scale
    except _FINALIZE_ERRORS as error:
        raise NotFinalized(
            f"{who}: could not scale canary Deployment {target.namespace}/{target.canary} "
            f"to zero: {error}"
        ) from error
    try:
        weight = await router.get_weight(target)
    except _FINALIZE_ERRORS as error:
        raise NotFinalized(f"{who}: could not read the canary's weight back: {error}") from error
    if weight != 0:
        raise NotFinalized(
            f"{who}: the canary still gets {weight:g}% of the traffic after finalizing "
            f"(canary Deployment {target.namespace}/{target.canary})"
        )


class Deployments:
    """`loop.Workloads` on a cluster: a monitor's Deployments, their
    ReplicaSets, and the router its spec names. API failures surface as
    `ActionError`, so the loop retries the decision at the next tick."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self._api = api
        self._namespace = namespace

    def router(self, name: str) -> Router:
        return router_for(name, self._api)

    async def revision(self, name: str) -> str:
        async with _api_errors():
            return template_hash(await read(self._api, self._namespace, name))

    async def revisions(self, name: str) -> list[Revision]:
        async with _api_errors():
            return await revisions(self._api, self._namespace, name)

    async def owner(self, pods: Sequence[Mapping[str, Any]], *, who: str) -> str:
        replica_sets = {owner_name(p, "ReplicaSet") for p in pods} - {None}
        if not replica_sets:
            raise RouterError(
                f"{who}: spec.rollout.strategy guard finds no Deployment: no selected pod "
                "belongs to a ReplicaSet yet; set spec.rollout.stableRef to the Deployment"
            )
        owners: Counter[str] = Counter()
        async with _api_errors():
            every = await alist_objects(self._api, REPLICASETS, self._namespace, selector=None)
        for replica_set in every:
            if replica_set["metadata"].get("name") in replica_sets:
                deployment = owner_name(replica_set, "Deployment")
                if deployment is not None:
                    owners[deployment] += 1
        if len(owners) != 1:
            found = ", ".join(sorted(owners)) or "none"
            raise RouterError(
                f"{who}: spec.rollout.strategy guard needs the selected pods to belong to "
                f"one Deployment (found: {found}); set spec.rollout.stableRef to the one to guard"
            )
        return next(iter(owners))

    async def carry_out(
        self,
        actions: Sequence[Action],
        *,
        router: Router | None,
        target: RouteTarget,
        deployment: str | None = None,
    ) -> None:
        async with _api_errors():
            await carry_out(
                actions, api=self._api, router=router, target=target, deployment=deployment
            )


@contextlib.asynccontextmanager
async def _api_errors() -> AsyncIterator[None]:
    try:
        yield
    except (NotFound, Conflict, ApiException) as error:
        raise ActionError(str(error)) from error
