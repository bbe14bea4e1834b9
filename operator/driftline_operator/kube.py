"""The operator's own Kubernetes API calls, as raw JSON dicts in and out.

Kopf watches and patches its resources itself; every other call the operator
makes (ConfigMaps, Secrets, pods, Deployments, the routers' routes, the
ModelMonitor's status) goes through here.

Why raw JSON, not the official client's typed API classes: their models know
only the fields of the client's version, so a custom resource (an HTTPRoute, a
VirtualService) or a newer built-in field read into them and written back would
lose what they do not know; and every call would round-trip through model
objects that callers turn straight back into dicts. So one function, `_call`,
sends a request to a `Resource`'s path and returns the JSON the server sent;
writes are JSON merge patches.

The calls are synchronous (urllib3 underneath): kopf runs sync handlers in a
thread pool. Async code (the analysis and rollout loops, the routers) awaits
the very same calls in a worker thread through their `a`-prefixed twins.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from driftline_operator.api.names import GROUP, PLURAL, VERSION
from driftline_operator.api.selectors import selector_query, selects
from driftline_operator.api.spec import LabelSelector

Obj = dict[str, Any]
Query = Sequence[tuple[str, str]]

# A JSON merge patch: plain nested dicts, lists replaced whole, null deletes (RFC 7386).
MERGE_PATCH = "application/merge-patch+json"
CONFLICT_RETRIES = 5


class NotFound(LookupError):
    """The object does not exist (404); the message names it."""


class Conflict(Exception):
    """A write kept losing to others (409 each time it was read again and retried)."""


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: its group/version, plural and kind."""

    group_version: str  # "v1", "apps/v1", "gateway.networking.k8s.io/v1"
    plural: str
    kind: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """The collection's path, or with `name` one object's (or its subresource's)."""
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}" + (f"/{subresource}" if subresource else "")
        return path


CONFIGMAPS = Resource("v1", "configmaps", "ConfigMap")
PODS = Resource("v1", "pods", "Pod")
SERVICES = Resource("v1", "services", "Service")
# Written, never read: the operator's RBAC grants create and patch on Secrets,
# not get, so whatever it puts there it must be able to compute again (`tokens`).
DEPLOYMENTS = Resource("apps/v1", "deployments", "Deployment")
REPLICASETS = Resource("apps/v1", "replicasets", "ReplicaSet")
MONITORS = Resource(f"{GROUP}/{VERSION}", PLURAL, "ModelMonitor")
LEASES = Resource("coordination.k8s.io/v1", "leases", "Lease")


def connect() -> ApiClient:
    """A client configured in-cluster (service account) or from KUBECONFIG."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return ApiClient(configuration)


def selector_of(workload: Obj) -> LabelSelector:
    """The pod selector of a Deployment or ReplicaSet (`spec.selector`)."""
    return LabelSelector.model_validate(workload["spec"]["selector"])


def _call(api: ApiClient, method: str, path: str, body: Any = None, query: Query = ()) -> Obj:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = MERGE_PATCH if method == "PATCH" else "application/json"
    request = api.param_serialize(
        method,
        path,
        query_params=list(query),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request)
    data: bytes = response.read()  # the body; RESTResponse declares .data as None until then
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(
            http_resp=response, body=data.decode("utf-8", "replace"), data=None
        )
    return cast(Obj, json.loads(data))


def read(api: ApiClient, resource: Resource, namespace: str, name: str) -> Obj | None:
    """The object, or None when it does not exist."""
    try:
        return _call(api, "GET", resource.path(namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def get(api: ApiClient, resource: Resource, namespace: str, name: str) -> Obj:
    """The object, which has to exist (`NotFound` if not)."""
    found = read(api, resource, namespace, name)
    if found is None:
        raise NotFound(f"{resource.kind} {namespace}/{name} does not exist")
    return found


def list_objects(
    api: ApiClient, resource: Resource, namespace: str, *, selector: LabelSelector | None
) -> list[Obj]:
    """The objects `selector` selects, all of them with None. Filtered here too,
    so a server that ignores labelSelector cannot hand us another's pods."""
    query = [] if selector is None else [("labelSelector", selector_query(selector))]
    items: list[Obj] = _call(api, "GET", resource.path(namespace), query=query).get("items") or []
    if selector is None:
        return items
    return [i for i in items if selects(selector, (i.get("metadata") or {}).get("labels") or {})]


def patch(
    api: ApiClient,
    resource: Resource,
    namespace: str,
    name: str,
    body: Obj,
    *,
    subresource: str | None = None,
) -> Obj:
    """Merge `body` into the object (or its `scale`, `status` subresource)."""
    return _call(api, "PATCH", resource.path(namespace, name, subresource), body)


