"""Where a monitor's counts come from: one module per backend, one interface
(``MetricsSource`` below), as Flagger's metrics providers.

- ``sidecar``: each pod's ``GET /v1/snapshot`` on the admin port (the default:
  nothing else to install);
- ``prometheus``: the same counters, as a Prometheus server scraped them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from driftline_sidecar.contract.snapshot import Snapshot


@dataclass(frozen=True)
class PodTarget:
    """One selected pod carrying the sidecar, as the operator found it."""

    name: str
    ip: str
    admin_port: int
    role: str = "stable"
    model_port: int | None = None  # where the sidecar proxies to: the model itself

    @property
    def model_host(self) -> str:
        return f"[{self.ip}]" if ":" in self.ip else self.ip

    @property
    def address(self) -> str:
        """``ip:port`` of the admin API (Prometheus' default ``instance`` label)."""
        return f"{self.model_host}:{self.admin_port}"


@dataclass
class Collection:
    """Cumulative counts of every pod that answered, and why the others did not."""

    taken_at: float  # unix seconds
    snapshots: dict[str, Snapshot] = field(default_factory=dict)  # by pod name
    unreachable: dict[str, str] = field(default_factory=dict)  # pod name -> reason


class MetricsSource(Protocol):
    """One backend the counts come from (Flagger's metrics-provider shape)."""

    async def collect(self, targets: Sequence[PodTarget], *, now: float) -> Collection: ...

    async def is_online(self) -> bool: ...

    async def close(self) -> None: ...
