"""Quality figures from counts agree with scikit-learn on the same rows.

The rows go through the sidecar's own path (``Feedback.remember`` and
``join``, read back from its Prometheus registry), so what is checked is the
figure a user sees for those rows."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sklearn import metrics
from sklearn.calibration import calibration_curve

from driftline_operator.cli import profiles
from driftline_operator.stats.quality import (
    binned_scores,
    classification,
    estimated_accuracy,
    regression,
    total,
)
from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.contract.profile import SCORE_BOUNDS
from driftline_sidecar.contract.reader import snapshot_from_samples
from driftline_sidecar.contract.snapshot import (
    Histogram,
    ProcessInfo,
    QualityCounts,
    RegressionSums,
    Snapshot,
    merge,
)
from driftline_sidecar.counts import build_layout
from driftline_sidecar.feedback import Feedback

BINS = 20


def counted(
    predicted: list[object], actual: list[object], scores: list[float | None], **feedback: object
) -> QualityCounts:
    """The rows' quality counts as a sidecar keeps them."""
    task = feedback.pop("task", "classification")
    config = SidecarConfig.model_validate(
        {
            "model": {"name": "m", "prediction": {"task": task}},
            "feedback": {"enabled": True, "score_bins": BINS, **feedback},
        }
    )
    registry = CollectorRegistry()
    fb = Feedback(config, build_layout(config), registry=registry)
    ids = [f"r{i}" for i in range(len(predicted))]
    fb.remember(ids, predicted, scores, None, now=1000)
    result = fb.join(ids, [fb._label(a, "label") for a in actual], now=1001)
    assert result.joined == len(ids)
    samples = (s for family in registry.collect() for s in family.samples)
    snapshot = snapshot_from_samples(
        samples, process=ProcessInfo(id="p", pid=1, start_time=0), taken_at=1
    )
    return snapshot.quality[""]


def binary_rows(n: int = 3000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated binary classifier: y ~ Bernoulli(p)."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(0, 1.5, n)))
    y = (rng.random(n) < p).astype(int)
    return p, y


def test_classification_figures_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    actual = rng.choice(classes, 500, p=[0.5, 0.3, 0.2]).tolist()
    predicted = [a if rng.random() < 0.7 else rng.choice([*classes, "zz"]) for a in actual]
    counts = counted(predicted, actual, [None] * 500, classes=classes)
    figures = classification(counts.confusion, classes)
    assert figures.labels == 500
    assert figures.accuracy == pytest.approx(metrics.accuracy_score(actual, predicted))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        actual, predicted, labels=classes, zero_division=0
    )
    for i, c in enumerate(figures.classes):
        assert (c.name, c.support) == (classes[i], support[i])
        assert c.precision == pytest.approx(precision[i])
        assert c.recall == pytest.approx(recall[i])
        assert c.f1 == pytest.approx(f1[i])
    assert figures.macro_f1 == pytest.approx(
        metrics.f1_score(actual, predicted, labels=classes, average="macro", zero_division=0)
    )
    # "zz" is no class: counted as predicted "__other__", wrong for every label.
    assert sum(row.get("__other__", 0) for row in counts.confusion.values()) == predicted.count(
        "zz"
    )


def test_binned_scores_agree_with_scikit_learn_within_the_binning_bound() -> None:
    p, y = binary_rows()
    labels = ["pos" if v else "neg" for v in y]
    predicted = ["pos" if s >= 0.5 else "neg" for s in p]
    counts = counted(predicted, labels, p.tolist(), classes=["neg", "pos"])
    scores = binned_scores(counts.score_bins["pos"], counts.score_bins["neg"])
    binned = np.minimum((p * BINS).astype(int), BINS - 1)  # the score as the sidecar bins it

    # Exact for the binned scores ...
    assert scores.roc_auc == pytest.approx(metrics.roc_auc_score(y, binned))
    assert scores.pr_auc == pytest.approx(metrics.average_precision_score(y, binned))
    middle = (binned + 0.5) / BINS
    assert scores.log_loss == pytest.approx(metrics.log_loss(y, middle))
    # ... and within the stated bound of the raw scores' figures.
    exact = metrics.roc_auc_score(y, p)
    assert scores.auc_bound is not None and scores.auc_bound < 1 / BINS
    assert abs(scores.roc_auc - exact) <= scores.auc_bound  # type: ignore[operator]
    assert abs(scores.pr_auc - metrics.average_precision_score(y, p)) < 0.02  # type: ignore[operator]
    assert abs(scores.log_loss - metrics.log_loss(y, p)) < 0.02  # type: ignore[operator]

    observed, mean_predicted = calibration_curve(y, p, n_bins=BINS, strategy="uniform")
    ours = [b for b in scores.reliability if b.count]
    assert [b.observed for b in ours] == pytest.approx(list(observed))
    counts_per_bin = np.array([b.count for b in ours])
    raw_ece = float((counts_per_bin / len(y) * np.abs(observed - mean_predicted)).sum())
    assert abs(scores.ece - raw_ece) <= 1 / (2 * BINS)  # type: ignore[operator]


def test_regression_figures_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    actual = rng.normal(10, 3, 400)
    predicted = actual + rng.normal(0.5, 1.0, 400)
    counts = counted(predicted.tolist(), actual.tolist(), [None] * 400, task="regression")
    figures = regression(counts.regression)
    assert figures.labels == 400
    # The sidecar keeps predictions as float32: figures agree to that precision.
    kept = predicted.astype(np.float32).astype(np.float64)
    assert figures.mae == pytest.approx(metrics.mean_absolute_error(actual, kept))
    assert figures.rmse == pytest.approx(metrics.root_mean_squared_error(actual, kept))
    assert figures.r2 == pytest.approx(metrics.r2_score(actual, kept))
    assert figures.bias == pytest.approx(float(np.mean(kept - actual)))


