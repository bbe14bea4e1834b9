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
from collections import Counter, deque

import aiohttp
import numpy as np

from driftline_operator.cli.demo.training import TRUE_BIAS, TRUE_WEIGHTS, Scenario, inputs

MAX_IN_FLIGHT = 256
TIMEOUT = aiohttp.ClientTimeout(total=10)


class Traffic:
    def __init__(self, url: str, *, rps: float, seed: int, scenario: Scenario = "healthy") -> None:
        if rps <= 0:
            raise ValueError(f"--rps {rps}: expected a positive request rate")
        self.url = f"{url}/predict"
        self.rps = rps
        self.scenario = scenario  # whose world the rows come from
        self.outcomes: Counter[str] = Counter()  # "200", "500", or an exception's name
        self._rng = np.random.default_rng(seed)
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        # (answered at, request id, true label) of answered requests, oldest first
        self.answered: deque[tuple[float, str, str]] = deque(maxlen=100_000)
        self._sent = 0

    def labels_due(self, *, older_than: float) -> list[dict[str, str]]:
        """The true labels of the requests answered before ``older_than``
        (time.monotonic()), each once: ground truth that arrives late."""
        due = []
        while self.answered and self.answered[0][0] < older_than:
            _, ident, label = self.answered.popleft()
            due.append({"id": ident, "label": label})
        return due

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
            rows = inputs(self._rng, 256, self.scenario).round(4)
            for row in rows:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                due += period
                if len(self._in_flight) >= MAX_IN_FLIGHT:
                    self.outcomes["skipped (too many in flight)"] += 1
                    continue
                body = json.dumps({f"f{i}": float(v) for i, v in enumerate(row)})
                # The world's own label for this row (the models only estimate it).
                p = 1 / (1 + np.exp(-(float(row @ TRUE_WEIGHTS) + TRUE_BIAS)))
                label = "fraud" if self._rng.random() < p else "ok"
                self._sent += 1
                task = asyncio.create_task(self._send(session, body, f"demo-{self._sent}", label))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _send(
        self, session: aiohttp.ClientSession, body: str, ident: str, label: str
    ) -> None:
        headers = {"content-type": "application/json", "x-request-id": ident}
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                self.outcomes[str(response.status)] += 1
                if response.status == 200:
                    self.answered.append((time.monotonic(), ident, label))
        except (aiohttp.ClientError, TimeoutError) as error:
            self.outcomes[type(error).__name__] += 1
