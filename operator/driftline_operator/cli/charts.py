"""Bar charts for the HTML report, as plain geometry an SVG template draws.

Computing the rectangles here and drawing them in ``templates/report.html.j2``
keeps the report one self-contained file (no chart library at view time) and
makes a 100-feature report cost milliseconds, not a plotting library's
seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from driftline_sidecar.contract.profile import CategoricalProfile, NumericProfile

WIDTH = 640
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 56  # margins: y labels, -, -, rotated x labels
LABEL_CHARS = 16


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: int  # index into the chart's series (its colour)
    title: str  # tooltip: "reference, 10-20: 12.5%"


@dataclass(frozen=True)
class Tick:
    at: float
    label: str
    full: str  # the label before it was shortened


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    series: list[tuple[str, int]]  # name and colour index: a lone series is "current"'s
    plot_left: int = LEFT
    plot_bottom: int = HEIGHT - BOTTOM


def number(value: float) -> str:
    return f"{value:.3g}"


def bin_labels(profile: NumericProfile | CategoricalProfile) -> list[str]:
    """Readable names of a profile's bins, in their order (layout in the contract)."""
    if isinstance(profile, CategoricalProfile):
        return [*profile.categories, "other"]
    edges = [number(e) for e in profile.edges]
    if not edges:
        return ["all"]
    if profile.distinct_values is not None:  # one bin per value
        return [number(profile.min), *edges]
    middle = [f"{a} to {b}" for a, b in pairwise(edges)]
    return [f"< {edges[0]}", *middle, f"≥ {edges[-1]}"]


def proportions(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total for c in counts] if total > 0 else [0.0 for _ in counts]


def bars(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    percent: bool = True,
) -> Chart:
    """Grouped bars: one group per label, one bar per series in each group.
    ``percent``: values are shares (0..1), the axis reads in percent."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    top = max((v for _, values in series for v in values), default=0.0)
    top = top if top > 0 else 1.0
    group = plot_w / max(len(labels), 1)
    bar_w = group * 0.8 / max(len(series), 1)
    colour = 1 if len(series) == 1 else 0
    result: list[Bar] = []
    for s, (name, values) in enumerate(series):
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            height = plot_h * value / top
            shown = f"{value:.1%}" if percent else f"{value:g}"
            result.append(
                Bar(
                    x=LEFT + i * group + group * 0.1 + s * bar_w,
                    y=TOP + plot_h - height,
                    width=bar_w,
                    height=height,
                    series=s + colour,
                    title=f"{name}, {label}: {shown}",
                )
            )
    x_ticks = [
        Tick(LEFT + (i + 0.5) * group, _short(label), label) for i, label in enumerate(labels)
    ]
    y_ticks = [
        Tick(
            TOP + plot_h * (1 - f),
            f"{top * f:.0%}" if percent else number(top * f),
            "",
        )
        for f in (0.0, 0.5, 1.0)
    ]
    names = [(name, s + colour) for s, (name, _) in enumerate(series)]
    return Chart(WIDTH, HEIGHT, result, x_ticks, y_ticks, names)


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
