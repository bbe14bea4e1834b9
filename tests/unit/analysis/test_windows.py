"""WindowTracker: cumulative snapshots of many pods into one window per role."""

from __future__ import annotations

import numpy as np

from driftline_operator.analysis.windows import WindowTracker
from driftline_operator.sources import Collection
from driftline_sidecar.contract.snapshot import BinCounts, ProcessInfo, Snapshot, delta, merge


def cumulative(
    requests: int,
    *,
    process: str = "p1",
    started: float = 0.0,
    at: float,
    role: str = "stable",
    sha: str = "abc",
    bins: list[int] | None = None,
) -> Snapshot:
    return Snapshot(
        process=ProcessInfo(id=process, pid=1, start_time=started),
        taken_at=at,
        model="fraud",
        version="v1",
        role=role,  # type: ignore[arg-type]
        profile_sha256=sha,
        requests={"200": requests},
        features={"amount": BinCounts(counts=bins or [requests, 0])},
    )


def collect(at: float, **pods: Snapshot) -> Collection:
    return Collection(taken_at=at, snapshots=dict(pods))


def test_first_collection_only_sets_baselines() -> None:
    tracker = WindowTracker()
    windows = tracker.advance(collect(100.0, a=cumulative(500, at=100.0)))
    assert windows.roles == {}
    assert windows.baseline == ["a"]


def test_window_is_the_difference_summed_over_pods_of_a_role() -> None:
    tracker = WindowTracker()
    tracker.advance(collect(100, a=cumulative(500, at=100), b=cumulative(70, process="p2", at=100)))
    windows = tracker.advance(
        collect(
            130,
            a=cumulative(530, at=130),
            b=cumulative(80, process="p2", at=131),
            c=cumulative(9, process="p3", at=130, role="canary", started=120),  # new pod
        )
    )
    stable = windows.roles["stable"]
    assert stable.counts.requests == {"200": 40}
    assert stable.counts.features["amount"].counts == [40, 0]
    assert (stable.pods, stable.seconds) == (2, 31)
    canary = windows.roles["canary"]
    assert canary.counts.requests == {"200": 9} and canary.seconds == 10


def test_a_restarted_pod_counts_from_zero() -> None:
    tracker = WindowTracker()
    tracker.advance(collect(100, a=cumulative(500, at=100)))
    windows = tracker.advance(collect(130, a=cumulative(12, process="p9", started=125, at=130)))
    assert windows.roles["stable"].counts.requests == {"200": 12}
    assert windows.roles["stable"].seconds == 5


def test_a_pod_that_missed_a_collection_sets_a_new_baseline() -> None:
    tracker = WindowTracker()
    tracker.advance(collect(100, a=cumulative(500, at=100)))
    tracker.advance(collect(130))  # a did not answer
    windows = tracker.advance(collect(160, a=cumulative(600, at=160)))
    assert windows.baseline == ["a"] and windows.roles == {}


def test_counts_binned_against_another_profile_are_skipped_and_reported() -> None:
    tracker = WindowTracker()
    tracker.advance(collect(100, a=cumulative(5, at=100), b=cumulative(5, process="q", at=100)))
    windows = tracker.advance(
        collect(
            130,
            a=cumulative(15, at=130),
            b=cumulative(25, process="q", at=130, sha="old"),
        ),
        profile_sha256="abc",
    )
    assert windows.roles["stable"].counts.requests == {"200": 10}
    assert "profile old" in windows.skipped["b"]


def test_pods_whose_bins_do_not_add_up_are_skipped() -> None:
    tracker = WindowTracker()
    tracker.advance(collect(100, a=cumulative(5, at=100), b=cumulative(5, process="q", at=100,
                                                                       bins=[5, 0, 0])))  # fmt: skip
    windows = tracker.advance(
        collect(130, a=cumulative(15, at=130), b=cumulative(9, process="q", at=130, bins=[9, 0, 0]))
    )
    assert windows.roles["stable"].counts.requests == {"200": 10}
    assert windows.roles["stable"].pods == 1
    assert "do not add up" in windows.skipped["b"]


def _fleet(rng, at: float, previous: dict[str, Snapshot] | None) -> dict[str, Snapshot]:
    """Four pods advanced by random counts; pod d restarts now and then, pod e
    comes late, a 503 shows up on some pods only."""
    pods = {}
    for name in ("a", "b", "c", "d", "e"):
        before = (previous or {}).get(name)
        if name == "e" and at < 160:
            continue
        restart = name == "d" and rng.random() < 0.3
        base = before if before is not None and not restart else None
        codes = dict(base.requests) if base is not None else {}
        for code in ("200", "503") if rng.random() < 0.5 else ("200",):
            codes[code] = codes.get(code, 0) + int(rng.integers(0, 50))
        bins = [int(x) for x in rng.integers(0, 20, 3)]
        if base is not None:
            bins = [x + y for x, y in zip(base.features["amount"].counts, bins, strict=True)]
        pods[name] = Snapshot(
            process=ProcessInfo(id=f"{name}-{at}" if base is None else base.process.id, pid=1,
                                start_time=at - 1 if base is None else base.process.start_time),
            taken_at=at, model="fraud", version="v1", role="stable", profile_sha256="abc",
            requests=codes, features={"amount": BinCounts(counts=bins)},
        )  # fmt: skip
    return pods


def test_windows_over_many_intervals_equal_the_pods_deltas_added_up() -> None:
    # The tracker subtracts last time's sum instead of each pod's snapshot:
    # the result must be what adding each pod's own window gives.
    rng = np.random.default_rng(5)
    tracker = WindowTracker()
    previous: dict[str, Snapshot] = {}
    for at in range(100, 400, 30):
        current = _fleet(rng, float(at), previous)
        windows = tracker.advance(collect(float(at), **current))
        expected = [
            delta(snap, previous.get(name))
            for name, snap in sorted(current.items())
            if name in previous or snap.process.start_time >= at - 30
        ]
        if at > 100:
            stable = windows.roles["stable"]
            total = merge(expected)
            assert stable.counts.requests == total.requests
            assert stable.counts.features == total.features
            assert stable.pods == len(expected)
            for name in windows.pods:
                assert windows.pods[name] == delta(current[name], previous.get(name))
        previous = current
