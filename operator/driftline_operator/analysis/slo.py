"""SLO verdicts on a window: latency, error rate, success rate with error
budget burn, drifted feature share, prediction drift. Pure.

No data is not bad data: a window with fewer than ``MIN_REQUESTS`` requests
gives ``insufficient_data``, which never breaches and never recovers.
"""

from __future__ import annotations

import math

from driftline_operator.analysis.data_quality import DataQualityFigures
from driftline_operator.analysis.signals import (
    MIN_REQUESTS,
    error_count,
    histogram_quantile,
    request_count,
)
from driftline_operator.analysis.windows import Window
from driftline_operator.api.spec import (
    DATA_QUALITY_METRICS,
    QUALITY_AT_LEAST,
    QUALITY_AT_MOST,
    Slo,
)
from driftline_operator.api.status import QualityFigures, SloStatus
from driftline_operator.stats.attribution import AttributionDrift
from driftline_operator.stats.verdict import DatasetDrift

# Google SRE workbook, "Alerting on SLOs": a burn rate of 14.4 spends 2 % of a
# 30-day error budget in one hour; paging needs it over a long AND a short window.
FAST_BURN = 14.4


def _too_few(window: Window | None, min_requests: int) -> str | None:
    n = request_count(window.counts) if window else 0
    if n >= min_requests:
        return None
    seconds = f" in {window.seconds:.0f}s" if window else ""
    return f"{n} requests{seconds}, need {min_requests}"


def _burn(window: Window, budget: float) -> float:
    n, errors = request_count(window.counts), error_count(window.counts)
    if budget == 0:
        return math.inf if errors else 0.0
    return errors / n / budget


def judge_slo(
    slo: Slo,
    *,
    short: Window | None,
    long: Window | None,
    drift: DatasetDrift | None = None,
    prediction_drift: float | None = None,
    attribution_drift: AttributionDrift | None = None,
    data_quality: DataQualityFigures | None = None,
    min_records: int = 1,
    quality: QualityFigures | None = None,
    min_requests: int = MIN_REQUESTS,
    fast_burn: float = FAST_BURN,
) -> SloStatus:
    """One SLO's verdict. ``short`` is this interval's window, ``long`` the
    drift window (which includes it).

    - latency: the quantile of ``short`` above ``max``;
    - errorRate: the 5xx share of ``short`` above ``max``;
    - successRate: the error budget is ``1 - objective`` and a window's burn
      rate its error ratio over the budget (1 spends the budget exactly). It
      breaches when the burn rate is at least ``fast_burn`` over BOTH windows
      (the SRE workbook's multi-window rule): the long window shows the
      budget really going, the short one that it still is, so a burst that
      has ended recovers within one interval and a single bad interval alone
      does not breach;
    - driftedFeatureShare: the share of drifted features above ``max``;
    - predictionDrift: the prediction score's Jensen-Shannon distance above ``max``;
    - attributionDrift: the total variation distance between the drift window's and
      the reference's attribution shares (spec.explain) above ``max``;
    - missingRate, outOfRangeRate, unseenCategoryRate: the rate of ``slo.feature``
      (default: the worst feature) in ``data_quality`` (the drift window's)
      above ``max``; schemaErrorRate: schema violations per row above ``max``;
      insufficient data below ``min_records`` rows;
    - accuracy, auc, f1 (macro): the labelled figure in ``quality`` below the
      objective; rmse, mae: above ``max``; insufficient data below
      ``spec.quality.minLabels`` labels or without spec.quality.
    """
    if slo.metric in QUALITY_AT_LEAST | QUALITY_AT_MOST:
        return judge_quality_slo(slo, quality)
    if slo.metric in DATA_QUALITY_METRICS:
        return _data_quality(slo, data_quality, min_records)
    if slo.metric == "driftedFeatureShare":
        return _drifted_share(slo, drift)
    if slo.metric == "predictionDrift":
        return _prediction_drift(slo, prediction_drift)
    if slo.metric == "attributionDrift":
        return _attribution_drift(slo, attribution_drift)
    few = _too_few(short, min_requests)
    if slo.metric == "successRate" and not few:
        few = _too_few(long, min_requests)
    if few or short is None:
        return SloStatus(name=slo.name, verdict="insufficient_data", message=few or "")
    if slo.metric == "latency":
        return _latency(slo, short)
    if slo.metric == "errorRate":
        return _error_rate(slo, short)
    assert long is not None  # _too_few saw it
    return _success_rate(slo, short, long, fast_burn=fast_burn)


def _where(window: Window) -> str:
    return f"over {window.seconds:.0f}s ({request_count(window.counts)} requests)"


def _latency(slo: Slo, short: Window) -> SloStatus:
    bound, q = slo.max_value, slo.quantile
    assert bound is not None and q is not None  # the Slo model checks both
    value = histogram_quantile(short.counts.latency, q)
    assert value is not None  # the window has requests
    text = f"p{q * 100:g} {value * 1000:.1f}ms {_where(short)}; max {bound * 1000:g}ms"
    return _verdict(slo, value, bound, value > bound, text)


def _error_rate(slo: Slo, short: Window) -> SloStatus:
    bound = slo.max_value
    assert bound is not None
    n, errors = request_count(short.counts), error_count(short.counts)
    value = errors / n
    text = f"error rate {value:.2%} ({errors}/{n}) {_where(short)}; max {bound:.2%}"
    return _verdict(slo, value, bound, value > bound, text)


