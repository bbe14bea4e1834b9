"""The prediction log: sampled records, one JSON object per line, in rotating files.

``write`` never blocks: it hashes the PII fields and puts the record on a
bounded queue, or drops it (counted) when the queue is full. A daemon thread
turns records into lines and hands them to the standard library's
``RotatingFileHandler``, which keeps ``path`` below ``max_bytes`` and the last
``backups`` files as ``path.1`` … ``path.N``.

PII hashing: a feature named in ``pii_fields`` is logged as
``hmac-sha256:<64 hex digits>``, an HMAC of its value keyed with the salt from
the environment variable ``salt_env``. The same value under the same salt
always gives the same hash, so hashed values still join and count across
pods. Without that variable every process draws its own random salt (and says
so once in its log): hashes then do not join across restarts or pods.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import random
import secrets
import threading
import time
from collections.abc import Iterable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Final

from driftline_sidecar.contract.config import PredictionLogConfig

log = logging.getLogger(__name__)

HASH_PREFIX: Final = "hmac-sha256:"

_process_salt: bytes | None = None  # drawn once per process when no salt is configured
_salt_lock = threading.Lock()
_STOP: Final = object()  # tells the writer thread the queue is closed


def hash_value(value: Any, salt: bytes) -> str:
    """HMAC-SHA256 of a value, keyed with the salt: ``hmac-sha256:`` and 64 hex digits.

    A string is hashed as its UTF-8 text, anything else as its compact JSON
    text, so the number 42 and the string "42" give the same hash.
    """
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    digest = hmac.new(salt, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest


def _salt(env: str) -> bytes:
    configured = os.environ.get(env)
    if configured:
        return configured.encode("utf-8")
    global _process_salt
    with _salt_lock:
        if _process_salt is None:
            _process_salt = secrets.token_bytes(32)
            log.warning(
                "prediction log: %s is not set; hashing PII with a random per-process salt, "
                "so hashed values will not join across restarts or pods",
                env,
            )
        return _process_salt


class _JsonLinesFile(RotatingFileHandler):
    """The stdlib rotating file, with two of its defaults changed."""

    failures = 0

    def doRollover(self) -> None:
        super().doRollover()
        # Without backups the stdlib reopens the same file and lets it grow
        # without bound; "keep no backups" means start the file over.
        if self.backupCount == 0 and self.stream is not None:
            self.stream.truncate(0)

    def handleError(self, record: logging.LogRecord) -> None:
        # The stdlib prints a traceback to stderr for every failed record (a
        # full disk: thousands); say it once in the sidecar's log instead.
        self.failures += 1
        if self.failures == 1:
            log.exception("prediction log: writing %s failed", self.baseFilename)


class PredictionLog:
    """Sampled prediction records appended to a rotating JSON-lines file.

    Records are the caller's dicts (ts, request_id, model, version, features,
    prediction, score, latency, …); only ``features`` is looked at, to hash
    the PII fields in it. ``write`` copies what it changes, so the caller may
    reuse its dict. Values that are not JSON are written as their ``str``.
    """

    def __init__(self, config: PredictionLogConfig, *, pii_fields: Iterable[str]) -> None:
        self._config = config
        self._pii = frozenset(pii_fields)
        self._salt = _salt(config.salt_env) if self._pii else b""
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_size)
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._closed = not config.enabled
        self._abandoned = False  # close() gave up waiting: the writer must stop now
        self._file: _JsonLinesFile | None = None
        self._thread: threading.Thread | None = None
        if not config.enabled:
            return
        Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        # Opened here, so a path the sidecar cannot write fails at start-up (OSError).
        self._file = _JsonLinesFile(
            config.path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"
        )
        self._thread = threading.Thread(target=self._run, name="driftline-predlog", daemon=True)
        self._thread.start()

    def sampled(self) -> bool:
        """Whether to log this request: true for ``sample_ratio`` of calls."""
        return not self._closed and random.random() < self._config.sample_ratio

    def write(self, record: dict[str, Any]) -> bool:
        """Queue a record; False if it was not (log disabled or closed, or queue full)."""
        if self._closed:
            return False
        features = record.get("features")
        if self._pii and isinstance(features, dict) and not self._pii.isdisjoint(features):
            salt = self._salt
            record = dict(record)
            record["features"] = {
                name: hash_value(value, salt) if name in self._pii and value is not None else value
                for name, value in features.items()
            }
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._dropped_lock:
                self._dropped += 1
            return False
        return True

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full."""
        return self._dropped

    @property
    def failed(self) -> int:
        """Records the file did not take (an I/O error; logged once)."""
        return self._file.failures if self._file is not None else 0

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking records, write those queued (up to ``timeout`` seconds), close the file."""
        if self._thread is None or self._file is None:
            self._closed = True
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # the writer is stuck: the join times out too
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._file.lock:  # type: ignore[union-attr]  # a Handler's lock, set in __init__
            if self._thread.is_alive():
                self._abandoned = True
                log.warning(
                    "prediction log: %d records not written within %.1f s of closing",
                    self._queue.qsize(),
                    timeout,
                )
            self._file.close()
        self._thread = None

    def _run(self) -> None:
        assert self._file is not None
        file = self._file
        while True:
            record = self._queue.get()
            if record is _STOP:
                return
            try:
                line = json.dumps(record, separators=(",", ":"), default=str)
            except (TypeError, ValueError):  # a circular structure, say: skip that record
                log.exception("prediction log: record is not JSON")
                continue
            # ASCII-only JSON (the default) keeps the handler's size check exact.
            entry = logging.makeLogRecord({"msg": line})
            with file.lock:  # type: ignore[union-attr]  # typeshed: Lock | None; set in __init__
                if self._abandoned:
                    return
                file.handle(entry)
