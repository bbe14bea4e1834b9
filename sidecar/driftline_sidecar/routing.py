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
from dataclasses import dataclass
from random import random

from yarl import URL

from driftline_sidecar.contract.config import RoutingConfig
from driftline_sidecar.upstream import UpstreamPool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Canary:
    """The canary upstream, with its own connection pool."""

    url: str
    host: bytes  # the Host header for a client that sent none
    prefix: bytes  # a base path the URL may carry
    pool: UpstreamPool

    @classmethod
    def connect(cls, url: str, *, timeout_seconds: float) -> Canary:
        where = URL(url)
        pool = UpstreamPool(
            host=where.host or "",
            port=where.port or 80,
            timeout_seconds=timeout_seconds,
            tls=where.scheme == "https",
        )
        host = where.raw_authority.encode("latin-1")
        return cls(url, host, where.raw_path.rstrip("/").encode("latin-1"), pool)


class CanarySplit:
    """The per-request choice between the local model and the canary."""

    __slots__ = ("_canary", "_fraction", "_timeout")

    def __init__(self, routing: RoutingConfig, *, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._canary: Canary | None = None
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
        old = self._canary
        if old is None or old.url != url:
            # Requests in flight keep the old pool; its idle connections go now.
            self._canary = Canary.connect(url, timeout_seconds=self._timeout) if url else None
            if old is not None:
                old.pool.close()
        self._fraction = routing.canary_weight / 100.0 if url is not None else 0.0

    @property
    def canary(self) -> Canary | None:
        return self._canary

    @property
    def weight(self) -> float:
        """The current canary share in percent."""
        return self._fraction * 100.0

    def pick(self) -> Canary | None:
        """The canary for this request, or None for the local model."""
        if self._fraction and random() < self._fraction:
            return self._canary
        return None

    def close(self) -> None:
        if self._canary is not None:
            self._canary.pool.close()
