"""The black-box explainer against a real scikit-learn model server on loopback.

The model is a gradient-boosted regressor served by the demo model server
(``--sklearn``). Its attributions through the model's own protocol agree with
``shap.TreeExplainer`` (interventional, the same background) within 1 % of
the largest attribution (PermutationExplainer, 4 permutations: we measured
0.1-0.4 %); a regressor, because for a classifier's probability shap's
TreeExplainer does not explain the same game (we measured 0.06 against exact
enumeration, while log-odds agree to 4e-8). Contributions plus base value add
up to the model's own answer within 1e-9; the model sees one request per
explanation, counted by the server itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import shap
from sklearn.ensemble import GradientBoostingRegressor

from driftline_operator.explain.background import Columns
from driftline_operator.explain.explainer import Explainer
from driftline_operator.explain.model import BlackBoxModel, Failure, ModelError
from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig
from tests.component.conftest import ModelServer, free_port, running_model

N_FEATURES = 6
AGREEMENT = 0.01  # of the largest |attribution|
ADDITIVITY = 1e-9
PATHS = {
    "kserve-v1": "/v1/models/m:predict",
    "open-inference-v2": "/v2/models/m/infer",
    "json": "/predict",
}
SCORES = {"kserve-v1": "1", "open-inference-v2": "probability", "json": "probability"}


def data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, N_FEATURES))
    y = 2 * x[:, 0] + x[:, 1] * x[:, 2] - x[:, 3] + 0.5 * rng.normal(size=rows)
    return x, y


@pytest.fixture(scope="module")
def trees(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GradientBoostingRegressor, ModelServer]]:
    tmp = tmp_path_factory.mktemp("trees")
    estimator = GradientBoostingRegressor(n_estimators=60, max_depth=3, random_state=0)
    estimator.fit(*data(2000))
    path = tmp / "gbr.joblib"
    joblib.dump(estimator, path)
    with running_model(tmp, "--sklearn", str(path)) as server:
        yield estimator, server


def black_box(url: str, protocol: str) -> BlackBoxModel:
    features = [FeatureConfig(name=f"f{i}") for i in range(N_FEATURES)]
    return BlackBoxModel(
        url=url + PATHS[protocol],
        protocol=protocol,  # type: ignore[arg-type]
        columns=Columns(features=features, explained=list(range(N_FEATURES))),
        prediction=PredictionConfig(score=SCORES[protocol]),
    )


def served_requests(server: ModelServer) -> int:
    return int(httpx.get(server.url + "/control", timeout=10).json()["predict_requests"])


@pytest.mark.parametrize("protocol", sorted(PATHS))
def test_attributions_agree_with_tree_explainer_and_add_up(
    trees: tuple[GradientBoostingRegressor, ModelServer], protocol: str
) -> None:
    estimator, server = trees
    x, _ = data(2000)
    background, rows = x[:10], x[1000:1012]
    with black_box(server.url, protocol) as model:
        explainer = Explainer(model, background, permutations=4)
        before = served_requests(server)
        explanations = explainer.explain(rows)
    assert served_requests(server) - before == len(rows)  # one request per explanation
    assert explainer.model.requests == len(rows)

    reference = shap.TreeExplainer(
        estimator, data=background, feature_perturbation="interventional"
    )
    expected = reference.shap_values(rows)
    got = np.array([e.values for e in explanations])
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= AGREEMENT * scale
    assert explanations[0].base_value == pytest.approx(float(np.ravel(reference.expected_value)[0]))
    for explanation, row in zip(explanations, rows, strict=True):
        assert explanation.additivity_error <= ADDITIVITY
        assert explanation.output == pytest.approx(
            float(estimator.predict(row[None, :])[0]), abs=ADDITIVITY
        )
        assert explanation.row == pytest.approx(row.tolist())
        assert [abs(v) for _, _, v in explanation.sorted()] == sorted(
            (abs(v) for v in explanation.values), reverse=True
        )


def test_kernel_explainer_adds_up_too(trees: tuple[GradientBoostingRegressor, ModelServer]) -> None:
    _, server = trees
    x, _ = data(2000)
    with black_box(server.url, "kserve-v1") as model:
        explainer = Explainer(model, x[:10], algorithm="kernel")
        before = served_requests(server)  # after KernelExplainer asked f(background) once
        explanations = explainer.explain(x[1000:1003])
    assert served_requests(server) - before == 3
    assert max(e.additivity_error for e in explanations) <= ADDITIVITY


def test_a_model_that_is_down_is_named(tmp_path: Path) -> None:
    model = black_box(f"http://127.0.0.1:{free_port()}", "kserve-v1")
    with pytest.raises(ModelError) as caught:
        model(np.zeros((2, N_FEATURES)))
    assert caught.value.reason is Failure.UNREACHABLE


def test_a_model_that_rejects_the_batch_is_named(
    trees: tuple[GradientBoostingRegressor, ModelServer],
) -> None:
    _, server = trees
    model = black_box(server.url, "kserve-v1")
    model.url = server.url + "/v1/models/m:nope"
    model.__post_init__()
    with model, pytest.raises(ModelError) as caught:
        model(np.zeros((2, N_FEATURES)))
    assert caught.value.reason is Failure.REJECTED
    assert "HTTP 404" in str(caught.value)


def test_an_answer_in_an_unknown_shape_is_named(
    trees: tuple[GradientBoostingRegressor, ModelServer],
) -> None:
    _, server = trees
    model = black_box(server.url, "kserve-v1")
    model.url = server.url + "/healthz"
    model.__post_init__()
    with model, pytest.raises(ModelError) as caught:
        model(np.zeros((2, N_FEATURES)))
    assert caught.value.reason is Failure.UNKNOWN_SHAPE


def test_a_slow_model_times_out(tmp_path: Path) -> None:
    with running_model(tmp_path, "--latency-ms", "3000") as server:
        model = black_box(server.url, "kserve-v1")
        model.timeout_seconds = 0.5
        with pytest.raises(ModelError) as caught:
            model(np.zeros((2, N_FEATURES)))
        assert caught.value.reason is Failure.TIMEOUT


def test_a_connection_the_model_closed_while_idle_is_opened_anew(
    trees: tuple[GradientBoostingRegressor, ModelServer],
) -> None:
    _, server = trees
    x, _ = data(2000)
    with black_box(server.url, "kserve-v1") as model:
        explainer = Explainer(model, x[:10], permutations=1)
        explainer.explain(x[1000:1001])
        time.sleep(6)  # uvicorn closes keep-alive connections idle for 5 s
        before = served_requests(server)
        (explanation,) = explainer.explain(x[1001:1002])
    assert served_requests(server) - before == 1
    assert explanation.additivity_error <= ADDITIVITY
