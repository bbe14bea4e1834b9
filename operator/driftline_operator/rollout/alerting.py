"""The notification hook: a JSON POST on each phase change (`spec.alerting.webhook`).

The body is what Slack's incoming webhooks accept (`text` for notifications
and clients without blocks, `blocks` for the message itself), and any other
receiver can read it as plain JSON: the monitor, the phase, the reason and
the decision's numbers are also plain fields of a `driftline` object, which
Slack ignores.

Sending never fails the caller: an unreachable receiver, a timeout or an
error status is logged and counted, and the rollout goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from driftline_operator.analysis.metrics import OPERATOR_METRICS, OperatorMetrics

TIMEOUT_SECONDS = 5.0
# Slack's limits: 3000 characters of section text, 2000 per field, 10 fields.
_MAX_TEXT, _MAX_FIELD, _MAX_FIELDS = 3000, 2000, 10
_EMOJI = {
    "Failed": ":rotating_light:",
    "Succeeded": ":white_check_mark:",
    "Paused": ":pause_button:",
}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload(
    *,
    namespace: str,
    monitor: str,
    phase: str,
    previous_phase: str | None,
    reason: str,
    message: str,
    numbers: Mapping[str, Any],
) -> dict[str, Any]:
    """The POST body for one phase change; `numbers` are the decision's figures."""
    who = f"ModelMonitor {namespace}/{monitor}"
    headline = f"{who}: {previous_phase or 'none'} → {phase} ({reason})"
    emoji = _EMOJI.get(phase, ":information_source:")
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{key}*\n{value}", _MAX_FIELD)}
        for key, value in list({"Phase": phase, "Reason": reason, **numbers}.items())[:_MAX_FIELDS]
    ]
    return {
        "text": _clip(f"{headline}: {message}", _MAX_TEXT),
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(f"{emoji} *{headline}*", _MAX_TEXT)},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(message, _MAX_TEXT)}},
            {"type": "section", "fields": fields},
        ],
        "driftline": {
            "namespace": namespace,
            "monitor": monitor,
            "phase": phase,
            "previousPhase": previous_phase,
            "reason": reason,
            "message": message,
            "numbers": dict(numbers),
        },
    }


async def send(
    url: str,
    body: Mapping[str, Any],
    *,
    namespace: str,
    monitor: str,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    metrics: OperatorMetrics = OPERATOR_METRICS,
) -> bool:
    """POST `body` to `url`; False (logged and counted) when it did not arrive."""
    problem: str | None = None
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json=dict(body)) as response,
        ):
            if response.status >= 300:
                problem = f"answered HTTP {response.status}: {_clip(await response.text(), 200)}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        problem = f"{type(error).__name__}: {error}"
    metrics.count_alert(namespace, monitor, delivered=problem is None)
    if problem is not None:
        logger.warning(
            f"ModelMonitor {namespace}/{monitor}: the alert to spec.alerting.webhook.url "
            f"{url} was not delivered ({problem}); the rollout goes on."
        )
    return problem is None
