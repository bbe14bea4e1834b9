"""Notification receivers: Slack, Microsoft Teams, PagerDuty Events v2 and a
generic JSON webhook, for rollout decisions and drift/SLO verdict changes.

Receivers are defined at install time (chart value `notifications.receivers`).
Each one's secret — the webhook URL, or PagerDuty's routing key — stays in a
Kubernetes Secret that the chart mounts into the operator's pods as the file
`<directory>/<receiver name>`: the operator reads that file, never a Secret
through the API, and a ModelMonitor only names receivers. The file is read on
each send, so a rotated Secret is used as soon as the kubelet updates it.

Sending never fails the caller: each POST has a timeout and a few retries
(connection errors, 429 and 5xx answers), then the failure is logged and
counted (`driftline_operator_notifications_total{outcome="failed"}`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from driftline_operator.analysis.metrics import OPERATOR_METRICS, OperatorMetrics
from driftline_operator.api.spec import NotificationEvent as EventKind
from driftline_operator.api.spec import Severity

ReceiverType = Literal["slack", "teams", "pagerduty", "webhook"]

RECEIVER_TYPES: tuple[str, ...] = get_args(ReceiverType)
SEVERITIES: tuple[str, ...] = get_args(Severity)
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
WEBHOOK_VERSION = "driftline.io/notification/v1"
TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3

# Limits of the receivers: Slack's section text, PagerDuty's summary.
_MAX_TEXT, _MAX_SUMMARY = 3000, 1024
_TEAMS_COLOR = {"info": "Good", "warning": "Warning", "critical": "Attention"}


class ReceiverError(ValueError):
    """The receivers' configuration cannot be used; the message names the part."""


@dataclass(frozen=True)
class Receiver:
    name: str
    type: ReceiverType
    path: Path  # the mounted Secret key: a URL, or PagerDuty's routing key

    def secret(self) -> str:
        try:
            value = self.path.read_text().strip()
        except OSError as error:
            raise ReceiverError(
                f"receiver {self.name!r}: cannot read its Secret file {self.path}: {error}"
            ) from None
        if not value:
            raise ReceiverError(f"receiver {self.name!r}: its Secret file {self.path} is empty")
        return value


def parse_receivers(declared: str, directory: Path) -> dict[str, Receiver]:
    """`name=type,name=type` (what the chart renders) as receivers whose
    secrets are the files `directory/name`."""
    receivers: dict[str, Receiver] = {}
    for part in (p.strip() for p in declared.split(",")):
        if not part:
            continue
        name, _, kind = (s.strip() for s in part.partition("="))
        if not name or kind not in RECEIVER_TYPES:
            raise ReceiverError(
                f"receiver {part!r}: expected NAME=TYPE with TYPE one of {', '.join(RECEIVER_TYPES)}"
            )
        if name in receivers:
            raise ReceiverError(f"receiver {name!r} is declared twice")
        receivers[name] = Receiver(name, kind, directory / name)  # type: ignore[arg-type]
    return receivers


@dataclass(frozen=True)
class Notice:
    """One thing worth telling: a rollout decision or a verdict change.

    `signal` names what changed within the monitor ("rollout", "drift",
    "slo/latency-p95"): the PagerDuty incident of a monitor+signal is opened
    by a firing notice and resolved by the next non-firing one."""

    namespace: str
    monitor: str
    kind: EventKind
    signal: str
    firing: bool
    severity: Severity
    reason: str
    message: str
    numbers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"ModelMonitor {self.namespace}/{self.monitor}: {self.reason}"

    @property
    def dedup_key(self) -> str:
        return f"driftline/{self.namespace}/{self.monitor}/{self.signal}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack(notice: Notice) -> dict[str, Any]:
    """Slack's incoming-webhook shape: `text` for notifications, `blocks` for the message."""
    facts = {"Event": notice.kind, "Severity": notice.severity, **notice.numbers}
    return {
        "text": _clip(f"{notice.title}: {notice.message}", _MAX_TEXT),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{notice.title}*"}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(notice.message, _MAX_TEXT)},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", 2000)}
                    for k, v in list(facts.items())[:10]
                ],
            },
        ],
    }


