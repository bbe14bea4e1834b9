"""Gateway API: weights on an HTTPRoute's backendRefs.

Every rule whose backendRefs name the stable Service gets the split: the
canary Service (added next to stable, same port, if missing) weighs N and
stable 100 - N. Rules that do not route to stable are left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes.client import ApiClient

from driftline_operator.kube import Obj, Resource, aget, aupdate
from driftline_operator.rollout.routers import RouterError, RouteTarget
from driftline_operator.rollout.routers._split import Entry, percent, share, split

HTTPROUTES = Resource("gateway.networking.k8s.io/v1", "httproutes", "HTTPRoute")


class GatewayApiRouter:
    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def set_weight(self, target: RouteTarget, weight: float) -> None:
        canary_weight = percent(weight)

        def change(route: Obj) -> Obj | None:
            rules = route.get("spec", {}).get("rules") or []
            new_rules, touched = [], False
            for rule in rules:
                refs = split(
                    rule.get("backendRefs") or [],
                    is_stable=_named(target.stable_service),
                    is_canary=_named(target.canary_service),
                    weight=canary_weight,
                    canary_from_stable=lambda ref: {**ref, "name": target.canary_service},
                )
                touched |= refs is not None
                new_rules.append(rule if refs is None else {**rule, "backendRefs": refs})
            if not touched:
                raise _no_stable(target)
            return None if new_rules == rules else {"spec": {"rules": new_rules}}

        await aupdate(self.api, HTTPROUTES, target.namespace, _route(target), change)

    async def get_weight(self, target: RouteTarget) -> float:
        route = await aget(self.api, HTTPROUTES, target.namespace, _route(target))
        for rule in route.get("spec", {}).get("rules") or []:
            refs = rule.get("backendRefs") or []
            if any(_named(target.stable_service)(r) for r in refs):
                return share(refs, is_canary=_named(target.canary_service))
        raise _no_stable(target)

    async def finalize(self, target: RouteTarget) -> None:
        await self.set_weight(target, 0.0)


def _named(name: str) -> Callable[[Entry], bool]:
    def check(ref: Entry) -> bool:
        return ref.get("name") == name and ref.get("kind", "Service") == "Service"

    return check


def _route(target: RouteTarget) -> str:
    if target.route is None:
        raise RouterError(
            f"ModelMonitor {target.namespace}/{target.monitor}: the gateway-api router needs "
            "spec.rollout.routeRef naming the HTTPRoute"
        )
    return target.route


def _no_stable(target: RouteTarget) -> RouterError:
    return RouterError(
        f"HTTPRoute {target.namespace}/{target.route} has no rule with a backendRef to the "
        f"stable Service {target.stable_service!r}; add one (the canary backendRef "
        f"{target.canary_service!r} is added and weighted by Driftline)"
    )
