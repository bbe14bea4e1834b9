"""Replicas: the canary's share approximated by replica counts.

With no traffic router at all, a Service selecting both Deployments' pods
spreads requests over them evenly, so the canary's share of the pods is its
share of the traffic. The total number of pods is kept: weight N gives the
canary round(total * N / 100) of them (at least one while N > 0, and stable
at least one while N < 100), through the scale subresource.
"""

from __future__ import annotations

from kubernetes.client import ApiClient

from driftline_operator.kube import DEPLOYMENTS, aget, apatch, aread
from driftline_operator.rollout.routers import RouteTarget


class ReplicasRouter:
    scales_pods = True  # the canary's pods are this router's business, not StartCanary's

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def _replicas(self, target: RouteTarget) -> tuple[int, int]:
        stable = await aget(self.api, DEPLOYMENTS, target.namespace, target.stable)
        canary = await aget(self.api, DEPLOYMENTS, target.namespace, target.canary)
        return _count(stable), _count(canary)

    async def set_weight(self, target: RouteTarget, weight: float) -> None:
        if not 0.0 <= weight <= 100.0:
            raise ValueError(f"a canary weight is a percentage in 0..100, got {weight}")
        stable, canary = await self._replicas(target)
        wanted_stable, wanted_canary = split_replicas(stable + canary, weight)
        # Grow before shrinking, so capacity never dips below the total.
        changes = [(target.canary, canary, wanted_canary), (target.stable, stable, wanted_stable)]
        changes.sort(key=lambda change: change[2] < change[1])
        for name, current, wanted in changes:
            if wanted != current:
                body = {"spec": {"replicas": wanted}}
                await apatch(
                    self.api, DEPLOYMENTS, target.namespace, name, body, subresource="scale"
                )

    async def get_weight(self, target: RouteTarget) -> float:
        if await aread(self.api, DEPLOYMENTS, target.namespace, target.canary) is None:
            return 0.0  # no canary Deployment, no canary pods
        stable, canary = await self._replicas(target)
        return 100.0 * canary / (stable + canary) if stable + canary else 0.0

    async def finalize(self, target: RouteTarget) -> None:
        if await aread(self.api, DEPLOYMENTS, target.namespace, target.canary) is None:
            return  # nothing to take traffic from
        await self.set_weight(target, 0.0)


def split_replicas(total: int, weight: float) -> tuple[int, int]:
    """(stable, canary) pods for `weight` percent of `total`."""
    canary = round(total * weight / 100)
    if weight > 0 and total > 0:
        canary = max(canary, 1)
    if weight < 100 and total >= 1:  # stable keeps a pod: one pod cannot be split
        canary = min(canary, total - 1)
    return total - canary, canary


def _count(deployment: dict[str, object]) -> int:
    spec = deployment.get("spec")
    replicas = spec.get("replicas") if isinstance(spec, dict) else None
    return 1 if replicas is None else int(replicas)  # the API's default is 1
