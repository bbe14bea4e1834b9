"""A multiclass model's class probabilities are read off every protocol's
responses when the Extractor is asked for them (feedback needs them for
one-vs-rest quality), and not otherwise."""

from __future__ import annotations

import asyncio
import json

import pytest

from driftline_sidecar.capture import CaptureWorker, Exchange
from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig, SidecarConfig
from driftline_sidecar.counts import build_layout, new_process_info, take_snapshot
from driftline_sidecar.feedback import Feedback
from driftline_sidecar.metrics import SidecarMetrics
from driftline_sidecar.protocols import Extractor

FEATURES = [FeatureConfig(name="a")]
PROBABILITIES = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]


@pytest.mark.parametrize(
    ("request_", "response", "prediction"),
    [
        ({"instances": [[1.0], [2.0]]}, {"predictions": PROBABILITIES}, PredictionConfig()),
        (
            [{"a": 1.0}, {"a": 2.0}],
            [{"label": "x", "proba": PROBABILITIES[0]}, {"label": "z", "proba": PROBABILITIES[1]}],
            PredictionConfig(path="label", score="proba"),
        ),
        (
            {"inputs": [{"name": "a", "shape": [2, 1], "datatype": "FP64", "data": [1.0, 2.0]}]},
            {"outputs": [{"name": "probabilities", "shape": [2, 3], "datatype": "FP64",
                          "data": [v for row in PROBABILITIES for v in row]}]},
            PredictionConfig(),
        ),
        (
            {"inputs": [{"name": "a", "shape": [2, 1], "datatype": "FP64", "data": [1.0, 2.0]}]},
            {"outputs": [{"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 2]},
                         {"name": "proba", "shape": [2, 3], "datatype": "FP64",
                          "data": PROBABILITIES}]},
            PredictionConfig(path="label", score="proba"),
        ),
    ],
)  # fmt: skip
def test_probabilities_are_read_per_row(
    request_: object, response: object, prediction: PredictionConfig
) -> None:
    request, answer = json.dumps(request_).encode(), json.dumps(response).encode()
    extracted = Extractor(
        protocol="auto", features=FEATURES, prediction=prediction, probabilities=True
    )(request, answer)
    assert extracted.probabilities == PROBABILITIES
    assert extracted.rows == 2
    unasked = Extractor(protocol="auto", features=FEATURES, prediction=prediction)
    assert unasked(request, answer).probabilities == []


def test_rows_without_probabilities_are_none() -> None:
    request = json.dumps({"instances": [[1.0], [2.0], [3.0]]}).encode()
    answer = json.dumps({"predictions": [[0.5, 0.5], 1, ["a", "b"]]}).encode()
    extractor = Extractor(
        protocol="auto", features=FEATURES, prediction=PredictionConfig(), probabilities=True
    )
    assert extractor(request, answer).probabilities == [[0.5, 0.5], None, None]
    assert extractor(request, None).probabilities == [None, None, None]  # an error status
    short = json.dumps({"predictions": [[0.5, 0.5]]}).encode()
    assert extractor(request, short).probabilities == [[0.5, 0.5], None, None]


def test_the_capture_worker_keeps_each_class_score_for_its_label() -> None:
    config = SidecarConfig.model_validate(
        {
            "model": {"name": "m", "protocol": "kserve-v1", "features": [{"name": "a"}]},
            "prediction_log": {"enabled": False},
            "feedback": {"enabled": True, "classes": ["x", "y", "z"], "score_bins": 10},
        }
    )
    layout = build_layout(config)
    metrics = SidecarMetrics(
        model="m",
        version="v1",
        role="stable",
        features=layout.bins_per_feature,
        prediction_bins=layout.prediction.n_bins,
    )
    feedback = Feedback(config, layout, registry=metrics.registry)
    worker = CaptureWorker(
        config=config, layout=layout, metrics=metrics, feedback=feedback, flush_interval=0.0
    )
    request = json.dumps({"instances": [[1.0], [2.0]]}).encode()
    response = json.dumps({"predictions": PROBABILITIES}).encode()

    async def run() -> None:
        task = asyncio.create_task(worker.run())
        worker.submit(Exchange(request, response, 200, 0.01, "req", 0.0))
        await worker.drain()
        task.cancel()

    asyncio.run(run())
    assert feedback.join(["req", "req:1"], [0.0, 1.0]).joined == 2  # labelled x, then y
    counts = take_snapshot(metrics, process=new_process_info()).quality[""]
    # Row 0 scored x 0.7 (bin 7), y 0.2, z 0.1; row 1 x 0.1, y 0.3 (bin 3), z 0.6.
    assert counts.class_scores["x"].positive == [0] * 7 + [1, 0, 0]
    assert counts.class_scores["x"].negative == [0, 1] + [0] * 8
    assert counts.class_scores["y"].positive == [0, 0, 0, 1] + [0] * 6
    assert counts.class_scores["y"].negative == [0, 0, 1] + [0] * 7
    assert sum(counts.class_scores["z"].positive) == 0
    assert counts.class_scores["z"].negative == [0, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    # KServe answers probabilities alone: the prediction is the likeliest class.
    assert counts.confusion == {"x": {"x": 1}, "y": {"z": 1}}
