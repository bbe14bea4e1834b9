"""The alert hook's body (Slack's incoming-webhook shape) and its failures."""

from __future__ import annotations

import logging
import socket

import pytest

from driftline_operator.analysis.metrics import OperatorMetrics
from driftline_operator.rollout import alerting


def body() -> dict:
    return alerting.payload(
        namespace="ml",
        monitor="fraud",
        phase="Failed",
        previous_phase="Progressing",
        reason="RolledBack",
        message="2 consecutive failed analyses at step 2 at weight 25%",
        numbers={"Step": 2, "errorRate": "0.3 (limit 0.01)"},
    )


def test_the_body_is_what_slack_accepts_and_names_everything():
    sent = body()
    assert sent["text"].startswith("ModelMonitor ml/fraud: Progressing → Failed (RolledBack)")
    for block in sent["blocks"]:
        assert block["type"] == "section"
        texts = [block["text"]] if "text" in block else block["fields"]
        assert all(t["type"] == "mrkdwn" and len(t["text"]) <= 3000 for t in texts)
    fields = [f["text"] for f in sent["blocks"][2]["fields"]]
    assert "*Phase*\nFailed" in fields and "*errorRate*\n0.3 (limit 0.01)" in fields
    assert len(fields) <= 10
    assert sent["driftline"]["numbers"] == {"Step": 2, "errorRate": "0.3 (limit 0.01)"}


def test_a_long_message_is_clipped_to_slacks_limits():
    sent = alerting.payload(
        namespace="ml", monitor="fraud", phase="Failed", previous_phase=None,
        reason="RolledBack", message="x" * 10_000, numbers={f"n{i}": i for i in range(20)},
    )  # fmt: skip
    assert len(sent["text"]) <= 3000 and len(sent["blocks"][1]["text"]["text"]) <= 3000
    assert len(sent["blocks"][2]["fields"]) == 10


@pytest.mark.asyncio
async def test_an_unreachable_receiver_is_logged_and_counted_never_raised(caplog):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = OperatorMetrics()
    logger = logging.getLogger("test-alerting")
    with caplog.at_level(logging.WARNING, logger="test-alerting"):
        delivered = await alerting.send(
            f"http://127.0.0.1:{port}/hook", body(), namespace="ml", monitor="fraud",
            logger=logger, metrics=metrics,
        )  # fmt: skip
    assert delivered is False
    assert "was not delivered" in caplog.text and "the rollout goes on" in caplog.text
    failed = metrics.registry.get_sample_value(
        "driftline_operator_alerts_total",
        {"namespace": "ml", "monitor": "fraud", "outcome": "failed"},
    )
    assert failed == 1.0
