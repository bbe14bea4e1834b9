"""What capture costs per exchange, off the hot path: ``CaptureWorker._process``.

Run: ``.venv/bin/python bench/capture.py [--baseline-src DIR]``

Batches of 30 of ``bench/sidecar_overhead.py``'s exchanges (a 1 KB JSON row
of 20 numeric features, its prediction and score: what the worker gathers in
its 100 ms at 300 req/s), with the same sidecar config (20 binned features,
prediction log at 1 %). Prints the CPU microseconds per exchange, the best of
five runs of 300 batches. With ``--baseline-src DIR`` (a directory holding
another ``sidecar/`` tree, e.g. ``git archive <commit> sidecar | tar -x -C
DIR``) the two trees run alternately in child processes, three times each,
so load from elsewhere on the machine hits both alike.

Measured on a shared, loaded 2-core machine (issue 14), against the tree
before the issue's capture work (orjson, one pass per one-row request, numeric
features binned together): 97-116 us per exchange before, 47-65 after
(1.75-2.18x, three alternated pairs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 30
BATCHES = 300


def measure() -> float:
    """Best of five: CPU seconds per exchange in this process's sidecar tree."""
    sys.path.insert(0, str(Path(__file__).parent))
    from sidecar_overhead import body, sidecar_config

    from driftline_sidecar.capture import CaptureWorker, Exchange
    from driftline_sidecar.main import _prediction_log, build_config, load_layout, parse_args
    from driftline_sidecar.metrics import SidecarMetrics

    workdir = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    config = build_config(parse_args(["--config", str(sidecar_config(1, 2, 3, workdir))]))
    layout = load_layout(config)
    metrics = SidecarMetrics(
        model="bench",
        version="v1",
        role="stable",
        features=layout.bins_per_feature,
        prediction_bins=layout.prediction.n_bins,
        score_buckets=[0.1, 0.5, 0.9],
        profile_sha256="",
    )
    worker = CaptureWorker(
        config=config,
        layout=layout,
        metrics=metrics,
        prediction_log=_prediction_log(config, layout),
    )
    response = json.dumps({"prediction": 1, "probability": 0.73}).encode()
    batch = [Exchange(body(), response, 200, 0.001, f"{i:032x}", time.time()) for i in range(BATCH)]

    async def run(batches: int) -> None:
        for _ in range(batches):
            await worker._process(batch)

    asyncio.run(run(30))  # warm up
    best = float("inf")
    for _ in range(5):
        began = time.process_time()
        asyncio.run(run(BATCHES))
        best = min(best, (time.process_time() - began) / (BATCHES * BATCH))
    return best


def child(src: Path | None) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve() / "sidecar")
    out = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="another tree holding sidecar/")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(measure())
        return 0
    if args.baseline_src is None:
        print(f"capture: {measure() * 1e6:.1f} us CPU per exchange (best of 5)")
        return 0
    for _ in range(3):
        ours, theirs = child(None), child(args.baseline_src)
        print(f"capture: {ours * 1e6:6.1f} us CPU per exchange, baseline {theirs * 1e6:6.1f} us"
              f" ({theirs / ours:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
