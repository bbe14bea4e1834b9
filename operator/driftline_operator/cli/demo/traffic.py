"""Steady client traffic: ``rps`` requests a second, open loop, over aiohttp.

Requests are sent on a fixed schedule whatever the answers' latency (a slow
canary must not slow the clients down, or its windows would shrink), with
at most ``MAX_IN_FLIGHT`` outstanding. Rows come from the world the models
were trained on. Every answer is counted by outcome, so the demo can say
what the clients saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import aiohttp
import numpy as np

from driftline_operator.cli.demo.training import N_FEATURES

MAX_IN_FLIGHT = 256
TIMEOUT = aiohttp.ClientTimeout(total=10)


class Traffic:
    def __init__(self, url: str, *, rps: float, seed: int) -> None:
        if rps <= 0:
            raise ValueError(f"--rps {rps}: expected a positive request rate")
        self.url = f"{url}/predict"
        self.rps = rps
        self.outcomes: Counter[str] = Counter()  # "200", "500", or an exception's name
        self._rng = np.random.default_rng(seed)
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
            try:
                await self._schedule(session)
            finally:
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _schedule(self, session: aiohttp.ClientSession) -> None:
        period = 1.0 / self.rps
        due = time.monotonic()
        while True:
            rows = self._rng.normal(0.0, 1.0, (256, N_FEATURES)).round(4)
            for row in rows:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                due += period
                if len(self._in_flight) >= MAX_IN_FLIGHT:
                    self.outcomes["skipped (too many in flight)"] += 1
                    continue
                body = json.dumps({f"f{i}": float(v) for i, v in enumerate(row)})
                task = asyncio.create_task(self._send(session, body))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _send(self, session: aiohttp.ClientSession, body: str) -> None:
        headers = {"content-type": "application/json"}
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                self.outcomes[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as error:
            self.outcomes[type(error).__name__] += 1
