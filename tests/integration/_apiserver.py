"""A Kubernetes API emulator for the integration tests, run as its own process.

`kmock.KubernetesEmulator` stores objects and serves list, watch, get, create,
merge-patch and delete. It keeps objects as the client sent them, so this
subclass adds what an apiserver fills in and the operator relies on: uid,
creationTimestamp, generation (bumped on spec changes) and resourceVersion.
It does not do garbage collection by ownerReferences, label or field
selectors (clients filter again), or admission.

Run: python _apiserver.py [NAMESPACE...]  -> prints "http://127.0.0.1:<port>" once
serving; the namespaces named are listed besides the fixed ones.
A separate process keeps its event loop and warnings apart from pytest's.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import sys
import uuid
from typing import Any

import aiohttp.web
import kmock

RESOURCES = {
    "v1/pods": kmock.ResourceInfo(kind="Pod", singular="pod", namespaced=True),
    "v1/configmaps": kmock.ResourceInfo(kind="ConfigMap", singular="configmap", namespaced=True),
    "v1/events": kmock.ResourceInfo(kind="Event", singular="event", namespaced=True),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", singular="secret", namespaced=True),
    "v1/services": kmock.ResourceInfo(kind="Service", singular="service", namespaced=True),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", singular="namespace", namespaced=False),
    "driftline.io/v1alpha1/modelmonitors": kmock.ResourceInfo(
        kind="ModelMonitor",
        singular="modelmonitor",
        namespaced=True,
        shortnames={"mm"},
        subresources={"status"},
    ),
}
NAMESPACES = ("default", "kube-system", "driftline-system", "ml")
VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}


class Apiserver(kmock.KubernetesEmulator):
    _versions = itertools.count(1)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 cannot parse the cluster-wide namespaces path, which kopf lists and
        # watches to learn which of its --namespace patterns exist: serve it here.
        if raw_request.path.rstrip("/") == "/api/v1/namespaces":
            if raw_request.query.get("watch") == "true":
                response = aiohttp.web.StreamResponse()
                await response.prepare(raw_request)
                await asyncio.Event().wait()  # namespaces never change here
            items = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                for n in dict.fromkeys((*NAMESPACES, *sys.argv[1:]))
            ]
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "NamespaceList",
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                }
            )
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                metadata.setdefault("namespace", request.namespace)
                metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now, generation=1)
                if "generateName" in metadata and "name" not in metadata:
                    metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
            elif (
                request.action == kmock.action.UPDATE
                and request.name is not None
                and request.subresource is None
                and "spec" in request.data
            ):
                stored = self._current(request)
                metadata["generation"] = (stored or {}).get("generation", 0) + 1
            if request.action in (kmock.action.CREATE, kmock.action.UPDATE):
                metadata["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return dict(self.objects[key].raw.get("metadata", {}))


async def serve() -> None:
    async with Apiserver() as emulator, kmock.Server(emulator) as server:
        for name, info in RESOURCES.items():
            info.verbs.update(VERBS)
            emulator.resources[name] = info
        print(f"http://{server.host}:{server.port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)