def _success_rate(slo: Slo, short: Window, long: Window, *, fast_burn: float) -> SloStatus:
    objective = slo.objective_value
    assert objective is not None  # the Slo model requires it for successRate
    budget = 1.0 - objective
    burn_short, burn_long = _burn(short, budget), _burn(long, budget)
    breach = burn_short >= fast_burn and burn_long >= fast_burn
    n, errors = request_count(short.counts), error_count(short.counts)
    text = (
        f"success rate {1 - errors / n:.3%} {_where(short)}, objective {objective:.3%}; "
        f"error budget burning {burn_short:.1f}x over {short.seconds:.0f}s and "
        f"{burn_long:.1f}x over {long.seconds:.0f}s (breach at {fast_burn:g}x over both)"
    )
    status = _verdict(slo, 1 - errors / n, objective, breach, text)
    status.burn_rate = round(burn_short, 4) if math.isfinite(burn_short) else None
    return status


def _drifted_share(slo: Slo, drift: DatasetDrift | None) -> SloStatus:
    bound = slo.max_value
    assert bound is not None
    if drift is None or len(drift.insufficient) == len(drift.features):
        why = (
            "no feature has enough values in the drift window yet"
            if drift
            else "no drift verdict (no reference profile or no drift window yet)"
        )
        return SloStatus(name=slo.name, verdict="insufficient_data", message=why)
    judged = len(drift.features) - len(drift.insufficient)
    value = drift.drifted_share
    text = f"{len(drift.drifted)} of {judged} features drifted ({value:.1%}); max {bound:.1%}"
    return _verdict(slo, value, bound, value > bound, text)


def _prediction_drift(slo: Slo, score: float | None) -> SloStatus:
    bound = slo.max_value
    assert bound is not None
    if score is None:
        why = "too few prediction scores in the drift window (or none in the profile)"
        return SloStatus(name=slo.name, verdict="insufficient_data", message=why)
    text = f"prediction score Jensen-Shannon distance {score:.3f}; max {bound:g}"
    return _verdict(slo, score, bound, score > bound, text)


def _attribution_drift(slo: Slo, drift: AttributionDrift | None) -> SloStatus:
    bound = slo.max_value
    assert bound is not None
    if drift is None or drift.distance is None:
        why = (
            "no explanations (spec.explain.enabled, and ExplanationsAvailable says why)"
            if drift is None
            else f"{drift.explained} rows explained in the drift window, too few"
        )
        return SloStatus(name=slo.name, verdict="insufficient_data", message=why)
    text = (
        f"attribution distance {drift.distance:.3f} (top {', '.join(drift.top_current)}); "
        f"max {bound:g}"
    )
    return _verdict(slo, drift.distance, bound, drift.distance > bound, text)


def _data_quality(slo: Slo, figures: DataQualityFigures | None, min_records: int) -> SloStatus:
    bound = slo.max_value
    assert bound is not None
    if figures is None or figures.rows < min_records:
        rows = figures.rows if figures else 0
        why = f"{rows} rows in the drift window, need {min_records}"
        return SloStatus(name=slo.name, verdict="insufficient_data", message=why)
    found = figures.worst(slo.metric, slo.feature)
    if found is None or found[1].value is None:
        which = f"feature {slo.feature} has" if slo.feature else "no feature has"
        why = f"{which} no values {slo.metric} applies to"
        return SloStatus(name=slo.name, verdict="insufficient_data", message=why)
    feature, rate = found
    value = rate.value
    assert value is not None
    subject = f"{slo.metric} of {feature}" if feature else slo.metric
    text = f"{subject} {rate} over {figures.rows} rows; max {bound:.2%}"
    return _verdict(slo, value, bound, value > bound, text)


QUALITY_FIELDS = {
    "accuracy": "accuracy",
    "auc": "roc_auc",
    "f1": "macro_f1",
    "rmse": "rmse",
    "mae": "mae",
    "estimatedAccuracy": "estimated_accuracy",
}


def quality_value(
    slo: Slo, figures: QualityFigures | None, *, min_predictions: int = MIN_REQUESTS
) -> tuple[float | None, str]:
    """The figure an accuracy/auc/f1/rmse/mae SLO bounds, or None and why not."""
    if figures is None:
        return None, "no labelled predictions (spec.quality is not set, or no window yet)"
    if slo.metric == "estimatedAccuracy":
        if figures.estimated_accuracy is None:
            return None, "no estimate (a profile with a calibration and scored predictions)"
        if figures.estimated_from < min_predictions:
            return None, f"{figures.estimated_from} scored predictions, need {min_predictions}"
        return float(figures.estimated_accuracy), ""
    if figures.status != "ok":
        return None, figures.message
    value = getattr(figures, QUALITY_FIELDS[slo.metric])
    if value is None:
        return None, f"{slo.metric} is not defined for these labels ({figures.message})"
    return float(value), ""


def judge_quality_slo(slo: Slo, figures: QualityFigures | None) -> SloStatus:
    value, why = quality_value(slo, figures)
    if value is None or figures is None:
        return SloStatus(name=slo.name, verdict="insufficient_data", message=why)
    if slo.metric in QUALITY_AT_LEAST:
        bound = slo.objective_value
        assert bound is not None
        over = (
            f"{figures.estimated_from} scored predictions"
            if slo.metric == "estimatedAccuracy"
            else f"{figures.labels} labels"
        )
        text = f"{slo.metric} {value:.4g} over {over}; objective {bound:.4g}"
        return _verdict(slo, value, bound, value < bound, text)
    bound = slo.max_value
    assert bound is not None
    text = f"{slo.metric} {value:.4g} over {figures.labels} labels; max {bound:.4g}"
    return _verdict(slo, value, bound, value > bound, text)


def _verdict(slo: Slo, value: float, bound: float, breach: bool, text: str) -> SloStatus:
    return SloStatus(
        name=slo.name,
        verdict="breach" if breach else "ok",
        value=float(f"{value:.6g}"),
        objective=bound,
        message=text,
    )
