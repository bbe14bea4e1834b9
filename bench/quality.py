"""Quality benchmark (issue 11): the label join, the pending store's memory,
and the label-free estimate's error.

    .venv/bin/python bench/quality.py [--pending 1000000] [--windows 200]

1. Labels joined per second on one core (``time.process_time``): a sidecar's
   ``Feedback`` holding ``--pending`` predictions joins POSTed batches of
   1,000 labels, parsing the JSON body included. Baseline: the same ids
   looked up in a plain ``dict`` of the predictions (no parsing, no
   counting), the least any join can cost in Python. Target >= 50,000/s.
2. Bytes per pending prediction: the store's arrays over the predictions it
   holds when full, and its spill file per prediction. Baseline: the same
   predictions in a ``dict`` of tuples (``tracemalloc``). Target <= 100.
3. CBPE error: a calibrated classifier (P(y | x) fixed) under covariate
   shift, windows of 2,000 rows: |estimated - realized accuracy| in
   percentage points, against the naive estimate "accuracy as on the
   reference". Target <= 2 pp.
4. Multiclass (10 classes): bytes per pending prediction with one score
   bin per class kept (target <= 100), and the multiclass CBPE error (each
   class's score calibrated one-vs-rest, the predicted class's calibrated
   probability per prediction) under covariate shift, 2,000 rows a window.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

from driftline_operator.cli.profiles import calibration, class_calibration
from driftline_operator.stats.quality import estimated_accuracy, estimated_class_accuracy
from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.contract.profile import SCORE_BOUNDS
from driftline_sidecar.contract.snapshot import Histogram
from driftline_sidecar.counts import build_layout
from driftline_sidecar.feedback import Feedback

CLASSES = ["ok", "fraud"]
BATCH = 1000  # labels per POST
CAPTURE_BATCH = 512  # rows per capture batch (capture.batch_size)


def feedback(pending: int, path: str | None = None) -> Feedback:
    config = SidecarConfig.model_validate(
        {
            "model": {"name": "fraud"},
            "feedback": {"enabled": True, "classes": CLASSES, "max_pending": pending},
        }
    )
    return Feedback(config, build_layout(config), registry=CollectorRegistry(), path=path)


def fill(fb: Feedback, n: int, rng: np.random.Generator) -> list[str]:
    ids = [f"{i:016x}-{rng.integers(1 << 62):x}" for i in range(n)]
    scores = rng.random(n)
    predicted = np.where(scores >= 0.5, "fraud", "ok").tolist()
    now = time.time()
    for start in range(0, n, CAPTURE_BATCH):
        end = start + CAPTURE_BATCH
        fb.remember(ids[start:end], predicted[start:end], scores[start:end].tolist(), None, now=now)
    return ids


def join_rate(pending: int) -> None:
    rng = np.random.default_rng(1)
    fb = feedback(pending)
    ids = fill(fb, pending, rng)
    order = rng.permutation(len(ids))[: min(len(ids), 200_000)]
    bodies = [
        json.dumps(
            {"labels": [{"id": ids[i], "label": CLASSES[int(i) % 2]} for i in order[s : s + BATCH]]}
        ).encode()
        for s in range(0, order.size, BATCH)
    ]
    started = time.process_time()
    joined = 0
    for body in bodies:
        joined += fb.join(*fb.parse(body)).joined
    ours = time.process_time() - started
    assert joined == order.size, (joined, order.size)

    table = {i: ("fraud", 0.5, 0, 0) for i in ids}  # the baseline: a dict lookup per label
    wanted = [ids[i] for i in order]
    started = time.process_time()
    found = sum(1 for i in wanted if i in table)
    baseline = time.process_time() - started
    assert found == order.size
    rate, base_rate = order.size / ours, order.size / baseline
    print(
        f"1. labels joined: {rate:,.0f}/s on one core (batches of {BATCH}, JSON parsing "
        f"included, {pending:,} pending); target >= 50,000/s -> "
        f"{'met' if rate >= 50_000 else 'NOT met'}"
    )
    print(f"   baseline dict lookup only: {base_rate:,.0f}/s; ratio {rate / base_rate:.3f}")


def memory(pending: int) -> None:
    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pending.bin")
        fb = feedback(pending, path=path)
        fill(fb, pending, rng)
        store = fb.store
        per = store.nbytes / len(store)
        # Once as many evictions as the capacity are remembered (two uint64 arrays):
        worst = (store.nbytes + 16 * store.capacity) / store.capacity
        fb.close()
        spill = os.path.getsize(path) / pending
    n = min(pending, 200_000)
    scores = rng.random(n).tolist()
    tracemalloc.start()  # the ids, the tuples and their numbers are the baseline's too
    ids = [f"{i:016x}-{rng.integers(1 << 62):x}" for i in range(n)]
    table = {
        i: ("fraud", s, "DE", 1_700_000_000 + k)
        for k, (i, s) in enumerate(zip(ids, scores, strict=True))
    }
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    baseline = size / len(table)
    print(
        f"2. bytes per pending prediction: {per:.1f} in memory ({len(store):,} held), "
        f"{worst:.1f} with a full memory of evicted ids, {spill:.1f} in the spill file; "
        f"target <= 100 -> {'met' if worst <= 100 else 'NOT met'}"
    )
    print(
        f"   baseline dict of tuples keyed by id: {baseline:.1f} bytes; ratio {per / baseline:.3f}"
    )


def rows(n: int, mean: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(mean, 1.0, n)
    p = 1 / (1 + np.exp(-(2.0 * x - 0.5)))  # calibrated: the score is P(y = 1 | x)
    return p, (rng.random(n) < p).astype(int)


def cbpe(windows: int) -> None:
    rng = np.random.default_rng(3)
    reference_scores, reference_labels = rows(20_000, 0.0, rng)
    profile_map = calibration(pd.Series(reference_labels), pd.Series(reference_scores))
    assert profile_map is not None
    reference_accuracy = float(np.mean((reference_scores >= 0.5) == reference_labels))
    bounds = np.asarray(SCORE_BOUNDS)
    print("3. CBPE |estimated - realized accuracy| at 2,000 rows per window, percentage points:")
    worst_mean = 0.0
    for shift in (0.0, 0.5, 1.0, -1.0):
        errors, naive = [], []
        for _ in range(windows):
            scores, labels = rows(2000, shift, rng)
            realized = float(np.mean((scores >= 0.5) == labels))
            bucket = np.searchsorted(bounds, scores, side="left")
            histogram = Histogram(
                bounds=list(SCORE_BOUNDS),
                counts=np.bincount(bucket, minlength=bounds.size + 1).tolist(),
            )
            found = estimated_accuracy(profile_map, histogram).accuracy
            assert found is not None
            errors.append(abs(found - realized) * 100)
            naive.append(abs(reference_accuracy - realized) * 100)
        mean = float(np.mean(errors))
        worst_mean = max(worst_mean, mean)
        print(
            f"   shift {shift:+.1f} sd: mean {mean:.2f}, p95 {np.percentile(errors, 95):.2f}, "
            f"within 2 pp {np.mean(np.asarray(errors) <= 2):.0%} of {windows} windows; "
            f"baseline (reference accuracy) mean {np.mean(naive):.2f}"
        )
    print(
        f"   target <= 2 pp -> {'met' if worst_mean <= 2 else 'NOT met'} (worst mean "
        f"{worst_mean:.2f}; sampling noise alone is ~0.8 pp at 2,000 rows)"
    )


MULTICLASS = [f"c{k}" for k in range(10)]


def softmax_rows(n: int, mean: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated 10-class model on x ~ N(mean, 1) in 2 dimensions."""
    x = rng.normal(mean, 1.0, (n, 2))
    angles = np.linspace(0, 2 * np.pi, len(MULTICLASS), endpoint=False)
    logits = 2.0 * x @ np.stack([np.cos(angles), np.sin(angles)])
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.minimum((rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1), len(MULTICLASS) - 1)
    return p, y


