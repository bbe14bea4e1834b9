"""SLO verdicts on a window: latency, error rate, success rate with error
budget burn, drifted feature share, prediction drift. Pure.

No data is not bad data: a window with fewer than ``MIN_REQUESTS`` requests
gives ``insufficient_data``, which never breaches and never recovers.
"""

from __future__ import annotations

import math

from driftline_operator.analysis.signals import (
    MIN_REQUESTS,
    error_count,
    histogram_quantile,
    request_count,
)
from driftline_operator.analysis.windows import Window
from driftline_operator.api.spec import Slo
from driftline_operator.api.status import SloStatus
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
    - predictionDrift: the prediction score's Jensen-Shannon distance above ``max``.
    """
    if slo.metric == "driftedFeatureShare":
        return _drifted_share(slo, drift)
    if slo.metric == "predictionDrift":
        return _prediction_drift(slo, prediction_drift)
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


def _verdict(slo: Slo, value: float, bound: float, breach: bool, text: str) -> SloStatus:
    return SloStatus(
        name=slo.name,
        verdict="breach" if breach else "ok",
        value=float(f"{value:.6g}"),
        objective=bound,
        message=text,
    )
