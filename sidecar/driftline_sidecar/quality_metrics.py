"""The feedback's Prometheus metrics: label outcomes, predictions waiting for
a label, and the quality counts of the labelled ones (names in
``contract.metric_names``, read back by ``contract.reader``).

Labels are bounded: the configured classes plus ``__other__``, the segment
feature's profiled categories plus ``__other__``, score bin indexes. A
(segment, actual class) row of score bins is created whole at its first
count, so every reader sees the full bin layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftline_sidecar.contract import metric_names as names
from driftline_sidecar.contract.profile import SCORE_BOUNDS
from driftline_sidecar.metrics import OTHER_CLASS


class QualityMetrics:
    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        base: tuple[str, str, str],
        classes: Sequence[str],
        segments: Sequence[str],
        score_bins: int,
    ) -> None:
        labels = Counter(
            names.LABELS,
            "Labels posted to /v1/feedback, by outcome.",
            [*names.BASE_LABELS, names.OUTCOME],
            registry=registry,
        )
        self.labels: dict[str, Any] = {o: labels.labels(*base, o) for o in names.LabelOutcome}
        self.pending = Gauge(
            names.LABELS_PENDING,
            "Predictions waiting for their label.",
            names.BASE_LABELS,
            registry=registry,
        ).labels(*base)
        self._confusion = Counter(
            names.QUALITY_CONFUSION,
            "Labelled predictions by actual and predicted class.",
            [*names.BASE_LABELS, names.SEGMENT, names.ACTUAL, names.PREDICTED],
            registry=registry,
        )
        self._score_bin = Counter(
            names.QUALITY_SCORE_BIN,
            "Binary classification: the positive class's score of labelled predictions, "
            "in equal-width bins over [0, 1], by actual class.",
            [*names.BASE_LABELS, names.SEGMENT, names.ACTUAL, names.BIN],
            registry=registry,
        )
        self._class_score_bin = Counter(
            names.QUALITY_CLASS_SCORE_BIN,
            "Multiclass: each class's score of labelled predictions, in equal-width bins "
            "over [0, 1], labelled as that class or as another (one-vs-rest).",
            [*names.BASE_LABELS, names.SEGMENT, names.CLASS, names.LABELLED_AS, names.BIN],
            registry=registry,
        )
        self._predicted_score = Histogram(
            names.PREDICTED_CLASS_SCORE,
            "Multiclass: each prediction's score for the class it predicted, by that class.",
            [*names.BASE_LABELS, names.CLASS],
            buckets=SCORE_BOUNDS,
            registry=registry,
        )
        self._regression = Gauge(
            names.QUALITY_REGRESSION,
            "Regression: sums over labelled predictions (error = predicted - actual).",
            [*names.BASE_LABELS, names.SEGMENT, names.QUANTITY],
            registry=registry,
        )
        self._base = base
        self._classes = [*classes, OTHER_CLASS]
        self._segments = list(segments)
        self._bins = score_bins
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*self._base, *values)
        return child

    def add_confusion(self, segment: np.ndarray, actual: np.ndarray, predicted: np.ndarray) -> None:
        k = len(self._classes)
        codes, counts = np.unique((segment * k + actual) * k + predicted, return_counts=True)
        for code, n in zip(codes.tolist(), counts.tolist(), strict=True):
            rest, p = divmod(code, k)
            s, a = divmod(rest, k)
            self._child(self._confusion, self._segments[s], self._classes[a], self._classes[p]).inc(
                n
            )

    def add_score_bins(
        self, segment: np.ndarray, actual: np.ndarray, score_bin: np.ndarray
    ) -> None:
        k, b = len(self._classes), self._bins
        codes, counts = np.unique((segment * k + actual) * b + score_bin, return_counts=True)
        for code, n in zip(codes.tolist(), counts.tolist(), strict=True):
            rest, bin_ = divmod(code, b)
            s, a = divmod(rest, k)
            row = (self._segments[s], self._classes[a])
            if (self._score_bin, *row, "0") not in self._children:
                for i in range(b):  # the whole row at once: readers see every bin
                    self._child(self._score_bin, *row, str(i))
            self._child(self._score_bin, *row, str(bin_)).inc(n)

    def add_class_score_bins(
        self, segment: np.ndarray, actual: np.ndarray, class_bins: np.ndarray
    ) -> None:
        """``class_bins[row, k]``: the bin of class k's score in that row."""
        b = self._bins
        k = class_bins.shape[1]
        is_class = actual[:, None] == np.arange(k)[None, :]
        codes = ((segment[:, None] * k + np.arange(k)[None, :]) * 2 + is_class) * b + class_bins
        values, counts = np.unique(codes, return_counts=True)
        for code, n in zip(values.tolist(), counts.tolist(), strict=True):
            rest, bin_ = divmod(code, b)
            rest, positive = divmod(rest, 2)
            s, c = divmod(rest, k)
            row = (self._segments[s], self._classes[c])
            if (self._class_score_bin, *row, names.OneVsRest.CLASS, "0") not in self._children:
                for side in names.OneVsRest:  # both sides of the row at once: every bin shows
                    for i in range(b):
                        self._child(self._class_score_bin, *row, side, str(i))
            side = names.OneVsRest.CLASS if positive else names.OneVsRest.REST
            self._child(self._class_score_bin, *row, side, str(bin_)).inc(n)

    def observe_predicted_scores(self, predicted: Sequence[int], scores: Sequence[float]) -> None:
        for k, score in zip(predicted, scores, strict=True):
            self._child(self._predicted_score, self._classes[k]).observe(score)

    def add_regression(self, segment: np.ndarray, sums: Mapping[str, np.ndarray]) -> None:
        for s in np.unique(segment).tolist():
            rows = segment == s
            for quantity, values in sums.items():
                self._child(self._regression, self._segments[s], quantity).inc(
                    float(values[rows].sum())
                )
