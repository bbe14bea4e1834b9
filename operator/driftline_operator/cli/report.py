"""``driftline report``: one self-contained HTML drift report.

    driftline report REFERENCE CURRENT -o report.html   (data files, or a profile and a snapshot)
    driftline report --monitor NAME [-n NS] -o report.html

Per feature the reference and current histograms, the statistic, threshold
and verdict; data quality from the counts; the prediction score's and the
predicted classes' distributions; golden signals when the counts come from a
sidecar; and, for a live monitor, its SLOs and rollout. The verdicts are
``compare.judge``'s (the operator's own). The page carries its CSS, its few
lines of JavaScript and its SVG charts inline: it opens without a network.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from driftline_operator import kube
from driftline_operator.analysis.data_quality import (
    MISSING,
    OUT_OF_RANGE,
    UNSEEN,
    DataQualityFigures,
    categorical_features,
    data_quality,
)
from driftline_operator.analysis.signals import figures
from driftline_operator.analysis.windows import Window
from driftline_operator.api.events import Event
from driftline_operator.api.spec import Drift
from driftline_operator.api.status import ModelMonitorStatus, WindowFigures
from driftline_operator.cli import charts
from driftline_operator.cli.compare import Comparison, DriftInputError, compare, judge
from driftline_operator.cli.drift import (
    add_policy_options,
    add_profile_options,
    format_value,
    policy,
    profile_options,
)
from driftline_operator.cli.live import read_monitor
from driftline_operator.cli.status import default_namespace
from driftline_operator.stats.verdict import DatasetDrift, FeatureDrift
from driftline_sidecar.contract.profile import CategoricalProfile, NumericProfile
from driftline_sidecar.contract.snapshot import BinCounts, Histogram

SERIES = ("reference", "current")


@dataclass(frozen=True)
class FeatureView:
    anchor: str  # the section's HTML id
    name: str
    verdict: FeatureDrift
    chart: charts.Chart
    outside_label: str  # what out_of_range_rate means for its kind


@dataclass
class Report:
    title: str
    generated_at: str
    comparison: Comparison
    spec: Drift
    result: DatasetDrift
    features: list[FeatureView]
    prediction: FeatureView | None
    classes: charts.Chart | None
    signals: WindowFigures | None
    quality: DataQualityFigures  # the operator's figures, from the same counts
    latency: charts.Chart | None
    status: ModelMonitorStatus | None = None
    events: list[tuple[str, Event]] = field(default_factory=list)  # (time, event), oldest first
    left_out: dict[str, str] = field(default_factory=dict)  # pod -> why its counts are not in

    @property
    def judged(self) -> int:
        return len(self.result.features) - len(self.result.insufficient)


def _view(
    anchor: str,
    verdict: FeatureDrift,
    reference: NumericProfile | CategoricalProfile,
    counts: BinCounts | None,
) -> FeatureView:
    observed = counts.counts if counts is not None else [0] * reference.n_bins
    chart = charts.bars(
        charts.bin_labels(reference),
        [("reference", reference.expected), ("current", charts.proportions(observed))],
    )
    return FeatureView(
        anchor=anchor,
        name=verdict.feature,
        verdict=verdict,
        chart=chart,
        outside_label="unseen categories" if reference.kind == "categorical" else "out of range",
    )


def _latency_chart(histogram: Histogram) -> charts.Chart | None:
    if histogram.count == 0:
        return None
    labels = [f"≤ {bound * 1000:g} ms" for bound in histogram.bounds] + ["more"]
    return charts.bars(labels, [("requests", charts.proportions(histogram.counts))])


def build_report(
    comparison: Comparison,
    spec: Drift,
    *,
    title: str,
    status: ModelMonitorStatus | None = None,
    events: Sequence[tuple[str, Event]] = (),
    categorical: Collection[str] | None = None,
) -> Report:
    """``categorical``: the features counted as categories (default: the profile's)."""
    result = judge(comparison, spec)
    profile, counts = comparison.profile, comparison.counts
    if categorical is None:
        categorical = [n for n, p in profile.features.items() if p.kind == "categorical"]
    features = [
        _view(
            f"feature-{i}",
            verdict,
            profile.features[verdict.feature],
            counts.features.get(verdict.feature),
        )
        for i, verdict in enumerate(result.features)
    ]
    prediction = None
    if result.prediction is not None and profile.prediction is not None:
        prediction = _view("prediction", result.prediction, profile.prediction, counts.prediction)
    classes = None
    if counts.classes:
        names = sorted(counts.classes, key=lambda c: -counts.classes[c])
        shares = charts.proportions([counts.classes[c] for c in names])
        classes = charts.bars(names, [("current", shares)])
    signals = None
    if counts.requests:
        signals = figures(Window("stable", counts, 0.0, 1))
    return Report(
        title=title,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        comparison=comparison,
        spec=spec,
        result=result,
        features=features,
        prediction=prediction,
        classes=classes,
        signals=signals,
        quality=data_quality(counts, categorical),
        latency=_latency_chart(counts.latency),
        status=status,
        events=list(events),
    )


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("driftline_operator.cli", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the render, not the reader
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["value"] = format_value
    environment.filters["percent"] = lambda v: "-" if v is None else f"{v:.1%}"
    return environment


def render(report: Report) -> str:
    template = _environment().get_template("report.html.j2")
    return template.render(
        report=report, series=SERIES, MISSING=MISSING, OUT_OF_RANGE=OUT_OF_RANGE, UNSEEN=UNSEEN
    )


def write(report: Report, output: str | Path) -> None:
    try:
        Path(output).write_text(render(report), encoding="utf-8")
    except OSError as error:
        raise DriftInputError(f"cannot write {output}: {error.strerror}") from None


def _monitor_report(args: argparse.Namespace) -> Report:
    """A live monitor, judged with its own spec.drift."""
    namespace = args.namespace or default_namespace()
    api = kube.connect()
    try:
        live = read_monitor(api, namespace, args.monitor)
    finally:
        api.close()  # type: ignore[no-untyped-call]
    title = args.title or f"ModelMonitor {namespace}/{args.monitor}"
    report = build_report(
        live.comparison,
        live.spec.drift,
        title=title,
        status=live.status,
        events=live.events,
        categorical=categorical_features(live.spec, live.comparison.profile),
    )
    report.left_out = live.left_out
    return report


# -- the command -----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write one self-contained HTML drift report (no network needed to view it)."
    )
    parser.add_argument(
        "reference", nargs="?", help="a profile JSON, or data: .csv, .parquet, .jsonl"
    )
    parser.add_argument("current", nargs="?", help="data, or a sidecar snapshot JSON")
    parser.add_argument("-o", "--output", required=True, help="where to write the HTML file")
    parser.add_argument("--monitor", help="a live ModelMonitor instead of REFERENCE and CURRENT")
    parser.add_argument(
        "-n", "--namespace", help="the monitor's (default: the kubeconfig context's)"
    )
    parser.add_argument("--title", help="the report's title")
    add_profile_options(parser)
    add_policy_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.monitor:
        if args.reference is not None:
            raise DriftInputError("give --monitor or REFERENCE and CURRENT, not both")
        report = _monitor_report(args)
    else:
        if args.reference is None or args.current is None:
            raise DriftInputError(
                "give REFERENCE and CURRENT (data files, or a profile and a snapshot), or --monitor"
            )
        spec = policy(args)
        comparison = compare(args.reference, args.current, options=profile_options(args))
        name = f"{Path(args.current).name} against {Path(args.reference).name}"
        report = build_report(comparison, spec, title=args.title or f"Drift: {name}")
    write(report, args.output)
    verdict = "dataset drift" if report.result.drift else "no dataset drift"
    print(
        f"wrote {args.output}: {len(report.result.drifted)} of {report.judged} features "
        f"drifted, {verdict}",
        flush=True,
    )
    return 0
