"""``driftline drift REFERENCE CURRENT``: offline drift for batch jobs and CI.

Prints one verdict per feature (statistic, value, threshold, verdict) and the
dataset's, as a table or, with ``--json``, as one JSON document. Exit status:
0 no dataset drift, 1 dataset drift, 2 the inputs could not be compared.
The inputs and the judging are ``compare``'s (the operator's own verdicts).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from driftline_operator.api.spec import Drift
from driftline_operator.cli import options
from driftline_operator.cli.compare import Comparison, Dataset, compare, drift_spec, judge
from driftline_operator.cli.profiles import ProfileOptions
from driftline_operator.stats.verdict import DatasetDrift, FeatureDrift

DRIFT_EXIT = 1
METHODS = ("auto", "psi", "ks", "chisquare", "jensenshannon", "wasserstein")


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    options.add_profile_options(parser, "profiling a data file given as REFERENCE")


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    """``spec.drift`` of a ModelMonitor, as options."""
    group = parser.add_argument_group("judging (a ModelMonitor's spec.drift)")
    group.add_argument("--method", choices=METHODS, default="auto", help="statistic (default auto)")
    group.add_argument(
        "--threshold", type=float, help="the method's threshold (default: its usual)"
    )
    group.add_argument(
        "--min-samples", type=int, default=100, help="values below which a feature is not judged"
    )
    group.add_argument(
        "--drift-share",
        type=float,
        default=0.5,
        help="share of drifted features that is dataset drift",
    )


def profile_options(args: argparse.Namespace, **more: Any) -> ProfileOptions:
    """The options of `add_profile_options`, and `more` (``profile build``'s own)."""
    return ProfileOptions(
        features=args.features,
        categorical=args.categorical,
        numeric=args.numeric,
        target=args.target,
        prediction=args.prediction,
        class_scores=args.class_scores,
        bins=args.bins,
        max_categories=args.max_categories,
        **more,
    )


def policy(args: argparse.Namespace) -> Drift:
    return drift_spec(
        method=args.method,
        threshold=args.threshold,
        min_samples=args.min_samples,
        drift_share=args.drift_share,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n")[0].split(": ", 1)[1]
    parser.add_argument("reference", help="a profile JSON, or data: .csv, .parquet or .jsonl")
    parser.add_argument("current", help="data (.csv, .parquet, .jsonl) or a sidecar snapshot JSON")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    add_profile_options(parser)
    add_policy_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    spec = policy(args)
    comparison = compare(args.reference, args.current, options=profile_options(args))
    result = judge(comparison, spec)
    if args.json:
        json.dump(result_json(comparison, result, spec), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(result_text(comparison, result, spec))
    return DRIFT_EXIT if result.drift else 0


def finite(value: float | None) -> float | None:
    """JSON has no infinity or NaN: such a value is written as null."""
    return value if value is not None and math.isfinite(value) else None


def feature_json(verdict: FeatureDrift) -> dict[str, Any]:
    return {
        "feature": verdict.feature,
        "kind": verdict.kind,
        "verdict": verdict.status,
        "statistic": verdict.method,
        "value": finite(verdict.score),
        "threshold": verdict.threshold,
        "samples": verdict.samples,
        "missing_rate": verdict.missing_rate,
        "out_of_range_rate": verdict.out_of_range_rate,
        "stats": {name: finite(value) for name, value in verdict.stats.items()},
    }


def result_json(comparison: Comparison, result: DatasetDrift, spec: Drift) -> dict[str, Any]:
    def side(dataset: Dataset) -> dict[str, Any]:
        return {"path": dataset.path, "kind": dataset.kind, "rows": dataset.rows}

    return {
        "reference": side(comparison.reference),
        "current": side(comparison.current),
        "drift": result.drift,
        "drifted_share": result.drifted_share,
        "drift_share_threshold": spec.drift_share,
        "drifted": result.drifted,
        "insufficient_data": result.insufficient,
        "absent": comparison.absent,
        "features": [feature_json(v) for v in result.features],
        "prediction": None if result.prediction is None else feature_json(result.prediction),
    }


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}"


def result_text(comparison: Comparison, result: DatasetDrift, spec: Drift) -> str:
    ref, cur = comparison.reference, comparison.current
    lines = [
        f"reference  {ref.path} ({ref.kind}, {ref.rows} rows)",
        f"current    {cur.path} ({cur.kind}, {cur.rows} rows)",
        "",
    ]
    verdicts = [*result.features, *([result.prediction] if result.prediction else [])]
    names = [v.feature + (" (prediction)" if v is result.prediction else "") for v in verdicts]
    rows = [
        (
            name,
            v.kind,
            v.method,
            format_value(v.score),
            f"{v.threshold:.4g}",
            v.status,
            str(v.samples),
        )
        for name, v in zip(names, verdicts, strict=True)
    ]
    header = ("feature", "kind", "statistic", "value", "threshold", "verdict", "samples")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i in (3, 4, 6) else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    if comparison.absent:
        lines.append(f"not in current: {', '.join(comparison.absent)} (counted as missing)")
    judged = len(result.features) - len(result.insufficient)
    verdict = "DRIFT" if result.drift else "no drift"
    if judged == 0:
        verdict = f"no feature has {spec.min_samples} values (--min-samples): not judged"
    lines.append(
        f"dataset: {len(result.drifted)} of {judged} judged features drifted "
        f"({result.drifted_share:.0%}; drift at {spec.drift_share:.0%}): {verdict}"
    )
    return "\n".join(lines) + "\n"
