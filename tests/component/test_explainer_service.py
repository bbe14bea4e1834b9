"""The explainer Deployment's server (``driftline-explainer``) over real loopback
HTTP, against a real scikit-learn model server: what it answers is what the
operator's own worker processes answer, the budgets stay the operator's, and
a bad job, a model that is down or an explainer that is down each come back
as a reason."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from driftline_operator.explain.background import Columns
from driftline_operator.explain.remote import REJECTED, UNREACHABLE, JobRequest, RemoteRunner
from driftline_operator.explain.worker import SKIPPED_BUDGET, ExplanationPool, Job, run_job
from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig
from tests.component.conftest import (
    N_FEATURES,
    ModelServer,
    _stop,
    _wait_http,
    free_port,
    running_model,
)

ADDITIVITY = 1e-9


@pytest.fixture(scope="module")
def trees(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GradientBoostingRegressor, ModelServer]]:
    tmp = tmp_path_factory.mktemp("trees")
    x = np.random.default_rng(0).normal(size=(1000, N_FEATURES))
    estimator = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0)
    estimator.fit(x, 2 * x[:, 0] + x[:, 1] * x[:, 2] - x[:, 3])
    joblib.dump(estimator, tmp / "gbr.joblib")
    with running_model(tmp, "--sklearn", str(tmp / "gbr.joblib")) as server:
        yield estimator, server


@pytest.fixture(scope="module")
def explainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``driftline-explainer`` as the chart runs it, one worker process."""
    log = tmp_path_factory.mktemp("explainer") / "explainer.log"
    port = free_port()
    command = [str(Path(sys.executable).parent / "driftline-explainer")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--processes", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/healthz", process, log)
        yield url
    finally:
        _stop(process)


def job(model: str, rows: int, *, seed: int) -> Job:
    rng = np.random.default_rng(seed)
    features = [FeatureConfig(name=f"f{i}") for i in range(N_FEATURES)]
    return Job(
        url=model + "/v1/models/m:predict",
        protocol="kserve-v1",
        columns=Columns(features=features, explained=list(range(N_FEATURES))),
        prediction=PredictionConfig(score="1"),
        background=rng.normal(size=(8, N_FEATURES)),
        rows=rng.normal(size=(rows, N_FEATURES)).tolist(),
    )


def explained_total(explainer: str) -> float:
    metrics = httpx.get(explainer + "/metrics", timeout=10).text
    line = next(
        m for m in metrics.splitlines() if m.startswith("driftline_explainer_explanations_total")
    )
    return float(line.split()[-1])


def test_the_explainer_answers_what_the_local_workers_answer(
    trees: tuple[GradientBoostingRegressor, ModelServer], explainer: str
) -> None:
    estimator, model = trees
    sent = job(model.url, 4, seed=1)  # a background no other test sends: a fresh explainer
    remote = asyncio.run(RemoteRunner(explainer).run(sent))
    local = run_job(sent)  # in this process, as the operator's worker would
    assert remote.failure is None, remote.message
    assert remote.explained == 4 and remote.requests == 4  # one model request per explanation
    assert np.allclose(remote.values, local.values, rtol=0, atol=1e-12)
    assert remote.base_value == pytest.approx(local.base_value, abs=1e-12)
    # The outputs are the real model's, and contributions add up to them.
    assert np.allclose(remote.outputs, estimator.predict(np.asarray(sent.rows)), atol=1e-9)
    for values, output in zip(remote.values, remote.outputs, strict=True):
        assert abs(remote.base_value + sum(values) - output) <= ADDITIVITY  # type: ignore[operator]


def test_the_budgets_are_the_operators(
    trees: tuple[GradientBoostingRegressor, ModelServer], explainer: str
) -> None:
    _, model = trees
    before = explained_total(explainer)

    async def scenario() -> tuple[int, str | None]:
        pool = ExplanationPool(runner=RemoteRunner(explainer), operator_per_minute=100)
        first = await pool.explain("ml/fraud", job(model.url, 5, seed=2), per_minute=3)
        assert first.failure is None, first.message
        spent = await pool.explain("ml/fraud", job(model.url, 5, seed=2), per_minute=3)
        pool.close()
        return first.explained, spent.failure

    assert asyncio.run(scenario()) == (3, SKIPPED_BUDGET)
    assert (
        explained_total(explainer) - before == 3
    )  # the explainer saw only what the budget allowed


def test_a_bad_job_is_refused_naming_the_field(
    trees: tuple[GradientBoostingRegressor, ModelServer], explainer: str
) -> None:
    _, model = trees
    document = JobRequest.of(job(model.url, 2, seed=3)).model_dump(mode="json")
    document["rows"][1] = [0.5]
    answer = httpx.post(explainer + "/v1/explain", json=document, timeout=30)
    assert answer.status_code == 422
    assert "rows[1]: 1 values, expected 4" in answer.json()["error"]
    answer = httpx.post(explainer + "/v1/explain", content=b"{not json", timeout=30)
    assert answer.status_code == 422 and "bad explanation job" in answer.json()["error"]
    # The operator's client refuses it before sending, with the same words.
    bad = job(model.url, 2, seed=3)
    bad.rows[0].append(1.0)
    result = asyncio.run(RemoteRunner(explainer).run(bad))
    assert result.failure == REJECTED and "rows[0]: 5 values, expected 4" in result.message


def test_a_model_that_is_down_is_its_reason_through_the_explainer(explainer: str) -> None:
    down = job(f"http://127.0.0.1:{free_port()}", 2, seed=4)
    result = asyncio.run(RemoteRunner(explainer).run(down))
    assert result.failure == "ModelUnreachable" and "Connection refused" in result.message


def test_an_explainer_that_is_down_is_a_reason_not_an_exception() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = asyncio.run(RemoteRunner(url).run(job("http://127.0.0.1:1", 2, seed=5)))
    assert result.failure == UNREACHABLE
    assert result.message.startswith(f"explainer at {url}/v1/explain: ")


def test_health_is_answered_while_a_job_runs(
    trees: tuple[GradientBoostingRegressor, ModelServer], explainer: str
) -> None:
    _, model = trees
    document = JobRequest.of(job(model.url, 60, seed=6)).model_dump(mode="json")
    answers: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: answers.append(
            httpx.post(explainer + "/v1/explain", json=document, timeout=300)
        )
    )
    sender.start()
    answered_while_busy = False
    try:
        while sender.is_alive():
            health = httpx.get(explainer + "/healthz", timeout=30)
            assert health.status_code == 200
            answered_while_busy = answered_while_busy or sender.is_alive()
    finally:
        sender.join()
    assert answered_while_busy  # the job was still running when /healthz answered
    assert answers[0].status_code == 200 and answers[0].json()["failure"] is None
    assert len(answers[0].json()["values"]) == 60