def teams(notice: Notice) -> dict[str, Any]:
    """A message carrying one Adaptive Card, what Teams' incoming webhooks and
    Workflows ("post to a channel when a webhook request is received") accept."""
    facts = {"Event": notice.kind, "Severity": notice.severity, **notice.numbers}
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": notice.title,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": _TEAMS_COLOR[notice.severity] if notice.firing else "Good",
            },
            {"type": "TextBlock", "text": notice.message, "wrap": True},
            {
                "type": "FactSet",
                "facts": [{"title": str(k), "value": str(v)} for k, v in facts.items()],
            },
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def pagerduty(notice: Notice, routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: a firing notice triggers (or updates) the
    monitor+signal's incident, a recovery resolves it by the same dedup_key."""
    if not notice.firing:
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": notice.dedup_key,
        }
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": notice.dedup_key,
        "payload": {
            "summary": _clip(f"{notice.title}: {notice.message}", _MAX_SUMMARY),
            "severity": notice.severity,
            "source": f"{notice.namespace}/{notice.monitor}",
            "component": notice.monitor,
            "group": notice.namespace,
            "class": notice.kind,
            "custom_details": {"signal": notice.signal, **notice.numbers},
        },
    }


def webhook(notice: Notice) -> dict[str, Any]:
    """The generic JSON: every field plain, `version` for receivers to check."""
    return {
        "version": WEBHOOK_VERSION,
        "event": notice.kind,
        "signal": notice.signal,
        "state": "firing" if notice.firing else "resolved",
        "severity": notice.severity,
        "namespace": notice.namespace,
        "monitor": notice.monitor,
        "reason": notice.reason,
        "message": notice.message,
        "numbers": dict(notice.numbers),
        "dedupKey": notice.dedup_key,
    }


def request(
    receiver: Receiver, notice: Notice, *, pagerduty_url: str = PAGERDUTY_EVENTS_URL
) -> tuple[str, dict[str, Any]]:
    """The URL and body `notice` is POSTed as to `receiver`."""
    secret = receiver.secret()
    if receiver.type == "pagerduty":
        return pagerduty_url, pagerduty(notice, secret)
    shape = {"slack": slack, "teams": teams, "webhook": webhook}[receiver.type]
    return secret, shape(notice)


class _Retryable(Exception):
    """An answer worth another try: 429 or 5xx."""


async def deliver(
    receiver: Receiver,
    notice: Notice,
    *,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    pagerduty_url: str = PAGERDUTY_EVENTS_URL,
    metrics: OperatorMetrics = OPERATOR_METRICS,
    attempts: int = ATTEMPTS,
    timeout: float = TIMEOUT_SECONDS,
) -> bool:
    """POST `notice` to `receiver`; False (logged and counted) when it did not arrive."""
    problem: str | None = None
    try:
        url, body = request(receiver, notice, pagerduty_url=pagerduty_url)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=0.5, max=4),
                retry=retry_if_exception_type((aiohttp.ClientError, TimeoutError, _Retryable)),
                reraise=True,
            ):
                with attempt:
                    async with session.post(url, json=body) as response:
                        if response.status == 429 or response.status >= 500:
                            raise _Retryable(f"HTTP {response.status}")
                        if response.status >= 300:
                            text = _clip(await response.text(), 200)
                            problem = f"answered HTTP {response.status}: {text}"
    except ReceiverError as error:
        problem = str(error)
    except aiohttp.InvalidURL:  # its text is the URL, a secret
        problem = f"its Secret file {receiver.path} holds no valid URL"
    except (aiohttp.ClientError, TimeoutError, ValueError, _Retryable) as error:
        problem = f"{type(error).__name__}: {error} (after {attempts} attempts)"
    metrics.count_notification(
        notice.namespace, notice.monitor, receiver.name, delivered=problem is None
    )
    if problem is not None:
        # The URL is a secret (Slack's and Teams' carry their token): never logged.
        logger.warning(
            f"ModelMonitor {notice.namespace}/{notice.monitor}: the {notice.kind} notification "
            f"to receiver {receiver.name!r} ({receiver.type}) was not delivered ({problem})."
        )
    return problem is None
