"""Model quality from mergeable counts: no row is needed, only what the
sidecars count for labelled predictions (``contract.snapshot.QualityCounts``).

Classification, from the confusion matrix (actual -> predicted -> count):
accuracy, per-class precision, recall and F1, macro F1. These are exact.

Binary classification, from the positive class's score in B equal-width
bins over [0, 1], counted per actual class:

- ROC AUC is the probability that a positive outscores a negative, ties
  counting one half. On binned scores it is exact for the binned scores; a
  pair in the same bin counts one half whatever its true order, so against
  the raw scores it is off by at most ``auc_bound`` = ½ Σ_b pos_b·neg_b /
  (P·N), the share of positive-negative pairs that share a bin (about 1/(2B)
  when scores spread evenly; reported with the figure).
- PR AUC is average precision (scikit-learn's definition: Σ (R_k - R_{k-1})
  P_k over thresholds), exact for the binned scores.
- Calibration: per bin the observed positive rate against the bin's
  midpoint, and the expected calibration error Σ_b n_b/n |observed_b -
  midpoint_b|. The midpoint stands for the bin's mean score, so ECE is within
  1/(2B) of the one from the raw scores in the same bins.
- Log loss takes each score at its bin's midpoint (an approximation: exact
  for the binned scores, off most where a bin holds scores near 0 or 1).

Multiclass, one-vs-rest from each class's score in the same bins, counted
for the labels of that class and for the others (``OneVsRestBins``): each
class's ROC AUC, PR AUC and ECE as above, and their macro averages
(scikit-learn's ``average="macro"``, over the classes the figure is defined
for); the AUC bound is the mean of the classes' bounds. Log loss takes each
label's own class score at its bin's midpoint.

Without labels, accuracy is estimated the way NannyML's CBPE does it: each
prediction counts as right with the probability that a prediction of its
score was right on the labelled reference (``Calibration``, per 0.05 score
bucket: histogram-binning calibration). Under covariate shift the chance of
a label given the score stays, so the estimate follows the accuracy; under
concept shift it cannot. A bucket the reference never reached falls back to
the score itself (max(p, 1 - p) at the bucket's middle).

Multiclass, as NannyML's CBPE: each class's score calibrated one-vs-rest on
the reference (``ClassCalibration``: per bucket of class k's score, the share
labelled k), and each prediction right with the calibrated probability of
the class it predicted, from the live histogram of each prediction's own
score by predicted class. NannyML also renormalises a row's calibrated
probabilities to sum to one; with no row kept that step is left out (a
calibrated model's probabilities are unchanged by it either way).

Regression, from the sums of the error, its absolute value and square and
of the actual value and its square: MAE, RMSE, bias (mean predicted -
actual) and R² = 1 - SSE/SST, all exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from driftline_sidecar.contract.profile import Calibration, ClassCalibration
from driftline_sidecar.contract.snapshot import (
    Histogram,
    OneVsRestBins,
    QualityCounts,
    RegressionSums,
)

OTHER = "__other__"


@dataclass(frozen=True)
class ClassFigures:
    name: str
    support: int  # labels of this class
    precision: float | None  # None: the class was never predicted
    recall: float | None  # None: no label of this class
    f1: float | None


@dataclass(frozen=True)
class Classification:
    labels: int
    correct: int
    classes: tuple[ClassFigures, ...]

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labels if self.labels else None

    @property
    def macro_f1(self) -> float | None:
        """Mean F1 over the classes with labels or predictions (scikit-learn's
        macro F1 over those classes, an undefined F1 counting 0)."""
        seen = [c for c in self.classes if c.support or c.precision is not None]
        return sum(c.f1 or 0.0 for c in seen) / len(seen) if seen else None


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    observed: float | None  # share of positives among them


@dataclass(frozen=True)
class Scores:
    """Binary classification from binned scores."""

    positives: int
    negatives: int
    roc_auc: float | None
    auc_bound: float | None  # the most binning can move roc_auc from the raw scores' value
    pr_auc: float | None
    ece: float | None
    log_loss: float | None
    reliability: tuple[ReliabilityBin, ...]


@dataclass(frozen=True)
class OneVsRest:
    """Multiclass classification from each class's binned score, one-vs-rest."""

    classes: dict[str, Scores]  # each class's figures as the positive class
    roc_auc: float | None  # macro averages over the classes each is defined for
    auc_bound: float | None
    pr_auc: float | None
    ece: float | None
    log_loss: float | None


