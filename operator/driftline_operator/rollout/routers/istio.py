"""Istio: weights on a VirtualService's HTTP route destinations.

Every `http` route that sends traffic to the stable host gets the split: the
canary host (added with the stable destination's port, if missing) weighs N,
stable 100 - N. A host matches by its first DNS label, so `fraud-v1` and
`fraud-v1.ml.svc.cluster.local` are the same Service.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes.client import ApiClient

from driftline_operator.kube import Obj, Resource, aget, aupdate
from driftline_operator.rollout.routers import RouterError, RouteTarget
from driftline_operator.rollout.routers._split import Entry, percent, share, split

VIRTUALSERVICES = Resource("networking.istio.io/v1beta1", "virtualservices", "VirtualService")


class IstioRouter:
    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def set_weight(self, target: RouteTarget, weight: float) -> None:
        canary_weight = percent(weight)

        def change(service: Obj) -> Obj | None:
            routes = service.get("spec", {}).get("http") or []
            new_routes, touched = [], False
            for route in routes:
                destinations = split(
                    route.get("route") or [],
                    is_stable=_host(target.stable_service),
                    is_canary=_host(target.canary_service),
                    weight=canary_weight,
                    canary_from_stable=lambda d: _canary_destination(d, target),
                )
                touched |= destinations is not None
                new_routes.append(
                    route if destinations is None else {**route, "route": destinations}
                )
            if not touched:
                raise _no_stable(target)
            return None if new_routes == routes else {"spec": {"http": new_routes}}

        await aupdate(self.api, VIRTUALSERVICES, target.namespace, _name(target), change)

    async def get_weight(self, target: RouteTarget) -> float:
        service = await aget(self.api, VIRTUALSERVICES, target.namespace, _name(target))
        for route in service.get("spec", {}).get("http") or []:
            destinations = route.get("route") or []
            if any(_host(target.stable_service)(d) for d in destinations):
                return share(destinations, is_canary=_host(target.canary_service))
        raise _no_stable(target)

    async def finalize(self, target: RouteTarget) -> None:
        await self.set_weight(target, 0.0)


def _host(service: str) -> Callable[[Entry], bool]:
    def check(destination: Entry) -> bool:
        host = str(destination.get("destination", {}).get("host", ""))
        return host.split(".", 1)[0] == service

    return check


def _canary_destination(stable: Entry, target: RouteTarget) -> Entry:
    destination = dict(stable.get("destination", {}))
    suffix = str(destination.get("host", "")).partition(".")[2]
    destination["host"] = f"{target.canary_service}.{suffix}" if suffix else target.canary_service
    destination.pop("subset", None)
    return {**stable, "destination": destination}


def _name(target: RouteTarget) -> str:
    if target.route is None:
        raise RouterError(
            f"ModelMonitor {target.namespace}/{target.monitor}: the istio router needs "
            "spec.rollout.routeRef naming the VirtualService"
        )
    return target.route


def _no_stable(target: RouteTarget) -> RouterError:
    return RouterError(
        f"VirtualService {target.namespace}/{target.route} has no http route to the stable "
        f"host {target.stable_service!r}; add one (the canary destination "
        f"{target.canary_service!r} is added and weighted by Driftline)"
    )
