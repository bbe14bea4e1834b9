"""The sidecar router without a cluster.

In a cluster `routers.sidecar.SidecarRouter` finds the stable pods through
the Kubernetes API, writes the weight into the sidecar ConfigMap and pushes
it to each pod's admin API. Here the stable sidecars' admin URLs are known
and there is no ConfigMap, so only the push remains: the same function
(`push_routing`: GET the running config, PUT it back with the new routing
section and the bearer token).
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from driftline_operator.rollout.routers import RouterError, RouteTarget
from driftline_operator.rollout.routers.sidecar import push_routing

# What the operator would know the demo's objects by (Events, errors).
DEMO_TARGET = RouteTarget(
    namespace="demo",
    monitor="demo",
    stable="demo-v1",
    canary="demo-v2",
    stable_service="demo-v1",
    canary_service="demo-v2",
)


class LocalSidecarRouter:
    """`routers.Router` over sidecars whose admin URLs are given."""

    def __init__(
        self,
        *,
        stable_admins: Sequence[str],
        canary_url: str,
        token: str,
        session: aiohttp.ClientSession,
    ) -> None:
        self.stable_admins = list(stable_admins)
        self.canary_url = canary_url
        self.token = token
        self.session = session

    async def set_weight(self, target: RouteTarget, weight: float) -> None:
        if not 0.0 <= weight <= 100.0:
            raise ValueError(f"a canary weight is a percentage in 0..100, got {weight}")
        routing = {"canary_url": self.canary_url, "canary_weight": float(weight)}
        failed = []
        for admin in self.stable_admins:
            problem = await push_routing(self.session, admin, token=self.token, routing=routing)
            if problem is not None:
                failed.append(f"{admin}: {problem}")
        if failed:
            raise RouterError(
                f"the canary weight {weight:g}% of {target.monitor} did not reach "
                f"{len(failed)} of {len(self.stable_admins)} stable sidecars: " + "; ".join(failed)
            )

    async def get_weight(self, target: RouteTarget) -> float:
        """The weight the first stable sidecar runs with now."""
        async with self.session.get(f"{self.stable_admins[0]}/v1/config") as response:
            if response.status != 200:
                raise RouterError(f"{self.stable_admins[0]}/v1/config answered {response.status}")
            config = await response.json()
        return float((config.get("routing") or {}).get("canary_weight", 0.0))

    async def finalize(self, target: RouteTarget) -> None:
        await self.set_weight(target, 0.0)
