"""Known traffic through the sidecar shows up, exactly, in /v1/snapshot and /metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.component.conftest import ModelServer, Sidecar

EDGES = [-1.0, -0.5, 0.0, 0.5, 1.0]
DECILES = np.arange(1, 10) / 10
FEATURES = [{"name": f"f{i}", "bins": EDGES} for i in range(4)]
# Per protocol: where the prediction and score are, and how a batch of rows is sent.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "json": {
        "prediction": {"path": "prediction", "score": "probability"},
        "url": "/predict",
        "body": lambda rows: [dict(zip([f"f{i}" for i in range(4)], r, strict=True)) for r in rows],
    },
    "kserve-v1": {
        "prediction": {"score": "1"},  # predict_proba rows: P(class 1) is column 1
        "url": "/v1/models/fraud:predict",
        "body": lambda rows: {"instances": rows},
    },
    "open-inference-v2": {
        "prediction": {"path": "predict", "score": "probability"},
        "url": "/v2/models/fraud/infer",
        "body": lambda rows: {
            "inputs": [
                {
                    "name": "x",
                    "shape": [len(rows), 4],
                    "datatype": "FP64",
                    "data": [v for r in rows for v in r],
                }
            ]
        },
    },
}


def metric_values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if k not in ("model", "version", "role")
            )
            values[(sample.name, labels)] = sample.value
    return values


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_each_protocol_is_counted_exactly(
    protocol: str, model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    spec = PROTOCOLS[protocol]
    sidecar = sidecar_factory(
        model.url,
        model={"name": "fraud", "version": "v1", "protocol": "auto", "features": FEATURES,
               "prediction": spec["prediction"]},
    )  # fmt: skip
    rng = np.random.default_rng(3)
    batches = [rng.normal(0, 1, (n, 4)).round(3) for n in (1, 1, 3, 7, 1, 12)]
    scores: list[float] = []
    labels: list[str] = []
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        for batch in batches:
            response = client.post(spec["url"], json=spec["body"](batch.tolist()))
            assert response.status_code == 200, response.text
            s, lab = answers(protocol, response.json())
            scores += s
            labels += lab
    rows = np.vstack(batches)
    snapshot = sidecar.wait_records(lambda s: s["capture"]["records"] == len(rows))

    assert snapshot["requests"] == {"200": len(batches)}
    assert snapshot["capture"]["bodies_parsed"] == len(batches)
    assert snapshot["capture"]["unparsed"] == 0
    for i in range(4):
        expected = np.bincount(np.searchsorted(EDGES, rows[:, i], side="right"), minlength=6)
        assert snapshot["features"][f"f{i}"] == {
            "counts": expected.tolist(),
            "missing": 0,
            "out_of_range": 0,
        }
    expected_scores = np.bincount(np.searchsorted(DECILES, scores, side="right"), minlength=10)
    assert snapshot["prediction"]["counts"] == expected_scores.tolist()
    assert snapshot["classes"] == dict(Counter(labels))
    assert sum(snapshot["latency"]["counts"]) == len(batches)
    assert sum(snapshot["upstream_latency"]["counts"]) == len(batches)

    # /metrics holds the same numbers.
    metrics = metric_values(sidecar.metrics())
    assert metrics[("driftline_requests_total", frozenset({("code", "200")}))] == len(batches)
    assert metrics[("driftline_capture_records_total", frozenset())] == len(rows)
    for b, count in enumerate(snapshot["features"]["f2"]["counts"]):
        key = ("driftline_feature_bin_total", frozenset({("feature", "f2"), ("bin", str(b))}))
        assert metrics[key] == count
    for label, count in snapshot["classes"].items():
        assert metrics[("driftline_prediction_class_total", frozenset({("class", label)}))] == count
    count_key = ("driftline_request_duration_seconds_count", frozenset())
    assert metrics[count_key] == len(batches)
    assert metrics[("driftline_prediction_score_count", frozenset())] == len(rows)


def answers(protocol: str, document: Any) -> tuple[list[float], list[str]]:
    """Scores and class labels, read independently of the sidecar."""
    if protocol == "json":
        items = document if isinstance(document, list) else [document]
        return [d["probability"] for d in items], [d["prediction"] for d in items]
    if protocol == "kserve-v1":
        probabilities = [p[1] for p in document["predictions"]]
        return probabilities, [str(int(p[1] > p[0])) for p in document["predictions"]]
    outputs = {o["name"]: o["data"] for o in document["outputs"]}
    return outputs["probability"], [str(v) for v in outputs["predict"]]


def test_missing_wrong_type_unknown_and_out_of_bins(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(
        model.url,
        model={"name": "fraud", "protocol": "json", "features": FEATURES,
               "prediction": {"path": "prediction", "score": "probability"}},
    )  # fmt: skip
    rows = [
        {"f0": 0.1, "f1": None, "f2": "high", "f3": 2.0, "extra": 1},  # null, wrong type, unknown
        {"f0": -5.0, "f2": 0.2, "f3": 0.0},  # f1 absent
    ]
    assert httpx.post(sidecar.proxy + "/predict", json=rows, timeout=10).status_code == 200
    snapshot = sidecar.wait_records(lambda s: s["capture"]["records"] == 2)
    assert snapshot["capture"]["unknown_fields"] == 1
    assert snapshot["capture"]["wrong_type"] == 1
    assert snapshot["capture"]["missing_fields"] == 1
    assert snapshot["features"]["f0"]["counts"] == [1, 0, 0, 1, 0, 0]
    assert snapshot["features"]["f1"] == {"counts": [0] * 6, "missing": 2, "out_of_range": 0}
    assert snapshot["features"]["f2"]["missing"] == 1  # the wrong-typed value is no value


def test_malformed_and_huge_bodies_pass_untouched_and_are_counted(
    model: ModelServer, sidecar_factory: Callable[..., Sidecar]
) -> None:
    sidecar = sidecar_factory(model.url, capture={"max_body_bytes": 10_000})
    bodies = [b"{not json", b"\xff\xfe binary", b'"a JSON string"', b"[1, 2"]
    huge = b'{"instances": [' + b"[0.1, 0.2, 0.3, 0.4]," * 1000 + b"[0, 0, 0, 0]]}"
    with httpx.Client(base_url=sidecar.proxy, timeout=10) as client:
        for body in [*bodies, huge]:
            response = client.post("/echo/x", content=body)
            assert response.status_code == 200
            assert response.content == body  # forwarded and answered byte for byte
    snapshot = sidecar.wait_records(
        lambda s: s["capture"]["unparsed"] + s["capture"]["too_large"] == 5
    )
    assert snapshot["capture"]["too_large"] == 1
    assert snapshot["capture"]["unparsed"] == 4
    assert snapshot["capture"]["records"] == 0
    assert snapshot["requests"] == {"200": 5}
    assert snapshot["request_bytes"] == sum(map(len, bodies)) + len(huge)
    assert snapshot["response_bytes"] == sum(map(len, bodies)) + len(huge)
    metrics = metric_values(sidecar.metrics())
    assert metrics[("driftline_capture_skipped_total", frozenset({("reason", "unparsed")}))] == 4
    assert metrics[("driftline_capture_skipped_total", frozenset({("reason", "too_large")}))] == 1


def test_pure_pass_through_has_golden_signals_and_clean_metrics(sidecar: Sidecar) -> None:
    """No features, no profile: requests are still counted, and promtool is happy."""
    for _ in range(3):
        httpx.post(sidecar.proxy + "/predict", json={"f0": 1.0}, timeout=10)
    text = sidecar.metrics()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr == ""
    values = metric_values(text)
    assert values[("driftline_requests_total", frozenset({("code", "200")}))] >= 3
    assert "driftline_requests_in_flight" in text
    snapshot = sidecar.snapshot()
    assert snapshot["features"] == {}
    assert json.loads(httpx.get(sidecar.admin + "/healthz", timeout=5).text) == {"status": "ok"}
    assert httpx.get(sidecar.admin + "/readyz", timeout=5).status_code == 200
