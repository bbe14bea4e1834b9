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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from driftline_operator.sources import Collection
from driftline_sidecar.contract.snapshot import LayoutMismatch, Snapshot, delta, merge, roll


@dataclass(frozen=True)
class Window:
    """The counts of one role's pods between two collections, merged."""

    role: str
    counts: Snapshot  # a Snapshot of the window's increments, not cumulative
    seconds: float  # how long the window is
    pods: int  # pods whose counts are in it


class PodWindows(Mapping[str, Snapshot]):
    """Each pod's own window, by pod name, computed when first asked for: the
    analysis only needs the windows per role (one pass over all pods), a
    rollout now and then one pod's."""

    def __init__(self) -> None:
        self._pairs: dict[str, tuple[Snapshot, Snapshot | None]] = {}
        self._windows: dict[str, Snapshot] = {}

    def add(self, pod: str, later: Snapshot, earlier: Snapshot | None) -> None:
        self._pairs[pod] = (later, earlier)

    def __getitem__(self, pod: str) -> Snapshot:
        if pod not in self._windows:
            self._windows[pod] = delta(*self._pairs[pod])
        return self._windows[pod]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)


@dataclass
class Windows:
    """What one collection gave: a window per role, and pods left out of them."""

    roles: dict[str, Window] = field(default_factory=dict)
    pods: PodWindows = field(default_factory=PodWindows)  # each pod's own window, by name
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
        # Per role, last time's snapshots and their sum: this time's windows
        # subtract that sum instead of adding up the same snapshots again.
        self._sums: dict[str, _Sum] = {}

    def advance(self, collection: Collection, *, profile_sha256: str | None = None) -> Windows:
        """Windows between the previous collection and ``collection``.

        ``profile_sha256`` is the sha of the profile the operator judges with;
        ``None`` (no profile) accepts the most common sha within each role.
        """
        result = Windows()
        per_role: dict[str, list[_PodDelta]] = {}
        for pod, current in sorted(collection.snapshots.items()):
            before = self._previous.get(pod)
            if before is not None and before.process.id == current.process.id:
                # Rebinned against another profile: only the new counts compare.
                earlier = before if before.profile_sha256 == current.profile_sha256 else None
                seconds = current.taken_at - before.taken_at
            elif before is not None or self._started_since_last(current):
                earlier, seconds = None, current.taken_at - current.process.start_time
            else:
                result.baseline.append(pod)
                continue
            per_role.setdefault(current.role, []).append(
                _PodDelta(pod, current, earlier, max(seconds, 0.0))
            )
            result.pods.add(pod, current, earlier)
        sums = {}
        for role, pods in per_role.items():
            accepted = _same_profile(pods, profile_sha256, result.skipped)
            if not accepted:
                continue
            try:
                result.roles[role], sums[role] = _window(role, accepted, self._sums.get(role))
            except LayoutMismatch:  # some pod's bins differ: add them one by one to tell which
                result.roles[role] = _merge_one_by_one(role, accepted, result.skipped)
        self._sums = sums
        self._previous = dict(collection.snapshots)
        self._previous_time = collection.taken_at
        return result

    def forget(self) -> None:
        """Start over (the next collection only sets baselines)."""
        self._previous.clear()
        self._previous_time = None
        self._sums.clear()

    def _started_since_last(self, snapshot: Snapshot) -> bool:
        last = self._previous_time
        return last is not None and snapshot.process.start_time >= last


@dataclass(frozen=True)
class _PodDelta:
    """One pod's counts now and at the previous collection (None: count all)."""

    pod: str
    later: Snapshot
    earlier: Snapshot | None
    seconds: float


def _same_profile(
    pods: list[_PodDelta], expected: str | None, skipped: dict[str, str]
) -> list[_PodDelta]:
    if expected is None:
        expected = Counter(p.later.profile_sha256 for p in pods).most_common(1)[0][0]
    accepted = []
    for p in pods:
        sha = p.later.profile_sha256
        # "" means the source cannot tell (Prometheus has no sha): bin counts are checked later.
        if sha in (expected, ""):
            accepted.append(p)
        else:
            skipped[p.pod] = (
                f"counts binned against reference profile {sha[:12] or 'none'}, "
                f"not {expected[:12] or 'none'}: the sidecar has not picked up the current profile"
            )
    return accepted


@dataclass(frozen=True)
class _Sum:
    snapshots: list[Snapshot]
    total: Snapshot


def _window(role: str, pods: list[_PodDelta], previous: _Sum | None) -> tuple[Window, _Sum]:
    """The pods' windows added up: the sum of their snapshots now, less the
    sum of their snapshots last time (last time's sum when they are the same
    snapshots, as they are while no pod restarts, comes or goes)."""
    now = [p.later for p in pods]
    total = merge(now)
    earlier = [p.earlier for p in pods if p.earlier is not None]
    if previous is not None and _same(previous.snapshots, earlier):
        earlier = [previous.total]
    counts = roll(total, added=[], removed=earlier, like=now[0]) if earlier else total
    seconds = max(p.seconds for p in pods)
    return Window(role=role, counts=counts, seconds=seconds, pods=len(pods)), _Sum(now, total)


def _same(a: list[Snapshot], b: list[Snapshot]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _merge_one_by_one(role: str, pods: list[_PodDelta], skipped: dict[str, str]) -> Window:
    """The pods' windows added up one by one, leaving out (and reporting)
    those whose bins do not add up with the first's."""
    total, seconds, merged = delta(pods[0].later, pods[0].earlier), pods[0].seconds, 1
    for p in pods[1:]:
        try:
            total = merge([total, delta(p.later, p.earlier)])
        except LayoutMismatch as error:  # another bin layout: the sidecar's config differs
            skipped[p.pod] = f"counts do not add up with the other {role} pods: {error}"
            continue
        merged += 1
        seconds = max(seconds, p.seconds)
    return Window(role=role, counts=total, seconds=seconds, pods=merged)