def multiclass(pending: int, windows: int) -> None:
    rng = np.random.default_rng(4)
    config = SidecarConfig.model_validate(
        {
            "model": {"name": "m"},
            "feedback": {"enabled": True, "classes": MULTICLASS, "max_pending": pending},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pending.bin")
        fb = Feedback(config, build_layout(config), registry=CollectorRegistry(), path=path)
        now = time.time()
        for start in range(0, pending, 10 * CAPTURE_BATCH):
            n = min(10 * CAPTURE_BATCH, pending - start)
            p, _ = softmax_rows(n, 0.0, rng)
            ids = [f"{start + i:016x}" for i in range(n)]
            predicted = [MULTICLASS[k] for k in p.argmax(axis=1)]
            fb.remember(ids, predicted, p.max(axis=1).tolist(), None, now=now,
                        probabilities=p.tolist())  # fmt: skip
        store = fb.store
        per = store.nbytes / len(store)
        worst = (store.nbytes + 16 * store.capacity) / store.capacity
        fb.close()
        spill = os.path.getsize(path) / pending
    print(
        f"4. multiclass, {len(MULTICLASS)} classes: {store.dtype.itemsize}-byte records, "
        f"{per:.1f} bytes per pending prediction in memory, {worst:.1f} with a full memory "
        f"of evicted ids, {spill:.1f} in the spill file; target <= 100 -> "
        f"{'met' if worst <= 100 else 'NOT met'}"
    )
    p, y = softmax_rows(50_000, 0.0, rng)
    frame = pd.DataFrame(p, columns=MULTICLASS)
    profile_map = class_calibration(
        pd.Series([MULTICLASS[k] for k in y]), frame, {c: c for c in MULTICLASS}
    )
    assert profile_map is not None
    reference_accuracy = float(np.mean(p.argmax(axis=1) == y))
    bounds = np.asarray(SCORE_BOUNDS)
    worst_mean = 0.0
    for shift in (0.0, 0.5, 1.0):
        errors, naive = [], []
        for _ in range(windows):
            p, y = softmax_rows(2000, shift, rng)
            predicted = p.argmax(axis=1)
            own = p[np.arange(len(p)), predicted]
            histograms = {
                c: Histogram(
                    bounds=list(SCORE_BOUNDS),
                    counts=np.bincount(
                        np.searchsorted(bounds, own[predicted == k], side="left"),
                        minlength=bounds.size + 1,
                    ).tolist(),
                )
                for k, c in enumerate(MULTICLASS)
            }
            found = estimated_class_accuracy(profile_map, histograms).accuracy
            assert found is not None
            realized = float(np.mean(predicted == y))
            errors.append(abs(found - realized) * 100)
            naive.append(abs(reference_accuracy - realized) * 100)
        mean = float(np.mean(errors))
        worst_mean = max(worst_mean, mean)
        print(
            f"   CBPE shift {shift:+.1f} sd: mean {mean:.2f} pp, p95 "
            f"{np.percentile(errors, 95):.2f}; baseline (reference accuracy) mean "
            f"{np.mean(naive):.2f}"
        )
    print(
        f"   target <= 2 pp -> {'met' if worst_mean <= 2 else 'NOT met'} (worst mean {worst_mean:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=200)
    args = parser.parse_args()
    join_rate(args.pending)
    memory(args.pending)
    cbpe(args.windows)
    multiclass(args.pending, args.windows)


if __name__ == "__main__":
    main()
