"""Candidate versus stable: pure judgements on two windows of counts.

`compare` answers the canary question for one analysis window: is the
canary at least as good as stable, within `spec.rollout.comparison`'s
margins, and does it meet the SLOs on its own? `judge_shadow` answers the
shadow question from the sidecar's per-request comparison counts.

No data is not bad data (Flagger's rule): a window with too few requests
gives ``insufficient_data``, never ``ok`` and never ``fail``. And noise is
not a regression: an error-rate increase fails only when it is both beyond
the margin and statistically significant, so a handful of extra errors on a
small canary does not roll it back.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel
from scipy import stats

from driftline_operator.analysis.data_quality import data_quality
from driftline_operator.analysis.quality import estimate
from driftline_operator.analysis.quality import figures as quality_figures
from driftline_operator.analysis.signals import (
    MIN_REQUESTS,
    error_count,
    histogram_quantile,
    request_count,
)
from driftline_operator.analysis.slo import quality_value
from driftline_operator.api.spec import (
    DATA_QUALITY_METRICS,
    QUALITY_AT_LEAST,
    QUALITY_AT_MOST,
    Comparison,
    Quality,
    Slo,
)
from driftline_operator.stats import jensen_shannon
from driftline_operator.stats.attribution import PairedAttributions, top
from driftline_operator.stats.quality import total
from driftline_sidecar.contract.profile import Calibration, ClassCalibration
from driftline_sidecar.contract.snapshot import (
    Histogram,
    LayoutMismatch,
    ShadowCounts,
    Snapshot,
    merge,
)

Verdict = Literal["ok", "fail", "insufficient_data"]

ALPHA = 0.05  # significance level of every one-sided test here


@dataclass(frozen=True)
class Check:
    """One judged quantity, with every number that went into the verdict."""

    name: str  # errorRate, latency, scoreDrift, accuracy, attributions, or slo/<name>
    verdict: Verdict
    message: str
    stable: float | None = None
    candidate: float | None = None
    limit: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class ComparisonVerdict:
    verdict: Verdict
    reason: str
    stable_requests: int = 0
    candidate_requests: int = 0
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.verdict == "fail")


# -- counting ------------------------------------------------------------------


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p-value that proportion 2 (candidate) exceeds proportion 1
    (stable): the pooled two-proportion z-test."""
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0:
        return 1.0  # no errors anywhere (or only errors): nothing to detect
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    return float(stats.norm.sf(z))


def error_increase_p_value(x1: int, n1: int, x2: int, n2: int) -> tuple[float, str]:
    """One-sided p-value that the candidate's error rate exceeds stable's, and
    the test used: the z-test where counts allow (every expected cell of the
    2x2 table at least 5), else Fisher's exact test, because the normal
    approximation calls two errors in 60 requests significant when it is not."""
    table = np.array([[x2, n2 - x2], [x1, n1 - x1]])
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    if expected.min() >= 5:
        return two_proportion_p_value(x1, n1, x2, n2), "z-test"
    return float(stats.fisher_exact(table, alternative="greater").pvalue), "Fisher exact"


def score_distance(stable: Sequence[int], candidate: Sequence[int]) -> float:
    """Jensen-Shannon distance (base 2, so in 0..1) between two count vectors."""
    return jensen_shannon(stable, candidate)


