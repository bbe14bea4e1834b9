"""The router `spec.rollout.router` names."""

from __future__ import annotations

from collections.abc import Callable

from kubernetes.client import ApiClient

from driftline_operator.rollout.routers import Router, RouterError
from driftline_operator.rollout.routers.gateway_api import GatewayApiRouter
from driftline_operator.rollout.routers.istio import IstioRouter
from driftline_operator.rollout.routers.replicas import ReplicasRouter
from driftline_operator.rollout.routers.sidecar import SidecarRouter


def router_for(name: str, api: ApiClient) -> Router:
    """The router named in `spec.rollout.router`."""
    routers: dict[str, Callable[[ApiClient], Router]] = {
        "sidecar": SidecarRouter,
        "gateway-api": GatewayApiRouter,
        "istio": IstioRouter,
        "replicas": ReplicasRouter,
    }
    if name not in routers:
        raise RouterError(
            f"spec.rollout.router {name!r} is not one of {', '.join(routers)}; pick one of them"
        )
    return routers[name](api)