@dataclass(frozen=True)
class Regression:
    labels: int
    mae: float | None
    rmse: float | None
    bias: float | None
    r2: float | None


def classification(
    confusion: Mapping[str, Mapping[str, int]], classes: Sequence[str]
) -> Classification:
    """Exact figures from the confusion matrix (actual -> predicted -> count)."""
    labels = sum(n for row in confusion.values() for n in row.values())
    correct = sum(confusion.get(c, {}).get(c, 0) for c in classes)
    figures = []
    for c in classes:
        tp = confusion.get(c, {}).get(c, 0)
        support = sum(confusion.get(c, {}).values())
        predicted = sum(row.get(c, 0) for row in confusion.values())
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        if precision is None or recall is None:
            f1 = None if precision is None and recall is None else 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        figures.append(ClassFigures(c, support, precision, recall, f1))
    return Classification(labels, correct, tuple(figures))


def binned_scores(positive: Sequence[int], negative: Sequence[int]) -> Scores:
    """Figures of a binary classifier from its positive-class score binned in
    equal-width bins over [0, 1], for the positive and the negative labels."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if pos.shape != neg.shape:
        raise ValueError(f"score bins differ: {pos.size} for positives, {neg.size} for negatives")
    bins = pos.size
    edges = np.linspace(0.0, 1.0, bins + 1)
    middle = (edges[:-1] + edges[1:]) / 2
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    n = n_pos + n_neg
    roc_auc = auc_bound = pr_auc = None
    if n_pos and n_neg:
        below = np.cumsum(neg) - neg  # negatives in lower bins
        roc_auc = float((pos * (below + neg / 2)).sum() / (n_pos * n_neg))
        auc_bound = float((pos * neg).sum() / 2 / (n_pos * n_neg))
    if n_pos:
        tp = np.cumsum(pos[::-1])  # predicted positive at thresholds from the top bin down
        fp = np.cumsum(neg[::-1])
        used = (pos + neg)[::-1] > 0  # a threshold only where some score lies
        recall = tp / n_pos
        precision = np.divide(tp, tp + fp, out=np.zeros(bins), where=(tp + fp) > 0)
        step = np.diff(np.concatenate(([0.0], recall)))
        pr_auc = float((step * precision)[used].sum())
    reliability = tuple(
        ReliabilityBin(
            float(edges[b]),
            float(edges[b + 1]),
            int(pos[b] + neg[b]),
            float(pos[b] / (pos[b] + neg[b])) if pos[b] + neg[b] else None,
        )
        for b in range(bins)
    )
    ece = log_loss = None
    if n:
        counts = pos + neg
        observed = np.divide(pos, counts, out=np.zeros(bins), where=counts > 0)
        ece = float((counts / n * np.abs(observed - middle)).sum())
        log_loss = float(-(pos * np.log(middle) + neg * np.log1p(-middle)).sum() / n)
    return Scores(int(n_pos), int(n_neg), roc_auc, auc_bound, pr_auc, ece, log_loss, reliability)


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def one_vs_rest(class_scores: Mapping[str, OneVsRestBins]) -> OneVsRest:
    """Figures of a multiclass classifier from each class's binned score."""
    figures = {c: binned_scores(b.positive, b.negative) for c, b in class_scores.items()}
    own = labels = 0.0  # Σ -log(score of the label's own class), and the labels
    for bins in class_scores.values():
        positive = np.asarray(bins.positive, dtype=np.float64)
        edges = np.linspace(0.0, 1.0, positive.size + 1)
        own -= float((positive * np.log((edges[:-1] + edges[1:]) / 2)).sum())
        labels += float(positive.sum())
    return OneVsRest(
        classes=figures,
        roc_auc=_mean([f.roc_auc for f in figures.values()]),
        auc_bound=_mean([f.auc_bound for f in figures.values()]),
        pr_auc=_mean([f.pr_auc for f in figures.values()]),
        ece=_mean([f.ece for f in figures.values()]),
        log_loss=own / labels if labels else None,
    )


