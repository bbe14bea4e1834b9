"""WindowTracker: cumulative snapshots of many pods into one window per role."""

from __future__ import annotations

from driftline_operator.analysis.windows import WindowTracker
from driftline_operator.sources import Collection
from driftline_sidecar.contract.snapshot import BinCounts, ProcessInfo, Snapshot


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
