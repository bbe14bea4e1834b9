"""Read and merge-patch any object as raw JSON, with optimistic concurrency."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

CONFLICT_RETRIES = 5

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """An API path prefix: `/api/v1` or `/apis/<group>/<version>`, and the plural."""

    group_version: str  # "v1", "apps/v1", "gateway.networking.k8s.io/v1"
    plural: str
    kind: str

    def path(self, namespace: str, name: str, subresource: str | None = None) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        tail = f"/{subresource}" if subresource else ""
        return f"{root}/namespaces/{namespace}/{self.plural}/{name}{tail}"


DEPLOYMENTS = Resource("apps/v1", "deployments", "Deployment")
REPLICASETS = Resource("apps/v1", "replicasets", "ReplicaSet")
CONFIGMAPS = Resource("v1", "configmaps", "ConfigMap")
PODS = Resource("v1", "pods", "Pod")
SERVICES = Resource("v1", "services", "Service")


def _call(api: ApiClient, method: str, path: str, body: Any = None, query: Any = None) -> Obj:
    headers = {"Accept": "application/json"}
    if method == "PATCH":
        headers["Content-Type"] = "application/merge-patch+json"
    request = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(
            http_resp=response, body=response.data.decode("utf-8", "replace"), data=None
        )
    return json.loads(response.data)  # type: ignore[no-any-return]


async def get(api: ApiClient, resource: Resource, namespace: str, name: str) -> Obj:
    path = resource.path(namespace, name)
    try:
        return await asyncio.to_thread(_call, api, "GET", path)
    except ApiException as error:
        if error.status == 404:
            from driftline_operator.routers import RouterError

            raise RouterError(f"{resource.kind} {namespace}/{name} does not exist") from error
        raise


async def patch(
    api: ApiClient,
    resource: Resource,
    namespace: str,
    name: str,
    body: Obj,
    *,
    subresource: str | None = None,
) -> Obj:
    path = resource.path(namespace, name, subresource)
    return await asyncio.to_thread(_call, api, "PATCH", path, body)


async def list_(
    api: ApiClient, resource: Resource, namespace: str, *, match_labels: dict[str, str]
) -> list[Obj]:
    """Objects carrying all of these labels (filtered here too, so a server
    that ignores labelSelector cannot hand us another Deployment's pods)."""
    root = "/api/v1" if resource.group_version == "v1" else f"/apis/{resource.group_version}"
    path = f"{root}/namespaces/{namespace}/{resource.plural}"
    query = [("labelSelector", selector_query(match_labels))]
    listing = await asyncio.to_thread(_call, api, "GET", path, None, query)
    return [
        item
        for item in listing.get("items") or []
        if match_labels.items() <= (item.get("metadata", {}).get("labels") or {}).items()
    ]


async def update(
    api: ApiClient,
    resource: Resource,
    namespace: str,
    name: str,
    change: Callable[[Obj], Obj | None],
) -> Obj:
    """Read the object, let `change` compute a merge patch from it (None: no
    change), and write it guarded by the resourceVersion it was computed from;
    on a conflict (409) read again and retry."""
    for _ in range(CONFLICT_RETRIES):
        current = await get(api, resource, namespace, name)
        body = change(current)
        if body is None:
            return current
        version = current.get("metadata", {}).get("resourceVersion")
        if version is not None:
            body.setdefault("metadata", {})["resourceVersion"] = version
        try:
            return await patch(api, resource, namespace, name, body)
        except ApiException as error:
            if error.status != 409:
                raise
    raise RuntimeError(
        f"{resource.kind} {namespace}/{name}: {CONFLICT_RETRIES} conflicting writes in a row"
    )


def replacing(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into exactly `new`:
    keys only in `old` become null, so maps are replaced, not merged."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch_ = {key: None for key in old.keys() - new.keys()}
    for key, value in new.items():
        if key not in old or old[key] != value:
            patch_[key] = replacing(old.get(key), value)
    return patch_


def selector_query(match_labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