def regression(sums: RegressionSums) -> Regression:
    n = sums.count
    if not n:
        return Regression(0, None, None, None, None)
    total = sums.actual_squared - sums.actual * sums.actual / n  # Σ (y - ȳ)²
    r2 = 1.0 - sums.squared_error / total if total > 0 else None
    return Regression(
        labels=n,
        mae=sums.abs_error / n,
        rmse=math.sqrt(max(sums.squared_error, 0.0) / n),
        bias=sums.error / n,
        r2=r2,
    )


def total(counts: Mapping[str, QualityCounts]) -> QualityCounts:
    """All segments' counts added up (what the figures without a segment use)."""
    result = QualityCounts()
    for part in counts.values():
        for actual, row in part.confusion.items():
            into = result.confusion.setdefault(actual, {})
            for predicted, n in row.items():
                into[predicted] = into.get(predicted, 0) + n
        for actual, bins in part.score_bins.items():
            have = result.score_bins.get(actual)
            if have is not None and len(have) != len(bins):
                raise ValueError(
                    f"score bins differ between segments ({len(have)} and {len(bins)})"
                )
            result.score_bins[actual] = (
                list(bins) if have is None else [a + b for a, b in zip(have, bins, strict=True)]
            )
        for name, ovr in part.class_scores.items():
            had = result.class_scores.get(name)
            result.class_scores[name] = (
                ovr.model_copy(deep=True)
                if had is None
                else OneVsRestBins(
                    positive=[a + b for a, b in zip(had.positive, ovr.positive, strict=True)],
                    negative=[a + b for a, b in zip(had.negative, ovr.negative, strict=True)],
                )
            )
        r, p = result.regression, part.regression
        r.count += p.count
        r.actual += p.actual
        r.actual_squared += p.actual_squared
        r.error += p.error
        r.abs_error += p.abs_error
        r.squared_error += p.squared_error
    return result


@dataclass(frozen=True)
class Estimate:
    predictions: int  # scored predictions it is over
    accuracy: float | None
    uncalibrated: int  # of them, in buckets the reference never reached


def _same_buckets(score: Histogram, bounds: Sequence[float]) -> None:
    if [float(b) for b in score.bounds] != [float(b) for b in bounds]:
        raise ValueError(
            f"the score buckets ({len(score.bounds)}) are not the calibration's "
            f"({len(bounds)}): rebuild the profile or the sidecar's buckets differ"
        )


def estimated_class_accuracy(
    calibration: ClassCalibration, class_score: Mapping[str, Histogram]
) -> Estimate:
    """Confidence-based estimate of a multiclass model's accuracy from each
    predicted class's own-score buckets."""
    upper = np.asarray([*calibration.bounds, 1.0])
    middle = (np.concatenate(([0.0], upper[:-1])) + upper) / 2
    right = n = 0.0
    uncalibrated = 0
    for name, score in class_score.items():
        _same_buckets(score, calibration.bounds)
        counts = np.asarray(score.counts, dtype=np.float64)
        rates = calibration.positive_rate.get(name, [None] * counts.size)
        known = np.asarray([r is not None for r in rates])
        rate = np.where(known, [r if r is not None else 0.0 for r in rates], middle)
        right += float((counts * rate).sum())
        n += float(counts.sum())
        uncalibrated += int(counts[~known].sum())
    return Estimate(int(n), right / n if n else None, uncalibrated)


def estimated_accuracy(calibration: Calibration, score: Histogram) -> Estimate:
    """Confidence-based estimate of accuracy from the live score buckets."""
    _same_buckets(score, calibration.bounds)
    counts = np.asarray(score.counts, dtype=np.float64)
    upper = np.asarray([*calibration.bounds, 1.0])
    lower = np.concatenate(([0.0], upper[:-1]))
    middle = (lower + upper) / 2
    fallback = np.where(middle >= calibration.threshold, middle, 1 - middle)
    known = np.asarray([a is not None for a in calibration.accuracy])
    rate = np.where(known, [a if a is not None else 0.0 for a in calibration.accuracy], fallback)
    n = float(counts.sum())
    return Estimate(
        predictions=int(n),
        accuracy=float((counts * rate).sum() / n) if n else None,
        uncalibrated=int(counts[~known].sum()),
    )
