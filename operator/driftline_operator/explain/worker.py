"""Explanations in worker processes, within a CPU budget.

shap is CPU-bound Python: run in the operator's process it would stall the
kopf event loop (every monitor's handlers, timers and the webhook) for the
whole explanation. So every explanation runs in a ``ProcessPoolExecutor``
(spawned, not forked: the operator has threads), and the loop only awaits
its future. Each worker keeps its explainer per model and background, so shap
and numba start once per worker, not once per job.

The budget is counted in explanations, in two token buckets: one per
monitor (``spec.explain.perMinute``) and one for the whole operator (the
``explain_per_minute`` setting, the hard cap); a job is cut to what both
allow, and what it cannot have waits for the next interval.

Where a job runs is a ``Runner``: the operator's own worker processes
(``ProcessRunner``), or the explainer Deployment over HTTP
(``remote.RemoteRunner``, when the operator is given its URL). The budgets
are the pool's either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import pickle
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from driftline_operator.explain.background import Columns
from driftline_operator.explain.explainer import Explainer
from driftline_operator.explain.model import BlackBoxModel, ModelError
from driftline_sidecar.contract.config import PredictionConfig
from driftline_sidecar.protocols import Detected

SKIPPED_BUDGET = "BudgetExhausted"
FAILED = "ExplainerFailed"


@dataclass(frozen=True)
class Job:
    """Rows of one monitor's model to explain: plain data, sent to a worker."""

    url: str
    protocol: Detected
    columns: Columns
    prediction: PredictionConfig
    background: np.ndarray
    rows: list[list[Any]]  # explained features' values, in ``columns.names`` order
    permutations: int = 2
    timeout_seconds: float = 10.0


@dataclass
class JobResult:
    features: list[str]
    values: list[list[float]] = field(default_factory=list)  # one row per explanation
    base_value: float | None = None
    outputs: list[float] = field(default_factory=list)
    requests: int = 0  # sent to the model
    rows_sent: int = 0
    failure: str | None = None  # a model.Failure, SKIPPED_BUDGET or FAILED
    message: str = ""

    @property
    def explained(self) -> int:
        return len(self.values)


NO_SHAP = (
    "this image has no shap; run the explainer Deployment (chart value explainer.enabled) "
    "or install driftline[explain]"
)

_EXPLAINERS: dict[str, Explainer] = {}  # per worker process


def run_job(job: Job) -> JobResult:
    """Explain ``job.rows``; a failure is returned, never raised (it names the reason)."""
    key = hashlib.sha256(
        pickle.dumps((job.url, job.protocol, job.columns, job.prediction, job.permutations))
        + job.background.tobytes()
    ).hexdigest()
    result = JobResult(features=job.columns.names)
    explainer = _EXPLAINERS.get(key)
    try:
        if explainer is None:
            model = BlackBoxModel(
                url=job.url,
                protocol=job.protocol,
                columns=job.columns,
                prediction=job.prediction,
                timeout_seconds=job.timeout_seconds,
            )
            explainer = Explainer(model, job.background, permutations=job.permutations)
            if len(_EXPLAINERS) >= 16:  # monitors come and go; never grow without bound
                _EXPLAINERS.clear()
            _EXPLAINERS[key] = explainer
        before = (explainer.model.requests, explainer.model.rows_sent)
        matrix = job.columns.matrix(job.rows)
        for explanation in explainer.explain(matrix):
            result.values.append(explanation.values)
            result.outputs.append(explanation.output)
            result.base_value = explanation.base_value
        result.requests = explainer.model.requests - before[0]
        result.rows_sent = explainer.model.rows_sent - before[1]
    except ModelError as error:
        result.failure, result.message = error.reason.value, str(error)
    except ModuleNotFoundError as error:
        result.failure, result.message = FAILED, f"{error}: {NO_SHAP}"
    except Exception as error:  # shap or the data: the monitor's other verdicts go on
        result.failure, result.message = FAILED, f"{type(error).__name__}: {error}"
    return result


class TokenBucket:
    """``per_minute`` explanations, refilled continuously, at most a minute's worth saved."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._tokens = float(per_minute)
        self._at = clock()

    def available(self) -> int:
        now = self._clock()
        self._tokens = min(self.per_minute, self._tokens + (now - self._at) * self.per_minute / 60)
        self._at = now
        return int(self._tokens)

    def take(self, n: int) -> None:
        self._tokens -= n


class Runner(Protocol):
    """Where jobs run; a failure comes back as a ``JobResult``, never raised."""

    async def run(self, job: Job) -> JobResult: ...

    def close(self) -> None: ...


class ProcessRunner:
    """Jobs in worker processes of this one."""

    def __init__(self, processes: int) -> None:
        self._executor = ProcessPoolExecutor(
            max_workers=processes, mp_context=multiprocessing.get_context("spawn")
        )

    async def run(self, job: Job) -> JobResult:
        return await asyncio.get_running_loop().run_in_executor(self._executor, run_job, job)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ExplanationPool:
    """Where explanations run, and the budgets every monitor's explanations share."""

    def __init__(
        self,
        *,
        runner: Runner | None = None,
        processes: int = 1,
        operator_per_minute: float = 600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runner = runner if runner is not None else ProcessRunner(processes)
        self._clock = clock
        self._operator = TokenBucket(operator_per_minute, clock=clock)
        self._monitors: dict[str, TokenBucket] = {}

    async def explain(self, monitor: str, job: Job, *, per_minute: float) -> JobResult:
        """As many of ``job.rows`` as the budgets allow now, in a worker process."""
        if not job.rows:  # a window nobody sent requests in: nothing to explain, no budget spent
            return JobResult(features=job.columns.names)
        bucket = self._monitors.get(monitor)
        if bucket is None or bucket.per_minute != per_minute:
            bucket = self._monitors[monitor] = TokenBucket(per_minute, clock=self._clock)
        allowed = min(len(job.rows), bucket.available(), self._operator.available())
        if allowed <= 0:
            return JobResult(
                features=job.columns.names,
                failure=SKIPPED_BUDGET,
                message=f"no explanations left this minute ({per_minute:g}/min per monitor, "
                f"{self._operator.per_minute:g}/min for the operator)",
            )
        bucket.take(allowed)
        self._operator.take(allowed)
        return await self._runner.run(replace(job, rows=job.rows[:allowed]))

    async def explain_all(self, job: Job) -> JobResult:
        """Every row of ``job``, outside the budgets: a reference profile's
        background, explained once per profile."""
        return await self._runner.run(job)

    def forget(self, monitor: str) -> None:
        self._monitors.pop(monitor, None)

    def close(self) -> None:
        self._runner.close()


class LazyPool:
    """The operator's one pool, started when a monitor first asks for it:
    an operator whose monitors explain nothing starts no worker process."""

    def __init__(
        self,
        *,
        processes: int,
        operator_per_minute: float,
        runner: Callable[[], Runner] | None = None,
    ) -> None:
        self._processes = processes
        self._per_minute = operator_per_minute
        self._runner = runner
        self._pool: ExplanationPool | None = None

    def __call__(self) -> ExplanationPool:
        if self._pool is None:
            self._pool = ExplanationPool(
                runner=None if self._runner is None else self._runner(),
                processes=self._processes,
                operator_per_minute=self._per_minute,
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
