"""The canary's attribution comparison: how far apart two models' attribution
shares come out, and why the rows are the same on both sides.

Run: ``.venv/bin/python bench/canary_attributions.py`` (a few minutes;
``--rows`` shortens it).

bench/explain.py's world and models (30 features; f5 an almost exact copy of
f0 on live data): stable leans on f0, the reliance candidate on f5 at the
same accuracy, and the twin is stable's own model file behind a second
server. Each is a real model server on loopback, explained as a black box
(KServe v1, PermutationExplainer, 2 permutations, 10 background rows) in an
``ExplanationPool`` worker process, as the operator does. Printed, per number
of rows explained on both sides:

- paired (what ``maxAttributionDistance`` compares): stable and the twin, and
  stable and the candidate, explained on the same rows;
- the baseline, measured in the same run: stable and the twin on different
  rows of the same traffic, i.e. two samples compared instead of two models.

The ratio of the candidate's distance to the twin's says how clearly the
threshold (0.2 by the README's advice) separates them at each row count.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
from explain import BACKGROUND, COLUMNS, PATH, PERMUTATIONS, PREDICTION, live_data, serve, train

from driftline_operator.explain.worker import ExplanationPool, Job
from driftline_operator.stats.attribution import AttributionReference, PairedAttributions

COUNTS = (10, 20, 40, 80)


async def attributions(
    urls: dict[str, str], background: np.ndarray, rows: np.ndarray, other_rows: np.ndarray
) -> tuple[dict[str, np.ndarray], float]:
    """Each model's SHAP values on ``rows`` (the twin's also on ``other_rows``),
    and the wall seconds per explanation."""
    pool = ExplanationPool(processes=1, operator_per_minute=10**6)

    async def explain(url: str, matrix: np.ndarray) -> np.ndarray:
        job = Job(url=url + PATH, protocol="kserve-v1", columns=COLUMNS, prediction=PREDICTION,
                  background=background, rows=matrix.tolist(), permutations=PERMUTATIONS)  # fmt: skip
        result = await pool.explain("bench", job, per_minute=10**6)
        if result.failure:
            raise SystemExit(f"{url}: {result.failure}: {result.message}")
        return np.asarray(result.values)

    try:
        await explain(urls["stable"], rows[:2])  # the worker starts shap once
        started = time.perf_counter()
        values = {name: await explain(url, rows) for name, url in urls.items()}
        seconds = (time.perf_counter() - started) / (len(urls) * len(rows))
        values["twin, other rows"] = await explain(urls["twin"], other_rows)
    finally:
        pool.close()
    return values, seconds


def distance(stable: np.ndarray, other: np.ndarray) -> float:
    reference = AttributionReference.from_values(COLUMNS.names, stable)
    pairs = PairedAttributions.empty(reference)
    pairs.add(stable, other)  # (for the baseline the rows differ: the shares are what counts)
    return pairs.distance()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=max(COUNTS))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    counts = [n for n in COUNTS if n <= args.rows] or [args.rows]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stable, candidate = train(rng, hide=5), train(rng, hide=0)
        x, y = live_data(rng, 2000)
        print(
            f"models: accuracy on live data {np.mean(stable.predict(x) == y):.3f} (stable, "
            f"leans on f0), {np.mean(candidate.predict(x) == y):.3f} (candidate, leans on f5)"
        )
        joblib.dump(stable, workdir / "stable.joblib")
        joblib.dump(candidate, workdir / "candidate.joblib")
        servers = {
            "stable": serve(workdir / "stable.joblib"),
            "twin": serve(workdir / "stable.joblib"),
            "candidate": serve(workdir / "candidate.joblib"),
        }
        try:
            urls = {name: url for name, (_, url) in servers.items()}
            rows, other_rows = x[1000 : 1000 + args.rows], x[1500 : 1500 + args.rows]
            values, seconds = asyncio.run(attributions(urls, x[:BACKGROUND], rows, other_rows))
        finally:
            for process, _ in servers.values():
                process.terminate()
    print(
        f"cost: {2 * seconds:.3f} s of wall time per row explained on both sides "
        f"(two explanations, two model requests)"
    )
    print("total variation between attribution shares, by rows explained on both sides:")
    print(
        f"  {'rows':>5} {'twin':>7} {'candidate':>10} {'ratio':>6} {'baseline: twin, other rows':>27}"
    )
    for n in counts:
        twin = distance(values["stable"][:n], values["twin"][:n])
        moved = distance(values["stable"][:n], values["candidate"][:n])
        apart = distance(values["stable"][:n], values["twin, other rows"][:n])
        print(f"  {n:>5} {twin:>7.3f} {moved:>10.3f} {moved / twin:>6.1f} {apart:>27.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
