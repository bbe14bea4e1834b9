"""Traffic routers: what moves a share of requests to the canary.

One module per provider behind one small interface (Flagger's `pkg/router`
shape): `set_weight`, `get_weight`, `finalize`. Adding a provider is a new
file and one line in `factory.router_for`. Every router is idempotent: setting the
weight it already has changes nothing, so the operator may reassert it.

Routers talk to the Kubernetes API through `driftline_operator.kube` (raw
JSON, in a worker thread), so custom resources and core ones look the same;
an object that is not there raises `kube.NotFound`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.rollout.machine import ActionError


class RouterError(ActionError):
    """A router could not do its job; the message names the object and the fix."""


@dataclass(frozen=True)
class RouteTarget:
    """Everything a router needs to know about one rollout's traffic."""

    namespace: str
    monitor: str  # the ModelMonitor's name
    stable: str  # the stable Deployment
    canary: str  # the canary Deployment
    stable_service: str  # the Service (backend, host) in front of the stable pods
    canary_service: str  # the Service in front of the canary pods
    canary_port: str | int = "http"
    route: str | None = None  # gateway-api: the HTTPRoute; istio: the VirtualService
    # sidecar router: where the stable sidecars find their config and admin API
    config_map: str | None = None  # names.config_map_name(monitor)
    config_key: str = "sidecar.yaml"  # names.CONFIG_KEY
    admin_port: int = 9090  # used when a pod does not declare the driftline-admin port
    admin_token: str | None = None  # bearer token for PUT /v1/config

    @classmethod
    def from_spec(
        cls,
        spec: ModelMonitorSpec,
        *,
        namespace: str,
        monitor: str,
        config_map: str | None = None,
        config_key: str = "sidecar.yaml",
        admin_token: str | None = None,
    ) -> RouteTarget:
        rollout = spec.rollout
        if rollout.stable_ref is None or rollout.canary_ref is None:
            raise RouterError(
                f"ModelMonitor {namespace}/{monitor}: spec.rollout needs stableRef and canaryRef "
                "to route traffic"
            )
        service = rollout.canary_service
        return cls(
            namespace=namespace,
            monitor=monitor,
            stable=rollout.stable_ref.name,
            canary=rollout.canary_ref.name,
            # By convention each Deployment's Service is named like it.
            stable_service=rollout.stable_ref.name,
            canary_service=service.name if service else rollout.canary_ref.name,
            canary_port=service.port if service else "http",
            route=rollout.route_ref.name if rollout.route_ref else None,
            config_map=config_map,
            config_key=config_key,
            admin_port=spec.sidecar.admin_port,
            admin_token=admin_token,
        )


class Router(Protocol):
    async def set_weight(self, target: RouteTarget, weight: float) -> None:
        """Send `weight` percent (0..100) of the traffic to the canary."""
        ...

    async def get_weight(self, target: RouteTarget) -> float:
        """The canary's current share in percent."""
        ...

    async def finalize(self, target: RouteTarget) -> None:
        """All traffic back to stable (rollout over, or the monitor deleted)."""
        ...
