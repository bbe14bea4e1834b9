"""What ``GET /v1/reservoir`` answers: a uniform sample of recent feature rows.

The sidecar keeps, per window of ``reservoir.window_seconds``, at most
``reservoir.size`` rows drawn uniformly from every row it captured in that
window (reservoir sampling), holding only the declared features that are not
marked PII. The explainer reads it (with the monitor's token: these are
request values) and explains some of those rows against the model. This
document is a contract between the sidecar and the operator.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ReservoirWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float  # unix seconds the window began
    end: float | None = None  # unix seconds it closed; None for the open window
    seen: int = Field(ge=0)  # rows captured in the window; the sample is uniform over them
    # The protocol the sampled requests spoke (as capture detected it), so the
    # explainer can speak it back; None before any row was seen.
    protocol: str | None = None
    features: list[str]  # the columns, in the declared order
    rows: list[list[Any]]  # at most ``size`` rows, one value per feature (None: missing)


class ReservoirDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=1)
    window_seconds: float = Field(gt=0)
    current: ReservoirWindow
    previous: ReservoirWindow | None = None  # the last closed window, if any
