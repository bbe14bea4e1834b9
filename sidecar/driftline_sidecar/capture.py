"""The capture worker: everything the sidecar learns from a body, off the hot path.

The proxy hands each finished exchange to ``CaptureWorker.submit`` (a
``put_nowait`` into a bounded queue; a full queue drops and counts). The worker
waits a moment so exchanges gather into a batch, extracts features and
predictions body by body (yielding to the event loop every few bodies, and
moving big bodies to a thread), then bins each feature column of the whole
batch at once with numpy and updates the counters.

A response the model compressed (``Content-Encoding: gzip`` or ``deflate``)
is decoded here, from the worker's own copy and within
``capture.max_decoded_bytes`` (``driftline_sidecar.decoding``); the client got
the model's bytes as they were. A response that cannot be read (a coding
capture does not decode, a corrupt or too large body, JSON in no known shape)
still leaves its request's features counted: its predictions count as
missing and the response as unread, by reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

from driftline_sidecar.contract.config import SidecarConfig
from driftline_sidecar.contract.metric_names import (
    DropQueue,
    ResponseUnread,
    SchemaViolation,
    SkipReason,
)
from driftline_sidecar.contract.profile import BinnedBatch
from driftline_sidecar.counts import Layout, NumericColumns
from driftline_sidecar.decoding import DECODED_GROWTH, UndecodableBody, decode
from driftline_sidecar.feedback import Feedback, join_id
from driftline_sidecar.metrics import SidecarMetrics
from driftline_sidecar.predlog import PredictionLog
from driftline_sidecar.protocols import Extracted, Extractor, UnparsableBody
from driftline_sidecar.reservoir import Reservoir

log = logging.getLogger(__name__)

# How long the first exchange of a batch waits for others: binning costs the
# same for 1 row as for 500, so batching is what keeps capture cheap per request.
FLUSH_INTERVAL_SECONDS = 0.1
# Bodies larger than this are parsed in a thread so the event loop keeps serving.
THREAD_PARSE_BYTES = 64 * 1024
# Yield to the event loop after this many bodies.
YIELD_EVERY = 8


@dataclass(slots=True)
class Exchange:
    """One request/response pair as the proxy saw it."""

    request: bytes
    response: bytes
    status: int
    latency_seconds: float
    request_id: str
    ts: float  # unix seconds when the request arrived
    too_large: bool = False  # the request exceeded capture.max_body_bytes: count, do not parse
    response_too_large: bool = False  # only the response did: read the request alone
    response_encoding: str = ""  # the response's Content-Encoding, decoded for capture


@dataclass(slots=True)
class _Batch:
    columns: dict[str, list[Any]]
    predictions: list[Any]
    scores: list[float | None]
    protocol: str = ""  # of the last body read
    ids: list[str] = field(default_factory=list)  # join ids, with feedback only
    probabilities: list[list[float] | None] = field(default_factory=list)  # multiclass feedback


class CaptureWorker:
    def __init__(
        self,
        *,
        config: SidecarConfig,
        layout: Layout,
        metrics: SidecarMetrics,
        prediction_log: PredictionLog | None = None,
        reservoir: Reservoir | None = None,
        feedback: Feedback | None = None,
        flush_interval: float = FLUSH_INTERVAL_SECONDS,
    ) -> None:
        self._config = config
        self._layout = layout
        self._metrics = metrics
        self._log = prediction_log
        self._reservoir = reservoir
        self._feedback = feedback
        self._flush_interval = flush_interval
        self._queue: asyncio.Queue[Exchange] = asyncio.Queue(maxsize=config.capture.queue_size)
        self._dropped = metrics.dropped[DropQueue.CAPTURE]
        self._numeric = NumericColumns([b for b in layout.binnings if b.kind == "numeric"])
        self._categorical = [b for b in layout.binnings if b.kind == "categorical"]
        # Compiled once: ``extract`` would rebuild its cache key on every call.
        self._extractor = Extractor(
            protocol=config.model.protocol,
            features=layout.features,
            prediction=config.model.prediction,
            probabilities=feedback is not None and feedback.multiclass,
        )

    def submit(self, exchange: Exchange) -> None:
        """Hand an exchange over without waiting; a full queue drops it (counted)."""
        try:
            self._queue.put_nowait(exchange)
        except asyncio.QueueFull:
            self._dropped.inc()

    async def run(self) -> None:
        batch_size = self._config.capture.batch_size
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(self._flush_interval)
            while len(batch) < batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._process(batch)
            except Exception:  # the sidecar's own work must never stop the worker
                log.exception("capture: a batch of %d exchanges failed", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued exchange has been counted."""
        await self._queue.join()

    async def _process(self, exchanges: list[Exchange]) -> None:
        layout, metrics = self._layout, self._metrics
        batch = _Batch({f.name: [] for f in layout.features}, [], [])
        columns = batch.columns.items()
        schema = Tally[str]()
        parsed = records = 0  # counted once per batch: each inc takes a lock
        for i, exchange in enumerate(exchanges):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if exchange.too_large:
                metrics.skipped[SkipReason.TOO_LARGE].inc()
                continue
            if _parse_cost(exchange) > THREAD_PARSE_BYTES:
                extracted, unread = await asyncio.to_thread(self._extract, exchange)
            else:
                extracted, unread = self._extract(exchange)
            if extracted is None:
                metrics.skipped[SkipReason.UNPARSED].inc()
                continue
            if unread is not None:
                metrics.responses_unread[unread].inc()
            parsed += 1
            records += extracted.rows
            schema[SchemaViolation.UNKNOWN_FIELD] += extracted.unknown_fields
            schema[SchemaViolation.WRONG_TYPE] += extracted.wrong_type
            schema[SchemaViolation.MISSING_FIELD] += extracted.missing_fields
            features = extracted.features
            if len(features) == len(batch.columns):  # every configured feature read
                for name, column in columns:
                    column.extend(features[name])
            else:
                for name, column in columns:
                    column.extend(features.get(name) or [None] * extracted.rows)
            batch.predictions.extend(extracted.predictions)
            batch.scores.extend(extracted.scores)
            batch.protocol = extracted.protocol
            if self._feedback is not None:
                batch.ids.extend(join_id(exchange.request_id, r) for r in range(extracted.rows))
                batch.probabilities.extend(extracted.probabilities)
            if self._log is not None and self._log.sampled():
                self._write_log(exchange, extracted)
        if parsed:
            metrics.bodies_parsed.inc(parsed)
            metrics.records.inc(records)
        for kind, n in schema.items():
            if n:
                metrics.schema[kind].inc(n)
        self._count_features(batch)
        self._count_predictions(batch)
        if self._reservoir is not None:
            self._reservoir.offer(batch.columns, len(batch.predictions), protocol=batch.protocol)
        if self._feedback is not None and batch.ids:
            segment = self._feedback.segment_feature
            segments = batch.columns.get(segment) if segment is not None else None
            self._feedback.remember(
                batch.ids,
                batch.predictions,
                batch.scores,
                segments,
                now=time.time(),
                probabilities=batch.probabilities,
            )

    def _extract(self, exchange: Exchange) -> tuple[Extracted | None, ResponseUnread | None]:
        """What ``_read`` gives; (None, None) for a request that cannot be read."""
        try:
            return self._read(exchange)
        except UnparsableBody:
            return None, None
        except Exception:  # an extractor bug must not lose the batch
            log.exception("capture: extracting request %s failed", exchange.request_id)
            return None, None

    def _read(self, exchange: Exchange) -> tuple[Extracted, ResponseUnread | None]:
        """The exchange's features and predictions, and why the response was not
        read if it was not (then its predictions are missing). Raises
        ``UnparsableBody`` for a request that cannot be read."""
        response: bytes | None = exchange.response
        unread: ResponseUnread | None = None
        if exchange.response_too_large:
            response, unread = None, ResponseUnread.TOO_LARGE
        elif exchange.response_encoding and response:
            try:
                response = decode(
                    response,
                    exchange.response_encoding,
                    max_bytes=self._config.capture.max_decoded_bytes,
                )
            except UndecodableBody as error:
                log.debug("capture: response to %s: %s", exchange.request_id, error)
                response, unread = None, error.reason
        try:
            return self._extractor(exchange.request, response), unread
        except UnparsableBody:
            if response is None:
                raise  # the request itself
            # The request alone, if it reads; else this raises for it.
            return self._extractor(exchange.request, None), ResponseUnread.UNPARSED

    def _count_features(self, batch: _Batch) -> None:
        if not batch.predictions:
            return  # no row read
        columns = batch.columns
        binned = [_counted(b.bin(columns[b.name])) for b in self._categorical]
        if self._numeric.binnings:
            binned += self._numeric.bin([columns[b.name] for b in self._numeric.binnings])
        binnings = self._categorical + list(self._numeric.binnings)
        metrics = self._metrics
        for binning, counts in zip(binnings, binned, strict=True):
            _count_binned(
                counts,
                metrics.feature_bins[binning.name],
                metrics.feature_missing[binning.name],
                metrics.feature_out_of_range[binning.name],
            )

    def _count_predictions(self, batch: _Batch) -> None:
        metrics, binning = self._metrics, self._layout.prediction
        classification = self._config.model.prediction.task == "classification"
        if classification:
            for label, n in Tally(str(p) for p in batch.predictions if p is not None).items():
                metrics.count_class(label, n)
        # A regression's value is its score when no separate score is configured.
        if binning.kind == "categorical":
            values: list[Any] = batch.predictions
        elif classification:
            values = batch.scores
        else:
            values = [
                s if s is not None else p
                for s, p in zip(batch.scores, batch.predictions, strict=False)
            ]
        if values:
            _count_binned(
                _counted(binning.bin(values)),
                metrics.prediction_bins,
                metrics.prediction_missing,
                metrics.prediction_out_of_range,
            )
        if binning.kind == "numeric":
            for value in values:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    metrics.score.observe(value)

    def _write_log(self, exchange: Exchange, extracted: Extracted) -> None:
        assert self._log is not None
        model = self._config.model
        for row in range(extracted.rows):
            record = {
                "ts": exchange.ts,
                "request_id": exchange.request_id,
                "row": row,
                "model": model.name,
                "version": model.version,
                "features": {name: col[row] for name, col in extracted.features.items()},
                "prediction": _at(extracted.predictions, row),
                "score": _at(extracted.scores, row),
                "latency_seconds": exchange.latency_seconds,
                "status": exchange.status,
            }
            if not self._log.write(record):
                self._metrics.dropped[DropQueue.LOG].inc()


def _count_binned(
    binned: tuple[list[int], int, int], bins: list[Any], missing: Any, out_of_range: Any
) -> None:
    counts, n_missing, n_outside = binned
    for child, n in zip(bins, counts, strict=True):
        if n:
            child.inc(n)
    if n_missing:
        missing.inc(n_missing)
    if n_outside:
        out_of_range.inc(n_outside)


def _counted(binned: BinnedBatch) -> tuple[list[int], int, int]:
    return binned.counts, binned.missing, binned.out_of_range


def _parse_cost(exchange: Exchange) -> int:
    growth = DECODED_GROWTH if exchange.response_encoding else 1
    return len(exchange.request) + len(exchange.response) * growth


def _at(values: list[Any], row: int) -> Any:
    return values[row] if row < len(values) else None
