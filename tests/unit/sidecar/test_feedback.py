"""Labels joined to predictions: the pending store (bounded, expiring, spilled
to a file that survives a restart), label validation, join outcomes and the
quality counts they leave in the snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.contract.profile import CategoricalProfile, ReferenceProfile, SourceInfo
from driftline_sidecar.contract.reader import snapshot_from_samples
from driftline_sidecar.contract.snapshot import ProcessInfo, Snapshot
from driftline_sidecar.counts import build_layout
from driftline_sidecar.feedback import Feedback, FeedbackError
from driftline_sidecar.pending import (
    COMPACT_MIN_RECORDS,
    RECORD,
    SWEEP_SECONDS,
    PendingStore,
    join_keys,
)


def config(**feedback: object) -> SidecarConfig:
    task = feedback.pop("task", "classification")
    return SidecarConfig.model_validate(
        {
            "model": {
                "name": "fraud",
                "features": [{"name": "country", "type": "categorical"}],
                "prediction": {"task": task},
            },
            "feedback": {"enabled": True, **feedback},
        }
    )


def profile() -> ReferenceProfile:
    return ReferenceProfile(
        created_at="2024-01-01T00:00:00Z",
        source=SourceInfo(path="t.csv", sha256="0" * 64, rows=10),
        features={
            "country": CategoricalProfile(
                categories=["DE", "FR"], expected=[0.5, 0.5, 0.0], missing_rate=0.0
            )
        },
    )


def feedback(tmp_path: Path | None = None, **options: object) -> tuple[Feedback, CollectorRegistry]:
    if options.get("task") != "regression":
        options.setdefault("classes", ["ok", "fraud"])
    options.setdefault("segment", "country")
    c = config(**options)
    registry = CollectorRegistry()
    path = None if tmp_path is None else str(tmp_path / "pending.bin")
    return Feedback(c, build_layout(c, profile()), registry=registry, path=path), registry


def snapshot(registry: CollectorRegistry) -> Snapshot:
    samples = (s for family in registry.collect() for s in family.samples)
    return snapshot_from_samples(
        samples, process=ProcessInfo(id="p", pid=1, start_time=0.0), taken_at=1.0
    )


def records(keys: list[str], ts: int | np.ndarray) -> np.ndarray:
    r = np.zeros(len(keys), dtype=RECORD)
    r["key"], r["ts"] = join_keys(keys), ts
    return r


def test_the_store_finds_what_it_holds_and_stays_bounded() -> None:
    store = PendingStore(capacity=1000, ttl_seconds=3600)
    ids = [f"req-{i}" for i in range(5000)]
    for start in range(0, 5000, 500):
        store.add(records(ids[start : start + 500], ts=1000 + start), now=1000 + start)
        assert len(store) <= 1000
    found = store.lookup(join_keys(ids), now=7000)
    assert found.found[-500:].all()  # the newest are kept
    gone = np.flatnonzero(~found.found)
    assert gone.size >= 4000 and not found.found[:1000].any()  # the oldest were evicted ...
    assert found.expired[gone[-1000:]].all()  # ... the latest 1000 answer "expired" ...
    assert np.count_nonzero(found.expired) == 1000  # ... older ones "unknown" (bounded)
    assert not store.lookup(join_keys(["never"]), now=7000).expired.any()
    later = store.lookup(join_keys(ids[-500:]), now=1000 + 4500 + 3601)
    assert not later.found.any() and later.expired.all()  # past the TTL
    # At most half full, 19-byte records, plus the evicted keys twice.
    assert store.nbytes / store.capacity <= 19 * 4 + 16


def test_the_store_survives_a_restart_through_its_file(tmp_path: Path) -> None:
    path = str(tmp_path / "pending.bin")
    store = PendingStore(capacity=100, ttl_seconds=3600, path=path)
    ids = [f"a{i}" for i in range(150)]
    store.add(records(ids, ts=np.arange(1000, 1150)), now=1150)  # the oldest 50 evicted
    found = store.lookup(join_keys(["a149"]), now=1150)
    store.label(found.slots)
    store.close()
    with open(path, "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn last record (killed mid-write) is dropped
    again = PendingStore(capacity=100, ttl_seconds=3600, path=path)
    assert len(again) == len(store)
    back = again.lookup(join_keys(["a149", "a148", "a0"]), now=1150)
    assert back.found.tolist() == [True, True, False]
    assert back.expired.tolist() == [False, False, True]
    assert again.records(back.slots[:2])["state"].tolist() == [1, 0]
    again.close()


def test_labels_join_once_and_the_rest_are_named() -> None:
    fb, registry = feedback()
    fb.remember(["r1", "r1:1"], ["fraud", "ok"], [0.9, 0.2], ["DE", "XX"], now=1000)
    fb.remember(["r2"], ["ok"], [0.3], ["FR"], now=1000)
    ids, labels = fb.parse(
        b'{"labels": [{"id": "r1", "label": "fraud"}, {"id": "r1:1", "label": "fraud"},'
        b' {"id": "nope", "label": "ok"}, {"id": "r1", "label": "ok"}]}'
    )
    result = fb.join(ids, labels, now=1001)
    assert result.joined == 2
    assert result.unknown == ["nope"] and result.duplicate == ["r1"]
    again = fb.join(
        *fb.parse(b'[{"id": "r1:1", "label": "ok"}, {"id": "r2", "label": "ok"}]'), now=1002
    )
    assert again.joined == 1 and again.duplicate == ["r1:1"]  # a duplicate counts once
    counts = snapshot(registry)
    assert counts.labels.model_dump() == {"joined": 3, "unknown": 1, "expired": 0, "duplicate": 2}
    assert counts.quality["DE"].confusion == {"fraud": {"fraud": 1}}
    assert counts.quality["__other__"].confusion == {"fraud": {"ok": 1}}  # XX: unprofiled
    assert counts.quality["FR"].confusion == {"ok": {"ok": 1}}
    de = counts.quality["DE"].score_bins["fraud"]
    assert len(de) == 20 and de[18] == 1 and sum(de) == 1  # 0.9 in the 19th of 20 bins


def test_regression_sums() -> None:
    fb, registry = feedback(task="regression")
    fb.remember(["a"], [3.0], [None], ["DE"], now=1000)
    fb.remember(["b"], [5.0], [None], ["DE"], now=1000)
    joined = fb.join(*fb.parse(b'[{"id": "a", "label": 2.5}, {"id": "b", "label": 6}]'), now=1001)
    assert joined.joined == 2
    sums = snapshot(registry).quality["DE"].regression
    assert sums.count == 2
    assert sums.error == pytest.approx(0.5 - 1.0)
    assert sums.abs_error == pytest.approx(1.5)
    assert sums.squared_error == pytest.approx(1.25)
    assert sums.actual == pytest.approx(8.5) and sums.actual_squared == pytest.approx(42.25)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"not json", 400, "body"),
        (b"[]", 422, "labels"),
        (b'{"labels": [{"id": "a", "label": "maybe"}]}', 422, "labels[0].label"),
        (b'[{"id": "a", "label": "ok"}, {"id": "b", "label": 1.5}]', 422, "labels[1].label"),
        (b'[{"id": "a", "label": true}]', 422, "labels[0].label"),
        (b'[{"id": "has space", "label": "ok"}]', 422, "labels[0].id"),
        (b'[{"id": 7, "label": "ok"}]', 422, "labels[0].id"),
        (b'[{"id": "a"}]', 422, "labels[0]"),
        (b'{"id": "a", "label": "no"}', 422, "body.label"),
        (b'[{"id": "a", "label": "ok"}, {"id": "b", "label": "ok"}, {"id": "c", "label": "ok"}]',
         413, "labels"),
    ],
)  # fmt: skip
def test_bad_batches_name_the_field_and_store_nothing(body: bytes, status: int, field: str) -> None:
    fb, registry = feedback(max_batch=2)
    fb.remember(["a"], ["ok"], [0.1], ["DE"], now=1000)
    with pytest.raises(FeedbackError) as caught:
        fb.parse(body)
    assert (caught.value.status, caught.value.field) == (status, field)
    assert snapshot(registry).labels.joined == 0
    assert fb.join(*fb.parse(b'[{"id": "a", "label": "ok"}]'), now=1001).joined == 1  # pending


def test_a_classifier_needs_its_classes() -> None:
    with pytest.raises(ValueError, match=r"feedback\.classes"):
        config()
    with pytest.raises(ValueError, match="positive_class"):
        config(classes=["ok", "fraud"], positive_class="maybe")


def test_the_spill_file_stays_bounded_and_old_predictions_go(tmp_path: Path) -> None:
    path = tmp_path / "pending.bin"
    store = PendingStore(capacity=1000, ttl_seconds=3600, path=str(path))
    for n in range(400):  # 200,000 predictions, each labelled: 400,000 records appended
        batch = records([f"b{n}-{i}" for i in range(500)], ts=1000 + n)
        store.add(batch, now=1000 + n)
        store.label(store.lookup(batch["key"], now=1000 + n).slots)
    assert path.stat().st_size <= (COMPACT_MIN_RECORDS + 2 * 500) * RECORD.itemsize
    store.close()
    again = PendingStore(capacity=1000, ttl_seconds=3600, path=str(path))
    assert len(again) == len(store)  # what was live is what comes back
    # Past the TTL, the next prediction sweeps the old ones out.
    later = 1000 + 400 + 3600 + SWEEP_SECONDS
    again.add(records(["fresh"], ts=int(later)), now=later)
    assert len(again) == 1
    again.close()


def test_a_spill_file_that_cannot_be_written_leaves_the_store_in_memory(tmp_path: Path) -> None:
    store = PendingStore(capacity=10, ttl_seconds=3600, path=str(tmp_path / "missing" / "p.bin"))
    store.add(records(["a"], ts=1000), now=1000)
    assert store.lookup(join_keys(["a"]), now=1000).found.all()
