"""The one Event type every part of the operator reports with.

The analysis, the rollout machine and the rollout loop return `Event`s; only
the kopf handlers turn them into Kubernetes Events (`kopf.event`), so nothing
below the controller knows how an Event is posted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str  # CamelCase, as Kubernetes conventions ask
    message: str
    # What within the monitor it is about when the reason alone does not say
    # ("slo/<name>"): a notification's incident is opened and closed by it.
    subject: str = ""
