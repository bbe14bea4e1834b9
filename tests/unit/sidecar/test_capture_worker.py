"""The capture worker reads a request even when its response cannot be read."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

from driftline_sidecar.capture import CaptureWorker, Exchange
from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.contract.metric_names import ResponseUnread
from driftline_sidecar.contract.snapshot import Snapshot
from driftline_sidecar.counts import build_layout, new_process_info, take_snapshot
from driftline_sidecar.metrics import SidecarMetrics

CONFIG = SidecarConfig.model_validate(
    {
        "model": {
            "name": "fraud",
            "protocol": "kserve-v1",
            "features": [{"name": "f0", "bins": [0.0]}, {"name": "f1", "bins": [0.0]}],
            "prediction": {"score": "1"},
        },
        "capture": {"max_decoded_bytes": 4096},
        "prediction_log": {"enabled": False},
    }
)
REQUEST = json.dumps({"instances": [[-1.0, 1.0], [1.0, 1.0]]}).encode()
RESPONSE = json.dumps({"predictions": [[0.9, 0.1], [0.2, 0.8]]}).encode()


def exchange(response: bytes, encoding: str = "", **flags: bool) -> Exchange:
    return Exchange(
        request=REQUEST,
        response=response,
        status=200,
        latency_seconds=0.01,
        request_id="r",
        ts=0.0,
        response_encoding=encoding,
        **flags,
    )


def captured(*exchanges: Exchange) -> tuple[Snapshot, SidecarMetrics]:
    layout = build_layout(CONFIG)
    metrics = SidecarMetrics(
        model="fraud",
        version="v1",
        role="stable",
        features=layout.bins_per_feature,
        prediction_bins=layout.prediction.n_bins,
    )
    worker = CaptureWorker(config=CONFIG, layout=layout, metrics=metrics, flush_interval=0.0)

    async def run() -> None:
        task = asyncio.create_task(worker.run())
        for e in exchanges:
            worker.submit(e)
        await worker.drain()
        task.cancel()

    asyncio.run(run())
    return take_snapshot(metrics, process=new_process_info()), metrics


def unread(metrics: SidecarMetrics) -> dict[str, float | None]:
    base = {"model": "fraud", "version": "v1", "role": "stable"}
    return {
        reason: metrics.registry.get_sample_value(
            "driftline_capture_responses_unread_total", {**base, "reason": reason}
        )
        for reason in ResponseUnread
    }


def test_a_compressed_response_is_read_like_a_plain_one() -> None:
    plain, _ = captured(exchange(RESPONSE))
    for encoded, encoding in (
        (gzip.compress(RESPONSE), "gzip"),
        (zlib.compress(RESPONSE), "deflate"),
    ):
        snapshot, _ = captured(exchange(encoded, encoding))
        assert snapshot.features == plain.features
        assert snapshot.prediction == plain.prediction
        assert snapshot.prediction is not None and snapshot.prediction.missing == 0
        assert snapshot.capture == plain.capture


def test_a_response_that_cannot_be_read_leaves_the_request_counted() -> None:
    bomb = gzip.compress(b" " * 100_000)  # valid gzip, decodes past max_decoded_bytes
    snapshot, metrics = captured(
        exchange(RESPONSE, "br"),
        exchange(RESPONSE, "gzip"),  # says gzip, is not
        exchange(bomb, "gzip"),
        exchange(b"", response_too_large=True),  # over capture.max_body_bytes as sent
        exchange(gzip.compress(b"<html>busy</html>"), "gzip"),  # decodes, but is no answer
    )
    assert snapshot.capture.bodies_parsed == 5
    assert snapshot.capture.records == 10
    assert snapshot.capture.unparsed == 0
    assert snapshot.capture.responses_unread == 5
    assert unread(metrics) == {
        "encoding": 1.0,
        "corrupt": 1.0,
        "too_large": 2.0,
        "unparsed": 1.0,
    }
    assert snapshot.features["f0"].counts == [5, 5]  # each request's two rows
    assert snapshot.prediction is not None and snapshot.prediction.missing == 10


def test_a_request_that_cannot_be_read_is_skipped_whatever_the_response() -> None:
    bad = Exchange(
        request=b"{not json",
        response=gzip.compress(RESPONSE),
        status=200,
        latency_seconds=0.01,
        request_id="r",
        ts=0.0,
        response_encoding="gzip",
    )
    snapshot, _ = captured(bad)
    assert snapshot.capture.unparsed == 1
    assert snapshot.capture.bodies_parsed == snapshot.capture.responses_unread == 0
