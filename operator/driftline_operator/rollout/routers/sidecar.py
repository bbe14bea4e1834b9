"""Sidecar: the stable pods' sidecars send N % of requests to the canary.

Needs nothing but Driftline. The router writes the routing section
(`canary_url`, `canary_weight`) into the sidecar ConfigMap, so a restarted
sidecar starts with it, then pushes it to every running stable pod's admin
API (`PUT /v1/config` with the bearer token), so the change takes effect now
rather than at the next restart. Each pod keeps the rest of its own config:
the router reads it (`GET /v1/config`) and changes only `routing`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import yaml
from kubernetes.client import ApiClient

from driftline_operator.kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    PODS,
    SERVICES,
    NotFound,
    Obj,
    aget,
    alist_objects,
    aupdate,
    selector_of,
)
from driftline_operator.rollout.routers import RouterError, RouteTarget

ADMIN_PORT_NAME = "driftline-admin"  # the injected sidecar's admin port
TIMEOUT = aiohttp.ClientTimeout(total=5)


class SidecarRouter:
    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def set_weight(self, target: RouteTarget, weight: float) -> None:
        if not 0.0 <= weight <= 100.0:
            raise ValueError(f"a canary weight is a percentage in 0..100, got {weight}")
        routing = {"canary_url": await self._canary_url(target), "canary_weight": float(weight)}
        await self._write_config_map(target, routing)
        await self._push(target, routing)

    async def get_weight(self, target: RouteTarget) -> float:
        try:
            config_map = await aget(self.api, CONFIGMAPS, target.namespace, _cm(target))
        except NotFound:
            return 0.0  # no ConfigMap tells a starting sidecar to split
        document = _document(config_map, target)
        return float((document.get("routing") or {}).get("canary_weight", 0.0))

    async def finalize(self, target: RouteTarget) -> None:
        # Only the weight: weight 0 needs no canary URL, so finalizing works
        # even when the canary's Service is already gone.
        routing = {"canary_weight": 0.0}
        # What is already gone (with its namespace) holds no weight: a missing
        # ConfigMap starts no sidecar with one, a missing stable Deployment runs
        # no pods; the running pods of one still there are told.
        with contextlib.suppress(NotFound):
            await self._write_config_map(target, routing)
        with contextlib.suppress(NotFound):
            await self._push(target, routing)

    async def _canary_url(self, target: RouteTarget) -> str:
        port = target.canary_port
        if isinstance(port, str):  # a named Service port: the URL needs its number
            service = await aget(self.api, SERVICES, target.namespace, target.canary_service)
            numbers = [p["port"] for p in service["spec"].get("ports", []) if p.get("name") == port]
            if not numbers:
                raise RouterError(
                    f"Service {target.namespace}/{target.canary_service} has no port named "
                    f"{port!r}; set spec.rollout.canaryService.port to one of its ports"
                )
            port = numbers[0]
        return f"http://{target.canary_service}.{target.namespace}.svc:{port}"

    async def _write_config_map(self, target: RouteTarget, routing: dict[str, Any]) -> None:
        def change(config_map: Obj) -> Obj | None:
            document = _document(config_map, target)
            current = document.get("routing") or {}
            if all(current.get(k) == v for k, v in routing.items()):
                return None
            document["routing"] = {**current, **routing}
            text = yaml.safe_dump(document, sort_keys=False)
            return {"data": {target.config_key: text}}

        await aupdate(self.api, CONFIGMAPS, target.namespace, _cm(target), change)

    async def _push(self, target: RouteTarget, routing: dict[str, Any]) -> None:
        if not target.admin_token:
            raise RouterError(
                f"ModelMonitor {target.namespace}/{target.monitor}: the sidecar router needs the "
                "sidecars' admin token to push a canary weight"
            )
        deployment = await aget(self.api, DEPLOYMENTS, target.namespace, target.stable)
        selector = selector_of(deployment)
        pods = await alist_objects(self.api, PODS, target.namespace, selector=selector)
        running = [p for p in pods if _is_running(p)]
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            results = await asyncio.gather(
                *(_push_one(session, p, target, routing) for p in running), return_exceptions=True
            )
        failed = [
            f"{p['metadata']['name']}: {r}" for p, r in zip(running, results, strict=True) if r
        ]
        if failed:
            # The ConfigMap holds the weight already; the next tick pushes again.
            raise RouterError(
                f"the canary weight did not reach {len(failed)} of {len(running)} stable pods "
                f"of Deployment {target.namespace}/{target.stable}: " + "; ".join(failed)
            )


async def _push_one(
    session: aiohttp.ClientSession, pod: Obj, target: RouteTarget, routing: dict[str, Any]
) -> str | None:
    """None on success, else what went wrong."""
    admin = f"http://{_host(pod)}:{_admin_port(pod, target.admin_port)}"
    return await push_routing(session, admin, token=str(target.admin_token), routing=routing)


async def push_routing(
    session: aiohttp.ClientSession, admin: str, *, token: str, routing: dict[str, Any]
) -> str | None:
    """Merge `routing` into one running sidecar's config through its admin API
    (`admin` is its base URL); None on success, else what went wrong. The
    HTTP half of `set_weight`, used alone where there is no cluster (the demo)."""
    url = f"{admin}/v1/config"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return f"GET /v1/config answered {response.status}"
            config = await response.json()
        if all(config.get("routing", {}).get(k) == v for k, v in routing.items()):
            return None
        config["routing"] = {**config.get("routing", {}), **routing}
        async with session.put(url, json=config, headers=headers) as response:
            if response.status != 200:
                return f"PUT /v1/config answered {response.status}: {await response.text()}"
    except (aiohttp.ClientError, TimeoutError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _cm(target: RouteTarget) -> str:
    if target.config_map is None:
        raise RouterError(
            f"ModelMonitor {target.namespace}/{target.monitor}: the sidecar router needs the "
            "sidecar ConfigMap's name"
        )
    return target.config_map


def _document(config_map: Obj, target: RouteTarget) -> dict[str, Any]:
    text = (config_map.get("data") or {}).get(target.config_key)
    document = yaml.safe_load(text) if text else None
    if not isinstance(document, dict):
        raise RouterError(
            f"ConfigMap {target.namespace}/{target.config_map} has no sidecar config under "
            f"{target.config_key!r}; the operator writes it when the ModelMonitor is reconciled"
        )
    return document


def _is_running(pod: Obj) -> bool:
    status = pod.get("status") or {}
    deleting = pod.get("metadata", {}).get("deletionTimestamp")
    return status.get("phase") == "Running" and bool(status.get("podIP")) and not deleting


def _host(pod: Obj) -> str:
    ip = str(pod["status"]["podIP"])
    return f"[{ip}]" if ":" in ip else ip


def _admin_port(pod: Obj, default: int) -> int:
    for container in pod.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == ADMIN_PORT_NAME:
                return int(port["containerPort"])
    return default
