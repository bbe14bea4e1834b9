"""Model quality of a window: the ``stats.quality`` figures of each role's
labelled predictions, overall and per segment, as status. Pure.

A window's quality counts grow when labels are joined, not when the
predictions were made, so a window here is the labels that arrived in it;
the runner keeps the last ``spec.drift.window`` of them per role
(``DriftWindow``). Below ``spec.quality.minLabels`` a figure says
insufficient data (and is still shown, with its count).
"""

from __future__ import annotations

from collections.abc import Mapping

from driftline_operator.analysis.windows import Window
from driftline_operator.api.spec import Quality
from driftline_operator.api.status import ClassQualityStatus, QualityFigures, QualityStatus
from driftline_operator.stats import quality as stats
from driftline_sidecar.contract.profile import Calibration, ClassCalibration
from driftline_sidecar.contract.snapshot import QualityCounts, Snapshot

ROLE_ORDER = ("stable", "canary", "shadow")


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def figures(
    counts: QualityCounts, spec: Quality, *, role: str, segment: str | None = None
) -> QualityFigures:
    if spec.classes is not None:
        result = _classification(counts, spec)
    else:
        r = stats.regression(counts.regression)
        result = QualityFigures(
            labels=r.labels,
            mae=_round(r.mae),
            rmse=_round(r.rmse),
            bias=_round(r.bias),
            r2=_round(r.r2),
        )
    result.role, result.segment = role, segment
    enough = result.labels >= spec.min_labels
    result.status = "ok" if enough else "insufficient_data"
    result.message = (
        f"{result.labels} labelled predictions"
        if enough
        else f"insufficient data: {result.labels} labelled predictions, need {spec.min_labels}"
    )
    return result


def _classification(counts: QualityCounts, spec: Quality) -> QualityFigures:
    classes = spec.classes or []
    c = stats.classification(counts.confusion, classes)
    result = QualityFigures(
        labels=c.labels,
        accuracy=_round(c.accuracy),
        macro_f1=_round(c.macro_f1),
        classes=[
            ClassQualityStatus(
                name=f.name,
                support=f.support,
                precision=_round(f.precision),
                recall=_round(f.recall),
                f1=_round(f.f1),
            )
            for f in c.classes
        ],
    )
    if len(classes) == 2:
        positive = spec.positive_class or classes[1]
        negative = classes[0] if positive == classes[1] else classes[1]
        empty = [0] * spec.score_bins
        pos = counts.score_bins.get(positive, empty)
        neg = counts.score_bins.get(negative, empty)
        if len(pos) == len(neg):
            s = stats.binned_scores(pos, neg)
            result.roc_auc, result.roc_auc_bound = _round(s.roc_auc), _round(s.auc_bound)
            result.pr_auc, result.ece = _round(s.pr_auc), _round(s.ece)
            result.log_loss = _round(s.log_loss)
    elif counts.class_scores:
        ovr = stats.one_vs_rest(counts.class_scores)
        result.roc_auc, result.roc_auc_bound = _round(ovr.roc_auc), _round(ovr.auc_bound)
        result.pr_auc, result.ece = _round(ovr.pr_auc), _round(ovr.ece)
        result.log_loss = _round(ovr.log_loss)
        for figures in result.classes:
            one = ovr.classes.get(figures.name)
            if one is not None:
                figures.roc_auc, figures.pr_auc = _round(one.roc_auc), _round(one.pr_auc)
    return result


def estimate(
    figures: QualityFigures, counts: Snapshot, calibration: Calibration | ClassCalibration | None
) -> None:
    """Add the label-free accuracy estimate of the window's scores, and its
    difference from the labelled accuracy (CBPE, ``stats.quality``)."""
    try:
        if isinstance(calibration, ClassCalibration) and counts.class_score:
            found = stats.estimated_class_accuracy(calibration, counts.class_score)
        elif isinstance(calibration, Calibration) and counts.score is not None:
            found = stats.estimated_accuracy(calibration, counts.score)
        else:
            return
    except ValueError:
        return  # other buckets: no estimate rather than a wrong one
    figures.estimated_accuracy = _round(found.accuracy)
    figures.estimated_from = found.predictions
    if figures.accuracy is not None and found.accuracy is not None:
        figures.estimate_error = _round(figures.accuracy - found.accuracy)


def quality_status(
    windows: Mapping[str, Window],
    spec: Quality,
    calibration: Calibration | ClassCalibration | None = None,
) -> QualityStatus:
    status = QualityStatus()
    for role in sorted(windows, key=lambda r: (ROLE_ORDER.index(r) if r in ROLE_ORDER else 3, r)):
        window = windows[role]
        counts = window.counts
        status.window_seconds = max(status.window_seconds, round(window.seconds, 3))
        for outcome in ("joined", "unknown", "expired", "duplicate"):
            setattr(
                status.labels,
                outcome,
                getattr(status.labels, outcome) + getattr(counts.labels, outcome),
            )
        whole = figures(stats.total(counts.quality), spec, role=role)
        estimate(whole, counts, calibration)
        status.figures.append(whole)
        if spec.segment is not None:
            status.figures += [
                figures(part, spec, role=role, segment=segment)
                for segment, part in sorted(counts.quality.items())
            ]
    return status
