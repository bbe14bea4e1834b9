"""The canary's attribution comparison, end to end on loopback.

Real scikit-learn models served by the demo model server, each behind a real
sidecar (role stable or canary) whose reservoir closes a window every
second; ``MonitorExplanations`` reads both reservoirs and explains the same
rows against both models in the operator's worker process; the canary
verdict is ``rollout.loop.canary_verdict`` on windows collected from the
same sidecars. Stable leans on f0; the reliance candidate computes the same
kind of function of f2 instead; the twin is stable's own model file served
again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from driftline_operator.analysis.explanations import ExplainOutcome, MonitorExplanations
from driftline_operator.analysis.windows import WindowTracker
from driftline_operator.api.spec import ModelMonitorSpec
from driftline_operator.cli.main import main
from driftline_operator.explain.worker import ExplanationPool
from driftline_operator.rollout.compare import ComparisonVerdict, StableBaseline
from driftline_operator.rollout.loop import canary_verdict
from driftline_operator.sources import PodTarget
from driftline_operator.sources.sidecar import SidecarSource
from driftline_sidecar.contract.profile import ReferenceProfile
from tests.component.conftest import ModelServer, Sidecar, running_model

pytestmark = pytest.mark.timeout(300)

FEATURES = ["f0", "f1", "f2", "f3"]
TOKEN = "attributions-token"
MIN_EXPLANATIONS = 12
LIMIT = 0.2


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES)))


def fitted(x: np.ndarray, leaning_on: int) -> GradientBoostingRegressor:
    y = 3 * x[:, leaning_on] + x[:, 1] - 0.5 * x[:, 3]
    return GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0).fit(x, y)


@dataclass
class Models:
    stable: ModelServer
    reliance: ModelServer  # leans on f2 where stable leans on f0
    twin: ModelServer  # stable's own model, served again
    profile: ReferenceProfile


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    tmp = tmp_path_factory.mktemp("canary-attributions")
    x = rows(1500, 0)
    joblib.dump(fitted(x, 0), tmp / "stable.joblib")
    joblib.dump(fitted(x, 2), tmp / "reliance.joblib")
    pd.DataFrame(x, columns=FEATURES).to_csv(tmp / "train.csv", index=False)
    built = ["profile", "build", str(tmp / "train.csv"), "-o", str(tmp / "profile.json")]
    assert main([*built, "--background-size", "10"]) == 0
    profile = ReferenceProfile.model_validate_json((tmp / "profile.json").read_text())
    with (
        running_model(tmp, "--sklearn", str(tmp / "stable.joblib")) as stable,
        running_model(tmp, "--sklearn", str(tmp / "reliance.joblib")) as reliance,
        running_model(tmp, "--sklearn", str(tmp / "stable.joblib")) as twin,
    ):
        yield Models(stable, reliance, twin, profile)


@pytest.fixture(scope="module")
def pool() -> Iterator[ExplanationPool]:
    """One worker process for the module: shap starts once."""
    started = ExplanationPool(processes=1, operator_per_minute=6000)
    try:
        yield started
    finally:
        started.close()


def spec(limit: float | None) -> ModelMonitorSpec:
    comparison = {} if limit is None else {"maxAttributionDistance": limit}
    return ModelMonitorSpec.model_validate(
        {
            "selector": {"matchLabels": {"app": "m"}},
            "model": {
                "name": "m",
                "protocol": "json",
                "features": [{"name": f} for f in FEATURES],
                "prediction": {"path": "prediction", "score": "probability", "task": "regression"},
            },
            "reference": {"configMapRef": {"name": "m-reference"}},
            "explain": {
                "enabled": True,
                "minExplanations": MIN_EXPLANATIONS,
                "explanationsPerMinute": 3000,
            },
            "rollout": {
                "strategy": "canary",
                "stableRef": {"name": "m"},
                "canaryRef": {"name": "m-canary"},
                "canaryService": {"name": "m-canary"},
                "comparison": comparison,
            },
        }
    )


def pod(sidecar: Sidecar, model: ModelServer, role: str) -> PodTarget:
    host, port = sidecar.config["admin"].rsplit(":", 1)
    return PodTarget(
        name=f"m-{role}",
        ip=host,
        admin_port=int(port),
        role=role,
        model_port=int(model.url.rsplit(":", 1)[1]),
    )


def start(factory: Callable[..., Sidecar], model: ModelServer, role: str) -> Sidecar:
    return factory(
        model.url,
        model={
            "name": "m",
            "version": role,
            "role": role,
            "protocol": "json",
            "features": [{"name": f, "bins": [-1.0, 0.0, 1.0]} for f in FEATURES],
            "prediction": {"path": "prediction", "score": "probability", "task": "regression"},
        },
        reservoir={"window_seconds": 1.0, "size": 16},
        admin_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
    )


def send(sidecars: list[Sidecar], seed: int, n: int = 60) -> None:
    for sidecar in sidecars:
        with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
            for row in rows(n, seed).tolist():
                answer = client.post("/predict", json=dict(zip(FEATURES, row, strict=True)))
                assert answer.status_code == 200


def judge(
    models: Models,
    candidate: ModelServer,
    factory: Callable[..., Sidecar],
    pool: ExplanationPool,
    *,
    limit: float | None,
) -> tuple[ExplainOutcome, ComparisonVerdict]:
    """Traffic to both sidecars until enough rows are explained against both
    models (or, with the comparison off, until stable's are), then the verdict
    on the traffic windows of the same sidecars."""
    monitor = spec(limit)
    stable, canary = start(factory, models.stable, "stable"), start(factory, candidate, "canary")
    pods = [pod(stable, models.stable, "stable"), pod(canary, candidate, "canary")]

    async def scenario() -> tuple[ExplainOutcome, ComparisonVerdict]:
        explanations = MonitorExplanations("ml/m", pool=lambda: pool, admin_token=TOKEN)
        source, tracker = SidecarSource(), WindowTracker()
        try:
            tracker.advance(await source.collect(pods, now=time.time()))
            deadline = time.monotonic() + 240
            for seed in range(1, 10_000):
                assert time.monotonic() < deadline, "too few rows explained in 240 s"
                await asyncio.to_thread(send, [stable, canary], seed)
                outcome = await explanations.run(
                    spec=monitor,
                    pods=pods,
                    profile=models.profile,
                    profile_key="p",
                    now=time.time(),
                )
                assert (
                    outcome.condition is None
                    or outcome.condition.status != "False"
                    or (outcome.condition.reason == "Waiting")
                ), outcome.condition
                done = outcome.paired if limit is not None else outcome.drift
                if done is not None and done.explained >= MIN_EXPLANATIONS:
                    break
            windows = tracker.advance(await source.collect(pods, now=time.time()))
        finally:
            explanations.close()
            await source.close()
        verdict, _ = canary_verdict(
            monitor, windows, StableBaseline(), weight=50.0, attributions=outcome.paired
        )
        return outcome, verdict

    return asyncio.run(scenario())


def attribution_check(verdict: ComparisonVerdict) -> Any:
    return next(c for c in verdict.checks if c.name == "attributions")


def test_a_candidate_leaning_on_another_feature_fails_the_canary(
    models: Models, sidecar_factory: Callable[..., Sidecar], pool: ExplanationPool
) -> None:
    outcome, verdict = judge(models, models.reliance, sidecar_factory, pool, limit=LIMIT)
    assert outcome.paired is not None
    stable, candidate = outcome.paired.shares()
    assert max(stable, key=stable.__getitem__) == "f0"
    assert max(candidate, key=candidate.__getitem__) == "f2"
    assert verdict.verdict == "fail", verdict.reason
    check = attribution_check(verdict)
    assert check.verdict == "fail"
    assert check.candidate == pytest.approx(outcome.paired.distance())
    assert check.candidate > 0.3  # f0's share, about half, moved to f2
    assert "top stable f0" in check.message and "canary f2" in check.message
    assert verdict.failed == (check,)  # nothing else tells the two apart
    assert verdict.reason.startswith("CanaryWorse: attributions: reliance")
    assert outcome.status is not None and outcome.status.canary is not None
    shown = outcome.status.canary
    assert shown.explained == outcome.paired.explained and shown.limit == LIMIT
    assert shown.distance == pytest.approx(check.candidate)
    assert {f.name for f in shown.features[:2]} == {"f0", "f2"}
    f2 = next(f for f in shown.features if f.name == "f2")
    assert f2.canary == pytest.approx(candidate["f2"]) and f2.stable == pytest.approx(stable["f2"])


def test_a_candidate_relying_on_the_same_features_passes(
    models: Models, sidecar_factory: Callable[..., Sidecar], pool: ExplanationPool
) -> None:
    outcome, verdict = judge(models, models.twin, sidecar_factory, pool, limit=LIMIT)
    assert outcome.paired is not None and outcome.paired.explained >= MIN_EXPLANATIONS
    check = attribution_check(verdict)
    assert check.verdict == "ok", check.message
    assert check.candidate is not None and check.candidate < 0.05  # only shap's own sampling
    assert verdict.verdict == "ok", verdict.reason


def test_off_by_default_nothing_is_paired_and_the_verdict_is_unchanged(
    models: Models, sidecar_factory: Callable[..., Sidecar], pool: ExplanationPool
) -> None:
    outcome, verdict = judge(models, models.reliance, sidecar_factory, pool, limit=None)
    assert outcome.paired is None
    assert outcome.status is not None and outcome.status.canary is None
    assert outcome.drift is not None and outcome.drift.explained >= MIN_EXPLANATIONS
    assert "attributions" not in {c.name for c in verdict.checks}
    assert verdict.verdict == "ok", verdict.reason
