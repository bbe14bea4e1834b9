"""The canary split: which upstream serves this request.

The stable pods' sidecars send ``routing.canary_weight`` percent of requests
to the canary Service (the ``sidecar`` traffic router). The decision is one
``random()`` per request with no lock: weights are percentages judged over
hundreds of requests, so independent draws are all the split needs, and a
weight change (``PUT /v1/config``) applies from the next request on.

Requests sent to the canary are counted by the canary pods' own sidecars;
this sidecar counts them only as routed, never in its own request counts.
"""

from __future__ import annotations

import logging
from random import random

from driftline_sidecar.config import RoutingConfig

log = logging.getLogger(__name__)


class CanarySplit:
    """The per-request choice between the local model and the canary."""

    __slots__ = ("_fraction", "_url")

    def __init__(self, routing: RoutingConfig) -> None:
        self._url: str | None = None
        self._fraction = 0.0
        self.update(routing)

    def update(self, routing: RoutingConfig) -> None:
        """Take a new routing config; the next ``pick`` uses it."""
        url = routing.canary_url.rstrip("/") if routing.canary_url else None
        if routing.canary_weight and url is None:
            log.warning(
                "routing.canary_weight is %g but routing.canary_url is not set: "
                "every request stays on the local model",
                routing.canary_weight,
            )
        self._url = url
        self._fraction = routing.canary_weight / 100.0 if url is not None else 0.0

    @property
    def url(self) -> str | None:
        return self._url

    @property
    def weight(self) -> float:
        """The current canary share in percent."""
        return self._fraction * 100.0

    def pick(self) -> str | None:
        """The canary's base URL for this request, or None for the local model."""
        if self._fraction and random() < self._fraction:
            return self._url
        return None