def update(
    api: ApiClient,
    resource: Resource,
    namespace: str,
    name: str,
    change: Callable[[Obj], Obj | None],
    *,
    subresource: str | None = None,
    current: Obj | None = None,
) -> Obj:
    """Let `change` compute a merge patch from the object (None: no change)
    and write it guarded by the resourceVersion it was computed from; on a
    conflict (409: someone wrote in between) read again and retry.

    `current` is the object as the caller already read it (at least its
    metadata.resourceVersion), which saves the first read."""
    for _ in range(CONFLICT_RETRIES):
        if current is None:
            current = get(api, resource, namespace, name)
        body = change(current)
        if body is None:
            return current
        version = (current.get("metadata") or {}).get("resourceVersion")
        if version is not None:
            body = {
                **body,
                "metadata": {**(body.get("metadata") or {}), "resourceVersion": version},
            }
        try:
            return patch(api, resource, namespace, name, body, subresource=subresource)
        except ApiException as error:
            if error.status != 409:
                raise
        current = None
    raise Conflict(
        f"{resource.kind} {namespace}/{name}: {CONFLICT_RETRIES} conflicting writes in a row"
    )


def patch_status(
    api: ApiClient,
    resource: Resource,
    namespace: str,
    name: str,
    status: Obj,
    *,
    resource_version: str | None = None,
) -> Obj:
    """Merge `status` into the object's status subresource.

    With `resource_version` the write first goes to the object as it was
    read (what the status was computed from); a conflict is retried against
    the current version, because the status reports what was already done.
    Empty strings are left out: a real apiserver (seen on v1.20) turns "" in
    a merge patch of a custom resource into null, which the CRD's string
    schema then refuses; an absent optional field means the same.
    """
    body = {"status": _drop_empty_strings(status)}
    if resource_version is None:
        return patch(api, resource, namespace, name, body, subresource="status")
    as_read = {"metadata": {"resourceVersion": resource_version}}
    return update(
        api, resource, namespace, name, lambda _: body, subresource="status", current=as_read
    )


def _drop_empty_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty_strings(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_drop_empty_strings(v) for v in value]
    return value


def create(api: ApiClient, resource: Resource, manifest: Obj) -> Obj:
    """Create the object; an ApiException with status 409 when it exists."""
    return _call(api, "POST", resource.path(manifest["metadata"]["namespace"]), manifest)


def replace(api: ApiClient, resource: Resource, manifest: Obj) -> Obj:
    """Write the whole object; with metadata.resourceVersion set, an
    ApiException with status 409 when someone wrote it since that version."""
    metadata = manifest["metadata"]
    return _call(api, "PUT", resource.path(metadata["namespace"], metadata["name"]), manifest)


def apply(api: ApiClient, resource: Resource, manifest: Obj) -> Obj:
    """Create the object, or if it exists merge the manifest's labels, owners
    and `data` (a ConfigMap's) or `spec` (a custom resource's) into it."""
    metadata = manifest["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    try:
        return _call(api, "POST", resource.path(namespace), manifest)
    except ApiException as error:
        if error.status != 409:
            raise
    body = {
        "metadata": {
            "labels": metadata.get("labels"),
            "ownerReferences": metadata.get("ownerReferences"),
        },
    }
    for content in ("data", "spec"):
        if content in manifest:
            body[content] = manifest[content]
    return patch(api, resource, namespace, name, body)


def delete(api: ApiClient, resource: Resource, namespace: str, name: str) -> bool:
    """Delete the object; False when it was already gone."""
    try:
        _call(api, "DELETE", resource.path(namespace, name))
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def replacing(old: Any, new: Any) -> Any:
    """The merge patch that turns `old` into exactly `new`: keys only in
    `old` become null, so maps are replaced, not merged."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    changes = {key: None for key in old.keys() - new.keys()}
    for key, value in new.items():
        if key not in old or old[key] != value:
            changes[key] = replacing(old.get(key), value)
    return changes


# -- the same calls for async code, each in a worker thread ---------------------

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _in_thread(call: Callable[_P, _T]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    async def threaded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await asyncio.to_thread(call, *args, **kwargs)

    threaded.__name__ = f"a{call.__name__}"
    threaded.__doc__ = f"`{call.__name__}`, awaited in a worker thread."
    return threaded


aread = _in_thread(read)
aget = _in_thread(get)
alist_objects = _in_thread(list_objects)
apatch = _in_thread(patch)
aupdate = _in_thread(update)
apatch_status = _in_thread(patch_status)
