"""Explanation jobs over HTTP: the operator sends them to the explainer
Deployment (``service``) instead of its own worker processes.

A job on the wire is JSON, checked field by field when it arrives (never a
pickle: whoever reaches the port would run code). The budgets stay with the
operator, which cuts each job to what they allow before sending it; the
explainer only explains what it is given.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from driftline_operator.explain.background import Columns
from driftline_operator.explain.worker import Job, JobResult
from driftline_sidecar.contract.config import PredictionConfig
from driftline_sidecar.protocols import Detected

EXPLAIN_PATH = "/v1/explain"
MAX_ROWS = 10_000  # per job; a reference background is at most a few hundred
UNREACHABLE = "ExplainerUnreachable"
REJECTED = "ExplainerRejectedJob"
# The answer's deadline: a fresh worker process starts shap and numba (tens of
# seconds on a loaded node), then each row costs a model request and shap's work.
START_SECONDS = 120.0
SECONDS_PER_ROW = 5.0

RESULT = TypeAdapter(JobResult)


class JobRequest(BaseModel):
    """A ``Job`` as JSON: the background's missing values are nulls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^http://[^/\s]+(/\S*)?$")
    protocol: Detected
    columns: Columns
    prediction: PredictionConfig
    background: list[list[float | None]] = Field(min_length=1)
    rows: list[list[Any]] = Field(max_length=MAX_ROWS)
    permutations: int = Field(default=2, ge=1, le=64)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _shapes_agree(self) -> JobRequest:
        columns, width = self.columns, len(self.columns.explained)
        if width == 0:
            raise ValueError("columns.explained: no feature to explain")
        wrong = [
            p for p in [*columns.explained, *columns.fixed] if not 0 <= p < len(columns.features)
        ]
        if wrong:
            raise ValueError(
                f"columns: positions {wrong} are not among the {len(columns.features)} features"
            )
        for name, table in (("background", self.background), ("rows", self.rows)):
            for i, row in enumerate(table):
                if len(row) != width:
                    raise ValueError(
                        f"{name}[{i}]: {len(row)} values, expected {width} (one per explained "
                        f"feature: {', '.join(columns.names)})"
                    )
        return self

    @classmethod
    def of(cls, job: Job) -> JobRequest:
        background = [[None if v != v else v for v in row] for row in job.background.tolist()]
        return cls(
            url=job.url,
            protocol=job.protocol,
            columns=job.columns,
            prediction=job.prediction,
            background=background,
            rows=job.rows,
            permutations=job.permutations,
            timeout_seconds=job.timeout_seconds,
        )

    def job(self) -> Job:
        return Job(
            url=self.url,
            protocol=self.protocol,
            columns=self.columns,
            prediction=self.prediction,
            background=np.asarray(self.background, dtype=np.float64),
            rows=self.rows,
            permutations=self.permutations,
            timeout_seconds=self.timeout_seconds,
        )


class RemoteRunner:
    """Runs jobs in the explainer Deployment behind ``url`` (its Service)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + EXPLAIN_PATH

    async def run(self, job: Job) -> JobResult:
        """The explainer's result; a failure to get one is a result too, with the reason."""
        try:
            body = JobRequest.of(job).model_dump_json()
        except ValidationError as error:  # refused here as the explainer would refuse it
            return self._failed(job, REJECTED, f"bad explanation job: {error}")
        deadline = START_SECONDS + len(job.rows) * (job.timeout_seconds + SECONDS_PER_ROW)
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    self.url,
                    data=body,
                    headers={"content-type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=deadline),
                ) as response,
            ):
                answer = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            detail = str(error) or f"no answer in {deadline:g} s"
            return self._failed(job, UNREACHABLE, f"explainer at {self.url}: {detail}")
        if response.status != 200:
            text = answer[:300].decode(errors="replace")
            return self._failed(
                job, REJECTED, f"explainer at {self.url} answered HTTP {response.status}: {text}"
            )
        try:
            return RESULT.validate_json(answer)
        except ValidationError as error:
            return self._failed(job, REJECTED, f"explainer at {self.url}: bad answer: {error}")

    def close(self) -> None:
        """Nothing held between jobs (a session per job: one per monitor per interval)."""

    @staticmethod
    def _failed(job: Job, reason: str, message: str) -> JobResult:
        return JobResult(features=job.columns.names, failure=reason, message=message)
