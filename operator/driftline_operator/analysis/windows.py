"""From cumulative counts to windows: the seam between metric sources and analysis.

A *source* (``driftline_operator.sources``: the sidecars' snapshot API, or
Prometheus) gives one cumulative ``Snapshot`` per pod and names the pods it
could not read. ``WindowTracker`` remembers the previous snapshot of each pod
and turns two collections into one window per role, the way Prometheus'
``increase()`` turns two samples into an increase: ``snapshot.delta`` per pod
(a restarted process counts from zero), then ``snapshot.merge`` across pods.

Nothing here does I/O, so the tracker is tested and benchmarked with
snapshots built in memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from driftline_operator.sources import Collection
from driftline_sidecar.contract.snapshot import LayoutMismatch, Snapshot, delta, merge


@dataclass(frozen=True)
class Window:
    """The counts of one role's pods between two collections, merged."""

    role: str
    counts: Snapshot  # a Snapshot of the window's increments, not cumulative
    seconds: float  # how long the window is
    pods: int  # pods whose counts are in it


@dataclass
class Windows:
    """What one collection gave: a window per role, and pods left out of them."""

    roles: dict[str, Window] = field(default_factory=dict)
    pods: dict[str, Snapshot] = field(default_factory=dict)  # each pod's own window, by name
    baseline: list[str] = field(default_factory=list)  # first seen: counts start now
    skipped: dict[str, str] = field(default_factory=dict)  # pod -> why its counts were left out


class WindowTracker:
    """Keeps each pod's previous snapshot and turns collections into windows.

    Rules, per pod:
    - seen last time, same process: the difference of the two snapshots;
    - seen last time, another process (a restart): everything the new
      process counted (``snapshot.delta``'s rule);
    - not seen last time: a pod whose process started after the previous
      collection is new, and all its counts are in the window; any other pod
      (the operator just started, or it did not answer last time) only sets a
      baseline, because its counts span an unknown stretch of time;
    - binned against another reference profile than the one expected: left
      out and reported (its bins do not compare with the profile's).
    A pod that does not answer loses its baseline, so the next window holds
    no more than one interval of its counts.
    """

    def __init__(self) -> None:
        self._previous: dict[str, Snapshot] = {}
        self._previous_time: float | None = None

    def advance(self, collection: Collection, *, profile_sha256: str | None = None) -> Windows:
        """Windows between the previous collection and ``collection``.

        ``profile_sha256`` is the sha of the profile the operator judges with;
        ``None`` (no profile) accepts the most common sha within each role.
        """
        result = Windows()
        per_role: dict[str, list[tuple[str, Snapshot, float]]] = {}
        for pod, current in sorted(collection.snapshots.items()):
            before = self._previous.get(pod)
            if before is not None and before.process.id == current.process.id:
                window, seconds = delta(current, before), current.taken_at - before.taken_at
            elif before is not None or self._started_since_last(current):
                window, seconds = current, current.taken_at - current.process.start_time
            else:
                result.baseline.append(pod)
                continue
            per_role.setdefault(current.role, []).append((pod, window, max(seconds, 0.0)))
            result.pods[pod] = window
        for role, pods in per_role.items():
            accepted = _same_profile(pods, profile_sha256, result.skipped)
            if accepted:
                result.roles[role] = _merge(role, accepted, result.skipped)
        self._previous = dict(collection.snapshots)
        self._previous_time = collection.taken_at
        return result

    def forget(self) -> None:
        """Start over (the next collection only sets baselines)."""
        self._previous.clear()
        self._previous_time = None

    def _started_since_last(self, snapshot: Snapshot) -> bool:
        last = self._previous_time
        return last is not None and snapshot.process.start_time >= last


def _same_profile(
    pods: list[tuple[str, Snapshot, float]],
    expected: str | None,
    skipped: dict[str, str],
) -> list[tuple[str, Snapshot, float]]:
    if expected is None:
        expected = Counter(window.profile_sha256 for _, window, _ in pods).most_common(1)[0][0]
    accepted = []
    for pod, window, seconds in pods:
        # "" means the source cannot tell (Prometheus has no sha): bin counts are checked later.
        if window.profile_sha256 in (expected, ""):
            accepted.append((pod, window, seconds))
        else:
            skipped[pod] = (
                f"counts binned against reference profile {window.profile_sha256[:12] or 'none'}, "
                f"not {expected[:12] or 'none'}: the sidecar has not picked up the current profile"
            )
    return accepted


def _merge(role: str, pods: list[tuple[str, Snapshot, float]], skipped: dict[str, str]) -> Window:
    _, total, seconds = pods[0]
    merged = 1
    for pod, window, pod_seconds in pods[1:]:
        try:
            total = merge([total, window])
        except LayoutMismatch as error:  # another bin layout: the sidecar's config differs
            skipped[pod] = f"counts do not add up with the other {role} pods: {error}"
            continue
        merged += 1
        seconds = max(seconds, pod_seconds)
    return Window(role=role, counts=total, seconds=seconds, pods=merged)
