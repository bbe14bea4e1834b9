"""Snapshots straight from the sidecars: ``GET http://<pod>:<admin>/v1/snapshot``.

All pods are asked at once over one pooled aiohttp session, each request with
its own timeout. A pod that does not answer, answers an error, or answers
something that is not a snapshot is reported with the reason, never fatal:
the analysis goes on with the pods that did answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
from pydantic import ValidationError

from driftline_operator.sources import Collection, PodTarget
from driftline_sidecar.contract.snapshot import Snapshot

SNAPSHOT_PATH = "/v1/snapshot"
MAX_CONCURRENT = 64  # sockets open at once; more pods wait their turn
MAX_SNAPSHOT_BYTES = 32 << 20  # a larger answer is not a snapshot


class SidecarSource:
    def __init__(
        self, *, timeout: float = 5.0, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.timeout = timeout
        self._session = session
        self._owns_session = session is None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=MAX_CONCURRENT)
            self._session = aiohttp.ClientSession(connector=connector)
            self._owns_session = True
        return self._session

    async def collect(self, targets: Sequence[PodTarget], *, now: float) -> Collection:
        client = self._client()
        answers = await asyncio.gather(*(self._snapshot(client, t) for t in targets))
        collection = Collection(taken_at=now)
        for target, answer in zip(targets, answers, strict=True):
            if isinstance(answer, Snapshot):
                collection.snapshots[target.name] = answer
            else:
                collection.unreachable[target.name] = answer
        return collection

    async def _snapshot(self, client: aiohttp.ClientSession, target: PodTarget) -> Snapshot | str:
        url = f"http://{target.address}{SNAPSHOT_PATH}"
        try:
            async with client.get(url, timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                if r.status != 200:
                    return f"{url} answered HTTP {r.status}"
                body = await r.content.read(MAX_SNAPSHOT_BYTES + 1)
        except TimeoutError:
            return f"{url} did not answer within {self.timeout:g}s"
        except aiohttp.ClientError as error:
            return f"{url}: {type(error).__name__}: {error}"
        if len(body) > MAX_SNAPSHOT_BYTES:
            return f"{url} answered more than {MAX_SNAPSHOT_BYTES} bytes: not a snapshot"
        try:
            return Snapshot.model_validate_json(body)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            return f"{url} answered something that is not a snapshot ({where}: {first['msg']})"

    async def is_online(self) -> bool:
        return True  # no central backend: each pod is judged reachable on its own

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
