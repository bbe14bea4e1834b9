"""Explanations in worker processes, within budgets, against a real model server."""

from __future__ import annotations

import asyncio

import numpy as np

from driftline_operator.explain.background import Columns
from driftline_operator.explain.worker import SKIPPED_BUDGET, ExplanationPool, Job
from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig
from tests.component.conftest import N_FEATURES, ModelServer, free_port


def job(url: str, rows: int) -> Job:
    rng = np.random.default_rng(9)
    features = [FeatureConfig(name=f"f{i}") for i in range(N_FEATURES)]
    return Job(
        url=url + "/v1/models/fraud:predict",
        protocol="kserve-v1",
        columns=Columns(features=features, explained=list(range(N_FEATURES))),
        prediction=PredictionConfig(score="1"),
        background=rng.normal(size=(8, N_FEATURES)),
        rows=rng.normal(size=(rows, N_FEATURES)).tolist(),
    )


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_jobs_run_in_a_worker_within_both_budgets(model: ModelServer) -> None:
    clock = Clock()

    async def scenario() -> None:
        pool = ExplanationPool(processes=1, operator_per_minute=5, clock=clock)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            first = await pool.explain("ml/fraud", job(model.url, 4), per_minute=3)
            assert first.failure is None, first.message
            assert first.explained == 3  # the monitor's budget
            assert first.requests == 3  # one request per explanation
            assert first.rows_sent > 3
            for values, output in zip(first.values, first.outputs, strict=True):
                assert abs(first.base_value + sum(values) - output) <= 1e-9  # type: ignore[operator]
            assert ticks > 0  # the event loop kept running while shap worked

            # The monitor's budget is spent; another monitor gets the operator's rest.
            spent = await pool.explain("ml/fraud", job(model.url, 4), per_minute=3)
            assert spent.failure == SKIPPED_BUDGET and spent.explained == 0
            other = await pool.explain("ml/other", job(model.url, 4), per_minute=10)
            assert other.explained == 2  # the operator's cap: 5 a minute
            empty = await pool.explain("ml/fraud", job(model.url, 0), per_minute=3)
            assert empty.failure is None and empty.explained == 0
            clock.now += 30  # half a minute refills half of each budget
            again = await pool.explain("ml/fraud", job(model.url, 4), per_minute=3)
            assert again.explained == 1
        finally:
            ticker.cancel()
            pool.close()

    asyncio.run(scenario())


def test_a_model_that_is_down_is_a_result_not_an_exception() -> None:
    async def scenario() -> None:
        pool = ExplanationPool(processes=1)
        try:
            result = await pool.explain(
                "ml/fraud", job(f"http://127.0.0.1:{free_port()}", 2), per_minute=60
            )
        finally:
            pool.close()
        assert result.failure == "ModelUnreachable"
        assert "Connection refused" in result.message

    asyncio.run(scenario())
