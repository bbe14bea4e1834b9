"""Drift report benchmark: ``driftline report`` on 100 features x 100k rows.

    .venv/bin/python bench/report.py [--features 100] [--rows 100000] [--repeat 3]

Writes a reference and a current dataset (80 % numeric, 20 % categorical
features, a few drifted) as Parquet and as CSV, then times the whole command
(``driftline report REFERENCE CURRENT -o report.html``, in process) and each
stage of it, next to the target of issue 12 (<= 5 s). The baseline, measured
in the same run, is reading the two files with pandas: the part of the work
no report can skip.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from driftline_operator.cli.compare import Comparison, Dataset, bin_frame, drift_spec, judge
from driftline_operator.cli.main import main
from driftline_operator.cli.profiles import ProfileOptions, build_profile, read_table
from driftline_operator.cli.report import build_report, render
from driftline_sidecar.contract.profile import SourceInfo

TARGET_S = 5.0
T = TypeVar("T")


def datasets(features: int, rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    categorical = features // 5
    reference: dict[str, np.ndarray] = {}
    current: dict[str, np.ndarray] = {}
    for i in range(features - categorical):
        reference[f"num{i}"] = rng.normal(0.0, 1.0, rows)
        current[f"num{i}"] = rng.normal(0.5 if i % 10 == 0 else 0.0, 1.0, rows)
    labels = np.array([f"c{j}" for j in range(8)])
    for i in range(categorical):
        reference[f"cat{i}"] = rng.choice(labels, rows)
        current[f"cat{i}"] = rng.choice(labels[: 6 if i % 5 == 0 else 8], rows)
    return pd.DataFrame(reference), pd.DataFrame(current)


def timed(call: Callable[[], T], repeat: int) -> tuple[float, T]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    assert result is not None
    return statistics.median(times), result


def stages(reference: Path, current: Path, repeat: int) -> list[tuple[str, float]]:
    read_s, (ref, cur) = timed(lambda: (read_table(reference), read_table(current)), repeat)
    source = SourceInfo(path=str(reference), sha256="0" * 64, rows=len(ref))
    profile_s, profile = timed(
        lambda: build_profile(ref, source=source, options=ProfileOptions()), repeat
    )
    bin_s, (counts, _) = timed(lambda: bin_frame(cur, profile), repeat)
    comparison = Comparison(
        profile,
        counts,
        Dataset(str(reference), "data", len(ref)),
        Dataset(str(current), "data", len(cur)),
    )
    spec = drift_spec()
    judge_s, _ = timed(lambda: judge(comparison, spec), repeat)
    render_s, _ = timed(lambda: render(build_report(comparison, spec, title="bench")), repeat)
    return [
        ("read both files (baseline)", read_s),
        ("build the reference profile", profile_s),
        ("bin the current data", bin_s),
        ("judge drift", judge_s),
        ("render the HTML", render_s),
    ]


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="parquet,csv", help="comma-separated: parquet, csv")
    args = parser.parse_args()
    reference, current = datasets(args.features, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(
            f"driftline report: {args.features} features x {args.rows} rows, median of {args.repeat}"
        )
        for fmt in args.formats.split(","):
            ref_path, cur_path = folder / f"reference.{fmt}", folder / f"current.{fmt}"
            if fmt == "parquet":
                reference.to_parquet(ref_path)
                current.to_parquet(cur_path)
            else:
                reference.to_csv(ref_path, index=False)
                current.to_csv(cur_path, index=False)
            output = folder / f"report-{fmt}.html"
            argv = ["report", str(ref_path), str(cur_path), "-o", str(output)]
            total, code = timed(lambda argv=argv: main(argv), args.repeat)
            assert code == 0
            parts = stages(ref_path, cur_path, args.repeat)
            baseline = parts[0][1]
            size = output.stat().st_size / 1e6
            verdict = "meets" if total <= TARGET_S else "MISSES"
            print(
                f"\n{fmt}: whole command {total:.2f} s ({verdict} the {TARGET_S:g} s target), "
                f"{total / baseline:.1f}x reading the files; report {size:.1f} MB"
            )
            for name, seconds in parts:
                print(f"  {name:<30} {seconds:6.2f} s  {seconds / baseline:5.2f}x baseline")


if __name__ == "__main__":
    main_()
