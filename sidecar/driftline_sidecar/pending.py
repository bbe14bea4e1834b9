"""The bounded store of predictions waiting for their label.

One fixed-size record per captured row (``RECORD``, 19 bytes): the 64-bit
hash of its join id, when it was predicted, the predicted class (or value),
the score's bin, the segment and whether it has been labelled; a multiclass
model's records add one byte per class, the bin of that class's score
(``record_dtype``). Nothing else of the request is kept: quality needs no more.

In memory the records sit in an open-addressing hash table (numpy arrays,
linear probing, at most half full) looked up a batch at a time, so a join
costs a few vectorised passes, not a Python loop per label. Evicted keys are
remembered (bounded) so a late label is answered "expired", not "unknown".

On disk every change is appended to the spill file as the same record
(``state`` says pending, labelled or evicted); a restarted sidecar replays
it, last record per key wins, and rewrites it compacted. Appends are one
``write`` per batch; the file is compacted whenever the table is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

RECORD: Final = np.dtype(
    [
        ("key", "<u8"),  # blake2b-64 of the join id; 0 marks an empty slot
        ("ts", "<u4"),  # unix seconds of the prediction
        ("predicted", "<f4"),  # class index, or the regression's value
        ("score_bin", "u1"),  # NO_BIN without a score
        ("segment", "u1"),
        ("state", "u1"),  # PENDING, LABELLED, or (in the file only) EVICTED
    ]
)
PENDING, LABELLED, EVICTED = 0, 1, 2


def record_dtype(class_scores: int = 0) -> np.dtype[np.void]:
    """``RECORD``, plus the score bin of each of ``class_scores`` classes."""
    if not class_scores:
        return RECORD
    return np.dtype([*RECORD.descr, ("class_bins", "u1", (class_scores,))])


NO_BIN: Final = 255
Keys = npt.NDArray[np.uint64]
# The spill file is rewritten once its appends outgrow the live records this
# much (and this many records at least), so it stays within a small multiple
# of the store (an emptyDir has a size limit).
COMPACT_FACTOR = 3
COMPACT_MIN_RECORDS = 1 << 16
SWEEP_SECONDS = 3600.0  # predictions past the TTL are dropped at least this often

log = logging.getLogger(__name__)


def join_keys(ids: Sequence[str]) -> Keys:
    """The 64-bit keys of join ids (0 is kept for empty slots)."""
    keys = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )
    keys[keys == 0] = 1
    return keys


@dataclass(frozen=True)
class Lookup:
    """Where each key of a batch stands."""

    slots: npt.NDArray[np.int64]  # the key's slot, -1 when not stored
    expired: npt.NDArray[np.bool_]  # not stored, but evicted or out of time

    @property
    def found(self) -> npt.NDArray[np.bool_]:
        return self.slots >= 0


class PendingStore:
    def __init__(
        self,
        *,
        capacity: int,
        ttl_seconds: float,
        path: str | None = None,
        dtype: np.dtype[np.void] = RECORD,
    ) -> None:
        self.capacity = capacity
        self.dtype = dtype
        self.ttl = ttl_seconds
        self._path = path
        size = 1 << max(4, (2 * capacity - 1).bit_length())  # a power of two >= 2 x capacity
        self._table = np.zeros(size, dtype=dtype)
        self._count = 0
        self._evicted_order: Keys = np.zeros(0, dtype=np.uint64)  # oldest first
        self._evicted: Keys = np.zeros(0, dtype=np.uint64)  # the same, sorted for lookups
        self._file = None
        self._file_records = 0
        self._next_sweep = 0.0
        if path is not None:
            try:
                self._replay(path)
                self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (closed by close())
            except OSError as error:  # the proxy still serves; labels join until a restart
                log.warning("pending predictions kept in memory only: %s: %s", path, error)
                self._path = None

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Memory held by the store's arrays."""
        return self._table.nbytes + self._evicted_order.nbytes + self._evicted.nbytes

    # -- the table ------------------------------------------------------------

    def _probe(self, keys: Keys) -> npt.NDArray[np.int64]:
        """Per key: its slot if stored, else the first empty slot of its probe run."""
        table = self._table["key"]
        mask = np.uint64(table.size - 1)
        position = (keys & mask).astype(np.int64)
        slots = np.empty(keys.size, dtype=np.int64)
        todo = np.arange(keys.size)
        while todo.size:
            at = table[position[todo]]
            done = (at == keys[todo]) | (at == 0)
            slots[todo[done]] = position[todo[done]]
            todo = todo[~done]
            position[todo] = (position[todo] + 1) & (table.size - 1)
        return slots

    def _place(self, records: npt.NDArray[np.void]) -> None:
        """Write records (unique keys) into the table, new keys into empty slots."""
        todo = records
        while todo.size:
            slots = self._probe(todo["key"])
            new = self._table["key"][slots] == 0
            # Two new keys may want one empty slot: the first takes it, the rest probe on.
            _, first = np.unique(slots, return_index=True)
            taken = np.zeros(todo.size, dtype=bool)
            taken[first] = True
            self._count += int(np.count_nonzero(new & taken))
            self._table[slots[taken]] = todo[taken]
            todo = todo[~taken]

    def lookup(self, keys: Keys, *, now: float) -> Lookup:
        slots = self._probe(keys)
        stored = self._table[slots]
        found = stored["key"] == keys
        old = found & (stored["ts"] < now - self.ttl)
        evicted = ~found & self._was_evicted(keys)
        return Lookup(np.where(found & ~old, slots, -1), old | evicted)

    def records(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.void]:
        return self._table[slots]

    # -- changes ---------------------------------------------------------------

    def add(self, records: npt.NDArray[np.void], *, now: float) -> None:
        """Store predictions (a later one with the same key replaces the earlier)."""
        if not records.size:
            return
        keys = records["key"]
        _, last = np.unique(keys[::-1], return_index=True)
        records = records[::-1][last]
        if records.size > self.capacity:  # more than fit at all: the newest do
            order = np.argsort(records["ts"], kind="stable")
            dropped = records["key"][order[: -self.capacity]]
            self._forget(dropped)
            tombstones = np.zeros(dropped.size, dtype=self.dtype)
            tombstones["key"], tombstones["state"] = dropped, EVICTED
            self._append(tombstones)
            records = records[order[-self.capacity :]]
        if self._count + records.size > self.capacity:
            self._rebuild(now=now, room=records.size)
        elif now >= self._next_sweep:
            self._rebuild(now=now, room=0)
        self._next_sweep = max(self._next_sweep, now + min(self.ttl, SWEEP_SECONDS))
        self._place(records)
        self._append(records)

    def label(self, slots: npt.NDArray[np.int64]) -> None:
        """Mark stored predictions labelled (their ids now answer "duplicate")."""
        self._table["state"][slots] = LABELLED
        self._append(self._table[slots])

    def _rebuild(self, *, now: float, room: int) -> None:
        """Drop what is out of time, then the oldest until ``room`` fits with a
        quarter to spare (so rebuilds stay rare), and compact the file."""
        live = self._table[self._table["key"] != 0]
        keep = live["ts"] >= now - self.ttl
        target = (
            max(0, min(self.capacity - room, self.capacity * 3 // 4)) if room else self.capacity
        )
        if np.count_nonzero(keep) > target:
            order = np.argsort(np.where(keep, live["ts"], 0), kind="stable")
            keep[order[: live.size - target]] = False
        gone = live[~keep]
        self._forget(gone["key"])
        self._table[:] = np.zeros(1, dtype=self.dtype)
        self._count = 0
        self._place(live[keep])
        self._compact()

    def _forget(self, keys: Keys) -> None:
        # The newest ``capacity`` evictions are remembered; a label for an
        # older one answers "unknown".
        self._evicted_order = np.concatenate((self._evicted_order, keys))[-self.capacity :]
        self._evicted = np.sort(self._evicted_order)

    def _was_evicted(self, keys: Keys) -> npt.NDArray[np.bool_]:
        if not self._evicted.size:
            return np.zeros(keys.size, dtype=bool)
        at = np.minimum(np.searchsorted(self._evicted, keys), self._evicted.size - 1)
        return np.asarray(self._evicted[at] == keys)

    def expire(self, *, now: float) -> None:
        """Drop predictions older than the TTL now (also done when the store fills)."""
        self._rebuild(now=now, room=0)

    # -- the spill file --------------------------------------------------------

    def _append(self, records: npt.NDArray[np.void]) -> None:
        if self._file is None or not records.size:
            return
        try:
            self._file.write(records.tobytes())
            self._file_records += records.size
            live = self._count + self._evicted_order.size
            if self._file_records > max(COMPACT_FACTOR * live, COMPACT_MIN_RECORDS):
                self._compact()
        except OSError as error:  # a full volume: keep joining, stop spilling
            log.warning("pending predictions no longer spilled to %s: %s", self._path, error)
            self.close()
            self._path = None

    def _replay(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        usable = len(data) - len(data) % self.dtype.itemsize  # a torn last record is dropped
        records = np.frombuffer(data[:usable], dtype=self.dtype)
        _, last = np.unique(records["key"][::-1], return_index=True)
        latest = records[::-1][last]
        evicted = latest["state"] == EVICTED
        self._forget(latest["key"][evicted])
        alive = latest[~evicted]
        if alive.size > self.capacity:
            alive = alive[np.argsort(alive["ts"], kind="stable")[-self.capacity :]]
        self._place(alive)
        self._compact()

    def _compact(self) -> None:
        """Rewrite the file as the table and the evicted keys are now (atomically)."""
        if self._path is None:
            return
        evicted = np.zeros(self._evicted.size, dtype=self.dtype)
        evicted["key"], evicted["state"] = self._evicted_order, EVICTED
        live = self._table[self._table["key"] != 0]
        temporary = self._path + ".tmp"
        with open(temporary, "wb") as f:
            f.write(evicted.tobytes())
            f.write(live.tobytes())
        os.replace(temporary, self._path)
        self._file_records = evicted.size + live.size
        if self._file is not None:
            self._file.close()
            self._file = open(self._path, "ab", buffering=0)  # noqa: SIM115

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