def test_no_labels_no_figures() -> None:
    assert classification({}, ["a", "b"]).accuracy is None
    empty = binned_scores([0] * BINS, [0] * BINS)
    assert empty.roc_auc is None and empty.ece is None
    assert binned_scores([1] + [0] * (BINS - 1), [0] * BINS).roc_auc is None  # one class only
    assert regression(RegressionSums()).mae is None


def _snapshot(counts: dict[str, QualityCounts], i: int) -> Snapshot:
    return Snapshot(
        process=ProcessInfo(id=f"p{i}", pid=i, start_time=0),
        taken_at=float(i),
        model="m",
        version="v",
        role="stable",
        quality=counts,
    )


classes = st.sampled_from(["neg", "pos"])
quality_counts = st.builds(
    QualityCounts,
    confusion=st.dictionaries(classes, st.dictionaries(classes, st.integers(0, 50))),
    score_bins=st.dictionaries(classes, st.lists(st.integers(0, 30), min_size=4, max_size=4)),
    regression=st.builds(
        RegressionSums,
        count=st.integers(0, 100),
        actual=st.floats(-1e3, 1e3),
        actual_squared=st.floats(0, 1e6),
        error=st.floats(-1e3, 1e3),
        abs_error=st.floats(0, 1e3),
        squared_error=st.floats(0, 1e6),
    ),
)


def figures_of(window: Snapshot) -> tuple[object, ...]:
    counts = total(window.quality)
    bins = counts.score_bins
    pos, neg = bins.get("pos", [0] * 4), bins.get("neg", [0] * 4)
    r = regression(counts.regression)
    rounded = tuple(None if v is None else round(v, 6) for v in (r.mae, r.rmse, r.bias, r.r2))
    return (
        classification(counts.confusion, ["neg", "pos"]),
        binned_scores(pos, neg),
        rounded,
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["", "DE", "FR"]), quality_counts), min_size=2, max_size=4
    )
)
def test_merge_order_never_changes_a_figure(parts: list[dict[str, QualityCounts]]) -> None:
    windows = [_snapshot(p, i) for i, p in enumerate(parts)]
    expected = figures_of(merge(windows))
    for order in itertools.permutations(windows):
        got = figures_of(merge(list(order)))
        assert got[0] == expected[0]
        a, b = got[1], expected[1]
        for field in ("roc_auc", "auc_bound", "pr_auc", "ece", "log_loss"):
            assert getattr(a, field) == pytest.approx(getattr(b, field))
        assert got[2] == pytest.approx(expected[2])


def shifted_rows(n: int, *, mean: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated classifier's scores and labels: x ~ N(mean, 1), P(y | x) fixed."""
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, 1.0, n)
    p = 1 / (1 + np.exp(-(2.0 * x - 0.5)))
    return p, (rng.random(n) < p).astype(int)


def test_the_label_free_estimate_follows_accuracy_under_covariate_shift() -> None:
    reference_scores, reference_labels = shifted_rows(50_000, mean=0.0, seed=1)
    calibration = profiles.calibration(pd.Series(reference_labels), pd.Series(reference_scores))
    assert calibration is not None and calibration.positive_class == "1"
    for mean in (0.0, 0.7, -0.8):  # no shift, and the inputs moved either way
        scores, labels = shifted_rows(20_000, mean=mean, seed=7)
        realized = metrics.accuracy_score(labels, scores >= 0.5)
        bucket = np.searchsorted(np.asarray(SCORE_BOUNDS), scores, side="left")
        histogram = Histogram(
            bounds=list(SCORE_BOUNDS),
            counts=np.bincount(bucket, minlength=len(SCORE_BOUNDS) + 1).tolist(),
        )
        found = estimated_accuracy(calibration, histogram)
        assert found.predictions == 20_000 and found.uncalibrated == 0
        assert abs(found.accuracy - realized) < 0.015, (mean, found.accuracy, realized)  # type: ignore[operator]


def test_no_estimate_from_other_buckets() -> None:
    _, labels = shifted_rows(100, mean=0.0, seed=1)
    calibration = profiles.calibration(pd.Series(labels), pd.Series(np.linspace(0, 1, 100)))
    assert calibration is not None
    with pytest.raises(ValueError, match="score buckets"):
        estimated_accuracy(calibration, Histogram())  # latency buckets
    assert profiles.calibration(pd.Series([1, 2, 3]), pd.Series([0.1, 0.2, 0.3])) is None
    assert profiles.calibration(pd.Series([0, 1]), pd.Series([0.1, 7.0])) is None


def test_a_worse_than_chance_model_is_estimated_worse_than_chance() -> None:
    """0/1 labels: 1 is the positive class even when the model scores it lower
    (a heuristic on mean scores would flip such a model into a good one)."""
    scores, labels = shifted_rows(20_000, mean=0.0, seed=3)
    flipped = 1 - scores
    found = profiles.calibration(pd.Series(labels), pd.Series(flipped))
    assert found is not None and found.positive_class == "1"
    bucket = np.searchsorted(np.asarray(SCORE_BOUNDS), flipped, side="left")
    histogram = Histogram(
        bounds=list(SCORE_BOUNDS), counts=np.bincount(bucket, minlength=21).tolist()
    )
    realized = metrics.accuracy_score(labels, flipped >= 0.5)
    assert realized < 0.5
    assert estimated_accuracy(found, histogram).accuracy == pytest.approx(realized, abs=0.01)