def homogeneity_p_value(stable: Sequence[int], candidate: Sequence[int]) -> float:
    """Chi-square test that two count vectors come from one distribution
    (bins empty in both are left out)."""
    table = np.array([stable, candidate], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


# -- canary versus stable ------------------------------------------------------


def _error_check(x1: int, n1: int, x2: int, n2: int, margin: float) -> Check:
    """x errors in n requests, 1 stable, 2 the candidate."""
    r1, r2 = x1 / n1, x2 / n2
    p, test = error_increase_p_value(x1, n1, x2, n2)
    numbers = f"canary {r2:.2%} ({x2}/{n2}) vs stable {r1:.2%} ({x1}/{n1}), {test} p={p:.3g}"
    worse = r2 - r1 > margin and p < ALPHA
    return Check(
        name="errorRate",
        verdict="fail" if worse else "ok",
        message=f"error rate {numbers}; allowed increase {margin:.2%}",
        stable=r1,
        candidate=r2,
        limit=margin,
        p_value=p,
    )


def _latency_check(stable: Histogram, candidate: Histogram, margin: float) -> Check:
    p1 = histogram_quantile(stable, 0.95)
    p2 = histogram_quantile(candidate, 0.95)
    if p1 is None or p2 is None:
        return Check("latency", "insufficient_data", "no latency observations", p1, p2, margin)
    worse = p2 - p1 > margin
    return Check(
        name="latency",
        verdict="fail" if worse else "ok",
        message=(
            f"p95 canary {p2 * 1000:.1f}ms vs stable {p1 * 1000:.1f}ms; "
            f"allowed increase {margin * 1000:.0f}ms"
        ),
        stable=p1,
        candidate=p2,
        limit=margin,
    )


def _score_counts(window: Snapshot, classes: Sequence[str]) -> list[int] | None:
    if window.prediction is not None:
        return list(window.prediction.counts)
    if classes:
        return [window.classes.get(c, 0) for c in classes]
    return None


def _score_check(stable: Snapshot, candidate: Snapshot, limit: float, minimum: int) -> Check:
    # Binned scores when the model has a score; else the predicted classes.
    classes = sorted(stable.classes.keys() | candidate.classes.keys())
    a, b = _score_counts(stable, classes), _score_counts(candidate, classes)
    if a is None or b is None or len(a) != len(b):
        return Check("scoreDrift", "insufficient_data", "no comparable prediction counts")
    if sum(a) < minimum or sum(b) < minimum:
        return Check(
            "scoreDrift",
            "insufficient_data",
            f"too few predictions (stable {sum(a)}, canary {sum(b)}; need {minimum})",
            limit=limit,
        )
    js = score_distance(a, b)
    p = homogeneity_p_value(a, b)
    # Two samples of ~100 predictions from one distribution are ~0.1 apart in
    # Jensen-Shannon by chance alone: fail only when the difference is both
    # large and real, as the error-rate check does.
    worse = js > limit and p < ALPHA
    return Check(
        name="scoreDrift",
        verdict="fail" if worse else "ok",
        message=(
            f"prediction distribution Jensen-Shannon {js:.3f}, chi-square homogeneity "
            f"p={p:.3g}; allowed {limit:.3f}"
        ),
        candidate=js,
        limit=limit,
        p_value=p,
    )


def judge_slos(
    window: Snapshot,
    slos: Sequence[Slo],
    *,
    categorical: Collection[str] = (),
    min_records: int = MIN_REQUESTS,
    quality: Quality | None = None,
    labelled: Snapshot | None = None,
    calibration: Calibration | ClassCalibration | None = None,
) -> tuple[Check, ...]:
    """The SLOs a candidate must meet on its own, judged on its window.

    Quality SLOs are judged on ``labelled`` when given (the candidate's
    windows summed since its rollout began: labels come late and few per
    interval), else on the window; estimatedAccuracy needs ``calibration``
    (the profile's) and holds the canary ("insufficient data") until it is
    over enough scored predictions.

    Latency, error and data-quality SLOs: drift SLOs need the reference
    profile and are the monitor's judgement, not the rollout's. A
    data-quality rate breaches, as an error rate does, only when it is
    significantly above its bound (``categorical`` names the features whose
    out-of-range values are unseen categories). Unlike the monitor's
    burn-rate verdicts (`slo.judge_slo`, which look at a short and a long
    window), a canary step has one window, so an error SLO breaches when the
    error rate is significantly above the budget in it.
    """
    n, errors = request_count(window), error_count(window)
    checks = []
    for slo in slos:
        name = f"slo/{slo.name}"
        if slo.metric == "latency" and slo.quantile is not None:
            bound = slo.max_value or 0.0
            value = histogram_quantile(window.latency, slo.quantile)
            if value is None:
                checks.append(Check(name, "insufficient_data", "no latency observations"))
                continue
            verdict: Verdict = "fail" if value > bound else "ok"
            message = f"p{slo.quantile * 100:g} {value * 1000:.1f}ms; max {bound * 1000:.0f}ms"
            checks.append(Check(name, verdict, message, candidate=value, limit=bound))
        elif slo.metric in ("errorRate", "successRate") and n:
            budget = (
                1 - (slo.objective_value or 0.0)
                if slo.metric == "successRate"
                else (slo.max_value or 0.0)
            )
            # Breach only when the error rate is significantly above the
            # budget: one error in 100 requests says nothing about 99.9 %.
            p = float(stats.binomtest(errors, n, budget, alternative="greater").pvalue)
            verdict = "fail" if errors / n > budget and p < ALPHA else "ok"
            message = f"error rate {errors / n:.2%} ({errors}/{n}); budget {budget:.2%}, p={p:.3g}"
            checks.append(Check(name, verdict, message, None, errors / n, budget, p))
        elif slo.metric in DATA_QUALITY_METRICS:
            checks.append(_data_quality_check(name, window, slo, categorical, min_records))
        elif slo.metric in QUALITY_AT_LEAST | QUALITY_AT_MOST:
            judged = labelled if labelled is not None else window
            checks.append(_quality_slo_check(name, judged, slo, quality, min_records, calibration))
    return tuple(checks)


def _quality_slo_check(
    name: str,
    window: Snapshot,
    slo: Slo,
    quality: Quality | None,
    min_predictions: int,
    calibration: Calibration | ClassCalibration | None,
) -> Check:
    figures = None
    if quality is not None:
        figures = quality_figures(total(window.quality), quality, role=window.role)
        estimate(figures, window, calibration)
    value, why = quality_value(slo, figures, min_predictions=min_predictions)
    at_least = slo.metric in QUALITY_AT_LEAST
    bound = (slo.objective_value if at_least else slo.max_value) or 0.0
    if value is None or figures is None:
        waiting = (
            "insufficient data" if slo.metric == "estimatedAccuracy" else "insufficient labels"
        )
        return Check(name, "insufficient_data", f"{waiting}: {why}", limit=bound)
    p = None
    if slo.metric == "accuracy":
        # Below the objective only when significantly so, as the error SLOs.
        correct = round(value * figures.labels)
        p = float(stats.binomtest(correct, figures.labels, bound, alternative="less").pvalue)
        worse = value < bound and p < ALPHA
    else:
        worse = value < bound if at_least else value > bound
    relation = "objective" if at_least else "max"
    over = (
        f"{figures.estimated_from} scored predictions"
        if slo.metric == "estimatedAccuracy"
        else f"{figures.labels} labels"
    )
    message = f"{slo.metric} {value:.4g} over {over}; {relation} {bound:.4g}"
    if p is not None:
        message += f", p={p:.3g}"
    return Check(name, "fail" if worse else "ok", message, None, value, bound, p)


def _accuracy_check(
    stable: Snapshot, candidate: Snapshot, quality: Quality, margin: float
) -> Check:
    """Labelled accuracy, canary against stable: fails when the canary's is
    lower by more than ``margin`` and significantly so; waits for labels."""
    one = quality_figures(total(stable.quality), quality, role="stable")
    two = quality_figures(total(candidate.quality), quality, role="canary")
    if one.status != "ok" or two.status != "ok" or one.accuracy is None or two.accuracy is None:
        return Check(
            "accuracy",
            "insufficient_data",
            f"insufficient labels: stable {one.labels}, canary {two.labels}, "
            f"need {quality.min_labels} each",
            limit=margin,
        )
    wrong1, wrong2 = (
        one.labels - round(one.accuracy * one.labels),
        two.labels - round(two.accuracy * two.labels),
    )
    p, test = error_increase_p_value(wrong1, one.labels, wrong2, two.labels)
    worse = one.accuracy - two.accuracy > margin and p < ALPHA
    return Check(
        name="accuracy",
        verdict="fail" if worse else "ok",
        message=(
            f"labelled accuracy canary {two.accuracy:.2%} ({two.labels} labels) vs stable "
            f"{one.accuracy:.2%} ({one.labels} labels), {test} p={p:.3g}; "
            f"allowed decrease {margin:.2%}"
        ),
        stable=one.accuracy,
        candidate=two.accuracy,
        limit=margin,
        p_value=p,
    )


def _attribution_check(paired: PairedAttributions | None, limit: float, minimum: int) -> Check:
    """Does the candidate rely on other features than stable? The total
    variation between their importance shares on the same explained rows
    (no test beside it: paired rows leave only the explainer's own sampling,
    a few hundredths, between two models that rely alike)."""
    explained = 0 if paired is None else paired.explained
    if paired is None or explained < minimum:
        return Check(
            "attributions",
            "insufficient_data",
            f"insufficient explanations: {explained} rows explained against both models, "
            f"need {minimum} (spec.explain.minExplanations)",
            limit=limit,
        )
    one, two = paired.shares()
    distance = paired.distance()
    k = min(3, len(one))
    return Check(
        name="attributions",
        verdict="fail" if distance > limit else "ok",
        message=(
            f"reliance: total variation {distance:.3f} between the attribution shares on "
            f"{explained} rows explained against both (top stable {', '.join(top(one, k))}; "
            f"canary {', '.join(top(two, k))}); allowed {limit:.3f}"
        ),
        candidate=distance,
        limit=limit,
    )


def _data_quality_check(
    name: str, window: Snapshot, slo: Slo, categorical: Collection[str], min_records: int
) -> Check:
    figures = data_quality(window, categorical)
    bound = slo.max_value or 0.0
    found = figures.worst(slo.metric, slo.feature)
    if figures.rows < min_records or found is None or not found[1].total:
        why = f"{figures.rows} captured rows, need {min_records} with values for {slo.metric}"
        return Check(name, "insufficient_data", why, limit=bound)
    feature, rate = found
    value = rate.count / rate.total
    p = float(stats.binomtest(rate.count, rate.total, bound, alternative="greater").pvalue)
    subject = f"{slo.metric} of {feature}" if feature else slo.metric
    verdict: Verdict = "fail" if value > bound and p < ALPHA else "ok"
    message = f"{subject} {rate}; max {bound:.2%}, p={p:.3g}"
    return Check(name, verdict, message, None, value, bound, p)


class RolloutSums:
    """Stable's and the canary's windows summed since the canary revision's
    rollout began, for the checks whose evidence trickles in: labels arrive
    late and few per interval, so labelled quality (and the estimate) is
    judged on everything since the rollout began, not interval by interval.
    A new canary revision starts the sums again; so do counts binned
    against another profile. Per-feature bins are left out: those checks do
    not read them. Status keeps the sums (``recorded``), so a restarted
    operator goes on from them (``restore``) rather than summing anew."""

    def __init__(self) -> None:
        self._revision: str | None = None
        self._sums: dict[str, Snapshot] = {}

    def add(self, revision: str | None, windows: Mapping[str, Snapshot]) -> None:
        if revision != self._revision:
            self._revision, self._sums = revision, {}
        for role in ("stable", "canary"):
            window = windows.get(role)
            if window is None:
                continue
            window = window.model_copy(update={"features": {}})
            have = self._sums.get(role)
            try:
                self._sums[role] = window if have is None else merge([have, window])
            except LayoutMismatch:
                self._sums[role] = window

    def pair(self) -> tuple[Snapshot, Snapshot] | None:
        stable, canary = self._sums.get("stable"), self._sums.get("canary")
        return None if stable is None or canary is None else (stable, canary)

    def recorded(self) -> str | None:
        """The sums as status keeps them (JSON), or None before any."""
        if not self._sums:
            return None
        stable, canary = self._sums.get("stable"), self._sums.get("canary")
        kept = _RecordedSums(revision=self._revision, stable=stable, canary=canary)
        return kept.model_dump_json(exclude_defaults=True)

    def restore(self, recorded: str) -> None:
        """A restarted operator takes the sums status kept, unless it has
        summed since (then its own are the newer)."""
        if self._sums:
            return
        kept = _RecordedSums.model_validate_json(recorded)
        self._revision = kept.revision
        self._sums = {r: s for r, s in (("stable", kept.stable), ("canary", kept.canary)) if s}


class _RecordedSums(BaseModel):
    revision: str | None = None
    stable: Snapshot | None = None
    canary: Snapshot | None = None


class StableBaseline:
    """Stable's window to judge a canary against.

    At weight 100 % the stable sidecars pass every request on to the canary,
    so stable's own window is empty and the canary would have nothing to be
    compared with. It is then judged against stable's last window that had
    enough requests; ``choose`` says when it did so.
    """

    def __init__(self, *, min_requests: int = MIN_REQUESTS) -> None:
        self.min_requests = min_requests
        self._last_full: Snapshot | None = None

    def recorded(self) -> str | None:
        """The window as status keeps it (JSON): what `compare` reads of
        stable, without the per-feature bins, which only drift needs."""
        if self._last_full is None:
            return None
        kept = self._last_full.model_copy(update={"features": {}})
        return kept.model_dump_json(exclude_defaults=True)

    def restore(self, recorded: str) -> None:
        """A restarted operator takes the window status kept, unless it has
        measured one itself since."""
        if self._last_full is None:
            self._last_full = Snapshot.model_validate_json(recorded)

    def choose(self, stable: Snapshot | None, *, weight: float) -> tuple[Snapshot | None, bool]:
        if stable is not None and request_count(stable) >= self.min_requests:
            self._last_full = stable
            return stable, False
        if weight >= 100.0 and self._last_full is not None:
            return self._last_full, True
        return stable, False


def compare(
    stable: Snapshot,
    candidate: Snapshot,
    comparison: Comparison,
    slos: Sequence[Slo] = (),
    *,
    categorical: Collection[str] = (),
    quality: Quality | None = None,
    labelled: tuple[Snapshot, Snapshot] | None = None,
    calibration: Calibration | ClassCalibration | None = None,
    attributions: PairedAttributions | None = None,
    min_explanations: int = 1,
    min_requests: int = MIN_REQUESTS,
) -> ComparisonVerdict:
    """Judge one canary window against the stable window of the same period.

    With ``quality`` (labels) for a classifier, labelled accuracy is compared
    too, and the canary holds ("insufficient labels") until both have enough;
    ``labelled`` (stable's and the canary's windows summed since the rollout
    began) is what labelled quality and the estimate are judged on, so labels
    that trickle in count together rather than interval by interval.
    With ``comparison.max_attribution_distance``, so is what the models rely
    on (``attributions``: rows explained against both), and the canary holds
    ("insufficient explanations") until ``min_explanations`` rows are."""
    n1, n2 = request_count(stable), request_count(candidate)
    if n1 < min_requests or n2 < min_requests:
        return ComparisonVerdict(
            verdict="insufficient_data",
            reason=(
                f"InsufficientData: stable {n1} and canary {n2} requests in the window, "
                f"need {min_requests} each"
            ),
            stable_requests=n1,
            candidate_requests=n2,
        )
    checks = (
        _error_check(
            error_count(stable), n1, error_count(candidate), n2, comparison.max_error_rate_increase
        ),
        _latency_check(stable.latency, candidate.latency, comparison.max_latency_increase.seconds),
        _score_check(stable, candidate, comparison.max_score_drift, min_requests),
        *judge_slos(
            candidate,
            slos,
            categorical=categorical,
            min_records=min_requests,
            quality=quality,
            labelled=labelled[1] if labelled else None,
            calibration=calibration,
        ),
    )
    if quality is not None and quality.classes is not None:
        margin = comparison.max_accuracy_decrease
        stable_labels, canary_labels = labelled or (stable, candidate)
        checks = (*checks, _accuracy_check(stable_labels, canary_labels, quality, margin))
    if comparison.max_attribution_distance is not None:
        limit = comparison.max_attribution_distance
        checks = (*checks, _attribution_check(attributions, limit, min_explanations))
    failed = [c for c in checks if c.verdict == "fail"]
    if failed:
        reason = "CanaryWorse: " + "; ".join(f"{c.name}: {c.message}" for c in failed)
    elif waiting := _waiting_for(checks):
        return ComparisonVerdict(
            verdict="insufficient_data",
            reason=waiting,
            stable_requests=n1,
            candidate_requests=n2,
            checks=checks,
        )
    else:
        # Errors and latency always; what the models rely on when it was asked.
        shown = [c for c in checks if c.name in ("errorRate", "latency", "attributions")]
        reason = "CanaryOK: " + "; ".join(c.message for c in shown)
    return ComparisonVerdict(
        verdict="fail" if failed else "ok",
        reason=reason,
        stable_requests=n1,
        candidate_requests=n2,
        checks=checks,
    )


# Checks that hold the canary while what they judge comes in, by the reason they hold it for.
_WAITS = {
    "insufficient labels": "InsufficientLabels",
    "insufficient data": "InsufficientData",
    "insufficient explanations": "InsufficientExplanations",
}


def _waiting_for(checks: Sequence[Check]) -> str | None:
    """Why a canary with nothing failed still holds (the first waiting check
    names the reason, every waiting one is listed); None when none waits."""
    waiting = [c for c in checks if c.message.startswith(tuple(_WAITS))]
    if not waiting:
        return None
    reason = next(r for start, r in _WAITS.items() if waiting[0].message.startswith(start))
    return f"{reason}: " + "; ".join(f"{c.name}: {c.message}" for c in waiting)


def judge_alone(
    window: Snapshot,
    slos: Sequence[Slo],
    *,
    categorical: Collection[str] = (),
    quality: Quality | None = None,
    min_requests: int = MIN_REQUESTS,
) -> ComparisonVerdict:
    """guard: a new revision's pods against the SLOs, with nothing to compare to."""
    n = request_count(window)
    if n < min_requests:
        reason = f"InsufficientData: {n} requests in the window, need {min_requests}"
        return ComparisonVerdict("insufficient_data", reason, 0, n)
    checks = judge_slos(window, slos, categorical=categorical, quality=quality)
    failed = [c for c in checks if c.verdict == "fail"]
    if failed:
        reason = "SLOBreach: " + "; ".join(f"{c.name}: {c.message}" for c in failed)
    else:
        reason = "SLOsMet: " + ("; ".join(c.message for c in checks) or "no SLOs to judge")
    return ComparisonVerdict("fail" if failed else "ok", reason, 0, n, checks)


# -- shadow --------------------------------------------------------------------


def judge_shadow(
    counts: ShadowCounts,
    comparison: Comparison,
    *,
    task: Literal["classification", "regression"] = "classification",
    min_requests: int = MIN_REQUESTS,
) -> ComparisonVerdict:
    """Is the shadow fit to promote? ``ok`` only when the evidence says so:
    for disagreement, the 95 % upper confidence bound must be within the
    margin; ``fail`` when the lower bound is beyond it; in between, wait."""
    n = counts.compared
    if n < min_requests:
        return ComparisonVerdict(
            "insufficient_data",
            f"InsufficientData: {n} compared requests, need {min_requests}",
            n,
            n,
        )
    checks: list[Check] = []
    if task == "classification":
        disagreed = n - counts.agreed
        ci = stats.binomtest(disagreed, n).proportion_ci(confidence_level=1 - 2 * ALPHA)
        limit = comparison.max_disagreement
        verdict: Verdict = (
            "ok" if ci.high <= limit else "fail" if ci.low > limit else "insufficient_data"
        )
        message = (
            f"disagreement {disagreed / n:.2%} ({disagreed}/{n}), 90% CI "
            f"[{ci.low:.2%}, {ci.high:.2%}]; allowed {limit:.2%}"
        )
        checks.append(Check("disagreement", verdict, message, None, disagreed / n, limit))
    elif comparison.max_score_difference is not None:
        mean = counts.abs_difference_sum / n
        limit = comparison.max_score_difference
        verdict = "fail" if mean > limit else "ok"
        message = f"mean absolute difference {mean:.4g}; allowed {limit:.4g}"
        checks.append(Check("scoreDifference", verdict, message, None, mean, limit))
    mirrored = max(counts.mirrored, n)
    margin = comparison.max_error_rate_increase
    checks.append(_error_check(counts.stable_errors, n, counts.shadow_errors, mirrored, margin))
    latency_margin = comparison.max_latency_increase.seconds
    checks.append(_latency_check(counts.stable_latency, counts.shadow_latency, latency_margin))
    failed = [c for c in checks if c.verdict == "fail"]
    # Only an undecided disagreement waits; a latency nobody measured does not.
    waiting = [c for c in checks[:1] if c.verdict == "insufficient_data"]
    if failed:
        verdict, reason = "fail", "ShadowWorse: " + "; ".join(c.message for c in failed)
    elif waiting:
        reason = "InsufficientData: " + "; ".join(c.message for c in waiting)
        verdict = "insufficient_data"
    else:
        verdict, reason = "ok", "ShadowFit: " + "; ".join(c.message for c in checks)
    return ComparisonVerdict(verdict, reason, n, mirrored, tuple(checks))
