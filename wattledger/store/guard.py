"""The agent's ledger: it degrades, it never dies, on storage faults (issue 17, items 2 and 3).

- **Disk full, I/O errors, a directory made read-only**: each tick is still
  measured. Ticks that cannot be written wait in a bounded memory buffer
  (``[ledger] buffer_points``), oldest first, and are written at the next
  tick that can write, in order. One line says what is wrong while it lasts,
  one when it is over. When the buffer is full the oldest whole ticks are
  dropped and counted (``meta`` ``lost_points`` / ``lost_ticks``, shown by
  ``doctor``). SQLite rolls a failed transaction back, so what is already in
  the ledger stays intact.
- **A damaged file** (truncated, a garbage header, garbage pages found by
  any read or write): it is moved aside as ``ledger.sqlite3.corrupt-<time>``,
  a fresh ledger is started, and the readable undelivered outbox rows of the
  old file are appended to the new one. One ERROR line says all of that.
- Other writes (delivery's bookkeeping, meta) that fail are skipped with one
  line: a point marked delivered too late is sent again, which is harmless.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from wattledger.model.points import Batch, Point
from wattledger.store import quarantine
from wattledger.store.errors import Fault, StorageError, storage_errors
from wattledger.store.ledger import Ledger
from wattledger.store.quantize import Quantized, quantize
from wattledger.util.logonce import LogOnce

log = logging.getLogger("wattledger.ledger")
T = TypeVar("T")


class GuardedLedger(Ledger):
    def __init__(self, path: Path, *, spool: bool = False, spool_max_rows: int = 1_000_000,
                 buffer_points: int = 50_000) -> None:
        self.buffer_points = buffer_points
        # Ticks not yet written: quantized (None once held: quantizing the stored values again gives the same
        # integers), as stored points (~0.8 KB each), and their state.
        self._held: deque[tuple[list[Quantized] | None, list[Point], Mapping[str, str] | None]] = deque()
        self._held_points = 0
        self._lost = [0, 0]  # points, ticks: not yet added to meta
        self._once = LogOnce(log)
        self.quarantined: list[Path] = []
        try:
            super().__init__(path, spool=spool, spool_max_rows=spool_max_rows)
        except StorageError as e:
            if e.fault is Fault.CORRUPT:
                self._replace(e)
            elif e.fault in (Fault.FULL, Fault.IO, Fault.BUSY):
                self._db = None  # type: ignore[assignment]  # opened at the first write that can (_ensure_open)
                self._once.problem(("write", e.fault), f"{e}. Meanwhile ticks are measured and held in memory",
                                   logging.ERROR)
            else:
                raise

    def _ensure_open(self) -> None:
        if getattr(self, "_db", None) is None:
            self._open()

    @contextmanager
    def _tx(self, action: str = "write") -> Iterator[sqlite3.Connection]:
        self._ensure_open()
        with super()._tx(action) as db:
            yield db

    @contextmanager
    def _read(self, action: str = "read") -> Iterator[sqlite3.Connection]:
        self._ensure_open()
        with super()._read(action) as db:
            yield db

    # -- faults ----------------------------------------------------------------------------------
    def on_fault(self, e: StorageError) -> None:
        """A store operation failed: a damaged file is replaced; anything else is reported once."""
        if e.fault is Fault.CORRUPT:
            try:
                self._replace(e)
            except StorageError as again:
                self._once.problem(("write", again.fault), str(again), logging.ERROR)
            return
        self._once.problem(("write", e.fault), str(e), logging.ERROR)  # the same line the tick writer says

    def _replace(self, e: StorageError) -> None:
        with self._lock:
            db = getattr(self, "_db", None)
            if db is not None:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            with storage_errors(self.path, "move aside"):
                moved = quarantine.move_aside(self.path)
            self.quarantined.append(moved)
            self._ids.clear()
            self._open()
            salvaged = self._salvage(moved)
        log.error("ledger %s was damaged (%s); moved it aside to %s and started a fresh ledger; %d undelivered "
                  "point(s) read back from it into the new one. What else it held: sqlite3 %s .recover",
                  self.path, e.detail, moved, salvaged, moved)

    def _salvage(self, moved: Path) -> int:
        n = 0
        for _, points in quarantine.read_outbox(moved):
            Ledger.append(self, points)
            n += len(points)
        return n

    def _guard(self, what: Callable[[], T], default: T) -> T:
        try:
            return what()
        except StorageError as e:
            self.on_fault(e)
            return default

    # -- writing: hold what cannot be written ----------------------------------------------------
    def append(self, points: Sequence[Point], state: Mapping[str, str] | None = None) -> list[Point]:
        items = quantize(points)
        stored = [q.as_point() for q in items]
        if not items and not state:
            return stored
        with self._lock:
            self._held.append((items, stored, state))
            self._held_points += len(stored)
            self._flush()
        return stored

    def _flush(self) -> None:
        written, replaced = 0, False
        while self._held:
            items, stored, state = self._held[0]
            try:
                Ledger.write(self, quantize(stored) if items is None else items, stored, state)
            except StorageError as e:
                if e.fault is Fault.CORRUPT and not replaced:
                    self.on_fault(e)
                    replaced = True
                    continue  # a fresh ledger: try again at once
                self._hold(e)
                return
            self._held_points -= len(self._held.popleft()[1])
            written += 1
        self._recovered(written)

    def _hold(self, e: StorageError) -> None:
        _, stored, state = self._held[-1]  # the tick just added; older ones were made smaller when held
        self._held[-1] = (None, stored, state)  # the smaller form: its points as stored
        self._once.problem(("write", e.fault), f"{e}. Meanwhile ticks are measured and held in memory "
                           f"(at most {self.buffer_points} points; the oldest are dropped and counted beyond "
                           "that) and written, in order, as soon as the ledger can be written again",
                           logging.ERROR)
        while self._held_points > self.buffer_points and len(self._held) > 1:
            _, gone, _ = self._held.popleft()
            self._held_points -= len(gone)
            self._lost[0] += len(gone)
            self._lost[1] += 1
            self._once.problem("buffer-full", f"memory buffer full ({self.buffer_points} points): dropping the "
                               "oldest held ticks; how many is said when the ledger is writable again and "
                               "shown by `wattledger doctor` (lost_points)", logging.ERROR)

    def _recovered(self, written: int) -> None:
        if self._lost != [0, 0]:
            try:
                Ledger.add_meta(self, "lost_points", self._lost[0])
                Ledger.add_meta(self, "lost_ticks", self._lost[1])
            except StorageError:
                return  # counted next time
            lost, self._lost = self._lost, [0, 0]
            self._once.cleared("buffer-full")
            log.error("ledger: %d tick(s), %d point(s) could not be kept while it was not writable; they are "
                      "lost and counted (lost_points in `wattledger doctor`)", lost[1], lost[0])
        self._once.cleared_where(lambda k: isinstance(k, tuple) and k[0] == "write",
                                 "ledger %s writable again; wrote %d tick(s) held in memory", self.path, written,
                                 level=logging.WARNING)

    def close(self) -> None:
        """Close; ticks still held in memory (the ledger stayed unwritable to the end) are lost: say so."""
        with self._lock:
            if self._held:
                self._flush()
            if self._held:
                self._lost[0] += self._held_points
                self._lost[1] += len(self._held)
                log.error("ledger %s: %d tick(s), %d point(s) held in memory could not be written before the "
                          "agent stopped; they are lost", self.path, self._lost[1], self._lost[0])
                self._held.clear()
                self._held_points = 0
                self._recovered(0)
            if getattr(self, "_db", None) is not None:
                super().close()

    @property
    def held_points(self) -> int:
        """Points measured but not yet written (held in memory)."""
        return self._held_points

    # -- everything else: skip on failure, replace a damaged file --------------------------------
    def mark_delivered(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        self._guard(lambda: Ledger.mark_delivered(self, ids), None)

    def set_aside(self, ids: Iterable[int], reason: str, now_ns: int) -> None:
        ids = list(ids)
        self._guard(lambda: Ledger.set_aside(self, ids, reason, now_ns), None)

    def set_meta(self, key: str, value: str) -> None:
        self._guard(lambda: Ledger.set_meta(self, key, value), None)

    def add_meta(self, key: str, n: int) -> None:
        self._guard(lambda: Ledger.add_meta(self, key, n), None)

    def pending(self, limit: int = 5000) -> Batch:
        return self._guard(lambda: Ledger.pending(self, limit), Batch())

    def meta(self) -> dict[str, str]:
        return self._guard(lambda: Ledger.meta(self), {})

    def get_meta(self, key: str) -> str | None:
        return self._guard(lambda: Ledger.get_meta(self, key), None)

    def rows(self, measurement: str, since_ns: int | None = None, until_ns: int | None = None
             ) -> list[dict[str, Any]]:
        return self._guard(lambda: Ledger.rows(self, measurement, since_ns, until_ns), [])
