"""Ground truth that arrives later: labels joined to the predictions they are about.

The capture worker hands every captured row to ``Feedback.remember`` (its
join id, predicted class or value, score and segment), which keeps it in the
bounded ``PendingStore``. ``POST /v1/feedback`` hands a batch of
``{id, label}`` to ``Feedback.parse`` (every label checked before any is
used: a bad batch stores nothing) and ``Feedback.join``, which looks the ids
up, counts each label's outcome (joined, unknown, expired, duplicate) and
adds the joined ones to the quality counts: a confusion matrix and, for a
binary classifier, the positive class's score binned per actual class (for a
multiclass one, each class's score binned one-vs-rest); for a regression the sums MAE, RMSE, bias and R² come from. Per segment when
``feedback.segment`` names a categorical feature. No row is kept.

Several replicas: each sidecar knows only the ids it served, so a label batch
goes to every sidecar of the model (``driftline feedback`` does so) and each
joins its own. Such a batch is posted with ``fanout``: a sidecar then counts
no label unknown (its answer still names the ids), since the id is most
likely another replica's; the sender posts the ids no replica joined to one
sidecar again, plainly, and that one counts them. So the merged unknown count
is the ids no replica served, not that times the replicas.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from driftline_sidecar.contract import metric_names as names
from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.counts import Layout
from driftline_sidecar.metrics import OTHER_CLASS
from driftline_sidecar.pending import NO_BIN, PENDING, PendingStore, join_keys, record_dtype
from driftline_sidecar.quality_metrics import QualityMetrics

# What X-Request-ID values look like (Envoy, nginx, load balancers): visible
# ASCII without spaces, of a sensible length.
_ID = re.compile(r"[\x21-\x7e]{1,200}")


class FeedbackError(ValueError):
    """A label batch that cannot be used; ``field`` names the culprit."""

    def __init__(self, status: int, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.status = status
        self.field = field
        self.problem = problem


@dataclass
class JoinResult:
    joined: int = 0
    unknown: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "joined": self.joined,
            "not_joined": {
                "unknown": self.unknown,
                "expired": self.expired,
                "duplicate": self.duplicate,
            },
        }


def join_id(request_id: str, row: int) -> str:
    """The id a label names for row ``row`` of a request."""
    return request_id if row == 0 else f"{request_id}:{row}"


def spill_path(config: SidecarConfig) -> str:
    """``feedback.path``, else a file next to the prediction log named for the
    model, version and role (another version's predictions are not this one's)."""
    if config.feedback.path is not None:
        return config.feedback.path
    model = config.model
    name = f"pending-{model.name}-{model.version}-{model.role}"
    classes = config.feedback.classes or []
    if model.prediction.task != "regression" and len(classes) > 2:
        name += f"-{len(classes)}classes"  # its records are wider: another file
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return os.path.join(os.path.dirname(config.prediction_log.path) or ".", name + ".bin")


class Feedback:
    def __init__(
        self,
        config: SidecarConfig,
        layout: Layout,
        *,
        registry: CollectorRegistry,
        path: str | None = None,
    ) -> None:
        feedback = config.feedback
        self._config = feedback
        self._regression = config.model.prediction.task == "regression"
        self.classes = list(feedback.classes or [])
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        binary = not self._regression and len(self.classes) == 2
        # Multiclass: every class's score is kept (a byte each) for one-vs-rest figures.
        self.multiclass = not self._regression and len(self.classes) > 2
        self._positive = (
            self._class_index[feedback.positive_class or self.classes[1]] if binary else None
        )
        self.segment_feature = feedback.segment
        self.segments = [""]
        self._segment_index: dict[str, int] = {}
        if feedback.segment is not None:
            binning = next((b for b in layout.binnings if b.name == feedback.segment), None)
            if binning is None or binning.kind != "categorical":
                raise ValueError(
                    f"feedback.segment {feedback.segment!r} must name a categorical feature "
                    "the sidecar captures"
                )
            self.segments = [*binning.categories, OTHER_CLASS]
            self._segment_index = {c: i for i, c in enumerate(binning.categories)}
        model = config.model
        self._metrics = QualityMetrics(
            registry=registry,
            base=(model.name, model.version, model.role),
            classes=self.classes,
            segments=self.segments,
            score_bins=feedback.score_bins,
        )
        self.store = PendingStore(
            capacity=feedback.max_pending,
            ttl_seconds=feedback.ttl_seconds,
            path=path,
            dtype=record_dtype(len(self.classes) if self.multiclass else 0),
        )
        self._metrics.pending.set(len(self.store))

    # -- predictions -------------------------------------------------------------

    def remember(
        self,
        ids: Sequence[str],
        predictions: Sequence[Any],
        scores: Sequence[float | None],
        segments: Sequence[Any] | None,
        *,
        now: float,
        probabilities: Sequence[Sequence[float] | None] = (),
    ) -> None:
        """Keep captured rows (``ids`` from ``join_id``) until their labels come;
        rows without a prediction have nothing to be right or wrong about.
        ``probabilities``: a multiclass model's class probabilities per row."""
        rows = []
        for row, (ident, predicted) in enumerate(zip(ids, predictions, strict=False)):
            score = scores[row] if row < len(scores) else None
            value = self._predicted(predicted, score)
            if value is None:
                continue
            segment = segments[row] if segments is not None and row < len(segments) else None
            vector = probabilities[row] if row < len(probabilities) else None
            if value == len(self.classes) and vector is not None and len(vector) == value:
                # No class name, but one probability per class (in feedback.classes'
                # order): the prediction is the likeliest class, as the model's argmax.
                value = float(max(range(len(vector)), key=vector.__getitem__))
            rows.append((ident, value, score, segment, vector))
        if not rows:
            return
        records = np.zeros(len(rows), dtype=self.store.dtype)
        records["key"] = join_keys([r[0] for r in rows])
        records["ts"] = int(now)
        records["predicted"] = [r[1] for r in rows]
        records["score_bin"] = [self._score_bin(r[2]) for r in rows]
        records["segment"] = [self._segment(r[3]) for r in rows]
        records["state"] = PENDING
        if self.multiclass:
            records["class_bins"] = [self._class_bins(r[4]) for r in rows]
            self._observe_predicted_scores(rows)
        self.store.add(records, now=now)
        self._metrics.pending.set(len(self.store))

    def _predicted(self, predicted: Any, score: float | None) -> float | None:
        if self._regression:
            value = score if predicted is None else predicted
            if not isinstance(value, int | float) or isinstance(value, bool):
                return None
            return float(value) if math.isfinite(value) else None
        if predicted is None:
            return None
        return float(self._class_index.get(str(predicted), len(self.classes)))

    def _score_bin(self, score: float | None) -> int:
        if self._positive is None or score is None or not math.isfinite(score):
            return NO_BIN
        bins = self._config.score_bins
        return min(max(int(score * bins), 0), bins - 1)

    def _observe_predicted_scores(self, rows: list[tuple[Any, ...]]) -> None:
        """Each prediction's own score by predicted class (its probability in
        the row's vector, else the extracted score), for the estimate."""
        predicted, scores = [], []
        for _, value, score, _, vector in rows:
            k = int(value)
            if vector is not None and len(vector) == len(self.classes):
                score = vector[k] if k < len(vector) else None
            if k < len(self.classes) and score is not None and math.isfinite(score):
                predicted.append(k)
                scores.append(float(score))
        self._metrics.observe_predicted_scores(predicted, scores)

    def _class_bins(self, vector: Sequence[float] | None) -> list[int]:
        """Each class's score bin; all NO_BIN unless there is one finite
        probability per class."""
        k, bins = len(self.classes), self._config.score_bins
        if vector is None or len(vector) != k or not all(map(math.isfinite, vector)):
            return [NO_BIN] * k
        return [min(max(int(p * bins), 0), bins - 1) for p in vector]

    def _segment(self, value: Any) -> int:
        if self.segment_feature is None:
            return 0
        if value is None:
            return len(self.segments) - 1
        return self._segment_index.get(str(value), len(self.segments) - 1)

    # -- labels ------------------------------------------------------------------

    def parse(self, body: bytes) -> tuple[list[str], list[float]]:
        """The ids and labels of a batch (class labels as class indexes), or
        FeedbackError naming the first field that is wrong."""
        try:
            document = json.loads(body)
        except ValueError as error:
            raise FeedbackError(400, "body", f"not JSON: {error}") from None
        where = "labels"
        if isinstance(document, dict) and "labels" in document:
            items = document["labels"]
        elif isinstance(document, dict):
            items, where = [document], "body"
        else:
            items = document
        if not isinstance(items, list) or not items:
            raise FeedbackError(422, where, "expected a non-empty list of {id, label}")
        if len(items) > self._config.max_batch:
            raise FeedbackError(
                413, where, f"{len(items)} labels, at most {self._config.max_batch} per request"
            )
        ids: list[str] = []
        labels: list[float] = []
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if where == "labels" else "body"
            if not isinstance(item, dict) or set(item) != {"id", "label"}:
                raise FeedbackError(422, at, 'expected an object {"id": ..., "label": ...}')
            ident, label = item["id"], item["label"]
            if not isinstance(ident, str) or not _ID.fullmatch(ident):
                raise FeedbackError(
                    422, f"{at}.id", "expected a request id: 1 to 200 visible ASCII characters"
                )
            ids.append(ident)
            labels.append(self._label(label, f"{at}.label"))
        return ids, labels

    def _label(self, label: Any, at: str) -> float:
        if isinstance(label, bool):
            raise FeedbackError(422, at, "a boolean is no label")
        if self._regression:
            if not isinstance(label, int | float) or not math.isfinite(label):
                raise FeedbackError(422, at, "expected a finite number (the model is a regression)")
            return float(label)
        if not isinstance(label, str | int):
            raise FeedbackError(422, at, f"expected one of the classes {self.classes}")
        index = self._class_index.get(str(label))
        if index is None:
            raise FeedbackError(422, at, f"{label!r} is not one of the classes {self.classes}")
        return float(index)

    def join(
        self, ids: list[str], labels: list[float], *, now: float | None = None, fanout: bool = False
    ) -> JoinResult:
        """Join a batch; with ``fanout`` (the batch also went to the other
        replicas) ids this sidecar never saw are named but not counted."""
        now = time.time() if now is None else now
        keys = join_keys(ids)
        # An id twice in one batch: the first counts, the rest are duplicates.
        _, first = np.unique(keys, return_index=True)
        repeated = np.ones(keys.size, dtype=bool)
        repeated[first] = False
        found = self.store.lookup(keys, now=now)
        records = self.store.records(np.maximum(found.slots, 0))
        labelled = found.found & (records["state"] != PENDING)
        duplicate = repeated | labelled
        joined = found.found & ~duplicate
        result = JoinResult(joined=int(np.count_nonzero(joined)))
        for outcome, mask in (
            ("unknown", ~found.found & ~found.expired & ~repeated),
            ("expired", ~found.found & found.expired & ~repeated),
            ("duplicate", duplicate),
        ):
            getattr(result, outcome).extend(ids[i] for i in np.flatnonzero(mask))
        if result.joined:
            slots = found.slots[joined]
            self._count(records[joined], np.asarray(labels, dtype=np.float64)[joined])
            self.store.label(slots)
        m = self._metrics.labels
        # With fanout, an id repeated in the batch but not stored here is
        # another replica's duplicate (or nobody's: then the resend counts it).
        duplicates = np.count_nonzero(duplicate & found.found) if fanout else len(result.duplicate)
        for outcome, n in (
            (names.LabelOutcome.JOINED, result.joined),
            (names.LabelOutcome.UNKNOWN, 0 if fanout else len(result.unknown)),
            (names.LabelOutcome.EXPIRED, len(result.expired)),
            (names.LabelOutcome.DUPLICATE, int(duplicates)),
        ):
            if n:
                m[outcome].inc(n)
        return result

    def _count(self, records: np.ndarray, actual: np.ndarray) -> None:
        segment = records["segment"].astype(np.int64)
        if self._regression:
            predicted = records["predicted"].astype(np.float64)
            error = predicted - actual
            self._metrics.add_regression(
                segment,
                {
                    names.RegressionQuantity.COUNT: np.ones_like(actual),
                    names.RegressionQuantity.ACTUAL: actual,
                    names.RegressionQuantity.ACTUAL_SQUARED: actual * actual,
                    names.RegressionQuantity.ERROR: error,
                    names.RegressionQuantity.ABS_ERROR: np.abs(error),
                    names.RegressionQuantity.SQUARED_ERROR: error * error,
                },
            )
            return
        a = actual.astype(np.int64)
        self._metrics.add_confusion(segment, a, records["predicted"].astype(np.int64))
        binned = records["score_bin"] != NO_BIN
        if self._positive is not None and np.any(binned):
            score_bin = records["score_bin"].astype(np.int64)
            self._metrics.add_score_bins(segment[binned], a[binned], score_bin[binned])
        if self.multiclass:
            class_bins = records["class_bins"].astype(np.int64)
            scored = class_bins[:, 0] != NO_BIN
            # A label of a class outside feedback.classes cannot be: _label refuses it.
            if np.any(scored):
                self._metrics.add_class_score_bins(segment[scored], a[scored], class_bins[scored])

    def close(self) -> None:
        self.store.close()
