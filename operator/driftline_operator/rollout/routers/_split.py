"""Weights over a list of weighted backends (HTTPRoute backendRefs, Istio
route destinations): the canary gets N, stable 100 - N."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

Entry = dict[str, Any]


def split(
    entries: list[Entry],
    *,
    is_stable: Callable[[Entry], bool],
    is_canary: Callable[[Entry], bool],
    weight: int,
    canary_from_stable: Callable[[Entry], Entry],
) -> list[Entry] | None:
    """The entries with the weights set, the canary added if missing; None
    when the list has no stable entry (a rule the rollout is not about)."""
    stable = [e for e in entries if is_stable(e)]
    if not stable:
        return None
    result = [copy.deepcopy(e) for e in entries]
    if not any(is_canary(e) for e in result):
        result.append(canary_from_stable(copy.deepcopy(stable[0])))
    for entry in result:
        if is_canary(entry):
            entry["weight"] = weight
        elif is_stable(entry):
            entry["weight"] = 100 - weight
    return result


def share(entries: list[Entry], *, is_canary: Callable[[Entry], bool]) -> float:
    """The canary's share in percent (a missing weight counts 1, as in both APIs)."""
    total = sum(int(e.get("weight", 1)) for e in entries)
    if total == 0:
        return 0.0
    canary = sum(int(e.get("weight", 1)) for e in entries if is_canary(e))
    return 100.0 * canary / total


def percent(weight: float) -> int:
    """Both APIs take integer weights."""
    if not 0.0 <= weight <= 100.0:
        raise ValueError(f"a canary weight is a percentage in 0..100, got {weight}")
    return round(weight)
