"""Compaction: the agent folds raw ticks into minutes, hours and days, prunes what retention lets go, and
gives the space back. Bounded work per call, one transaction per piece of work.

``Compactor.step(now_ns)`` runs after each tick (``Agent.commit``), off the
tick's measurement: it does at most one piece of work, sized to take about
``budget_s`` (the size adapts to the measured speed), in one transaction
that also moves the piece's watermark (store/rollup.py). A kill -9 at any
point therefore loses nothing and doubles nothing: the transaction either
happened or did not. In order of priority:

1. fold raw ticks of finished minutes into ``<m>_1m`` (then minutes into
   hours, hours into days);
2. prune raw ticks older than ``[ledger] raw_days`` (only ticks already
   folded), minutes older than ``minutes_days``, hours and days older than
   ``hours_days``; ``wl_agent`` rows go with the raw ticks; the outbox,
   ``wl_carbon`` and ``wl_pue`` are never pruned here;
3. incremental vacuum: free pages beyond a small reserve go back to the
   file system, so the file stops growing once retention is reached.

When there is nothing to do it sleeps until the next minute of data.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from wattledger.model.points import WL_AGENT
from wattledger.model.units import DAY_NS, MINUTE_NS, NS_PER_S
from wattledger.store import rollup
from wattledger.store.errors import StorageError
from wattledger.store.ledger import Ledger
from wattledger.store.schema import DAY, HOUR, LEVELS, MINUTE, Level, level_table, raw_table, series_measurements

log = logging.getLogger("wattledger.compact")
VACUUM_PAGES = 2048  # pages given back per step at most (8 MiB at 4 KiB pages)


@dataclass(frozen=True)
class Retention:
    """How long each resolution is kept, seconds (days are kept as long as hours)."""

    raw_s: float = 3 * 86400.0
    minutes_s: float = 35 * 86400.0
    hours_s: float = 800 * 86400.0


@dataclass(frozen=True)
class Step:
    work: str  # "fold <table>", "prune <table>", "vacuum", "idle"
    rows: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Task:
    """One transaction's work: ``work`` names it (and its chunk size); pieces are (measurement or table,
    time column, lo, hi); ``level`` is the index of the level folded into, or -1 for a prune."""

    work: str
    pieces: list[tuple[str, str, int, int]]
    level: int


class Compactor:
    def __init__(self, ledger: Ledger, retention: Retention = Retention(), *, budget_s: float = 0.05,
                 reserve_pages: int = 256, clock: Callable[[], float] = time.perf_counter) -> None:
        """``reserve_pages``: free pages kept for new ticks (at least; 1% of the file when that is more)."""
        self.ledger = ledger
        self.reserve_pages = reserve_pages
        self.retention = retention
        self.budget_s = budget_s
        self._clock = clock
        self._chunk_ns: dict[str, int] = {}
        self._due_ns = 0
        self.cpu_s = 0.0  # CPU spent compacting, for benchmarks and doctor
        self.steps = 0

    # -- what is due -----------------------------------------------------------------------------
    def _fold_task(self, db: sqlite3.Connection) -> Task | None:
        """The next fold: the same range of every series measurement, so Σ jobs = node holds in every
        bucket at every moment (they are folded in one transaction). A measurement with nothing to fold
        (no rows: wl_embodied with [embodied] off) does not hold the others back; its mark moves with them."""
        for i, level in enumerate(LEVELS):
            marks, starts, ends = {}, [], []
            for m in series_measurements():
                if i == 0:
                    # Two queries: SQLite reads MIN or MAX alone off the index, both together by a full scan.
                    (newest,) = db.execute(f"SELECT MAX(time_ns) FROM {raw_table(m)}").fetchone()
                    (oldest,) = db.execute(f"SELECT MIN(time_ns) FROM {raw_table(m)}").fetchone()
                    ends.append(level.floor(newest) if newest is not None else 0)
                else:
                    src = level_table(m, LEVELS[i - 1])
                    (oldest,) = db.execute(f"SELECT MIN(bucket_ns) FROM {src}").fetchone()
                    ends.append(level.floor(rollup.folded(db, src)))
                marks[m] = rollup.folded(db, level_table(m, level))
                if oldest is not None:  # a measurement with no rows (wl_embodied, [embodied] off) starts nothing
                    starts.append(max(marks[m], level.floor(oldest)))
            hi = max(ends) if i == 0 else min(ends)  # raw: every tick before the newest minute is complete
            lo = min(starts, default=hi)
            if lo < hi:
                end = self._chunk_end(f"fold {level.name}", level, lo, hi)
                return Task(f"fold {level.name}", [(m, "", max(lo, marks[m]) if marks[m] < end else end, end)
                                                   for m in series_measurements()], i)
        return None

    def _prune_cutoffs(self, db: sqlite3.Connection, m: str, now_ns: int) -> list[tuple[str, str, Level, int]]:
        """(table, time column, alignment level, cutoff) for raw, minutes, hours and days of ``m``."""
        r = self.retention
        mark = {level: rollup.folded(db, level_table(m, level)) for level in LEVELS}
        hours_cut = DAY.floor(min(mark[DAY], now_ns - int(r.hours_s * NS_PER_S)))
        return [
            (raw_table(m), "time_ns", MINUTE, MINUTE.floor(min(mark[MINUTE], now_ns - int(r.raw_s * NS_PER_S)))),
            (level_table(m, MINUTE), "bucket_ns", HOUR,
             HOUR.floor(min(mark[HOUR], now_ns - int(r.minutes_s * NS_PER_S)))),
            (level_table(m, HOUR), "bucket_ns", DAY, hours_cut),
            (level_table(m, DAY), "bucket_ns", DAY, hours_cut),
        ]

    def _prune_task(self, db: sqlite3.Connection, now_ns: int) -> Task | None:
        """The next prune: one resolution of every series measurement (same range, one transaction), or
        wl_agent's rows past the raw retention."""
        per_m = [self._prune_cutoffs(db, m, now_ns) for m in series_measurements()]
        kinds = [[targets[k] for targets in per_m] for k in range(4)]
        kinds.append([(WL_AGENT, "time_ns", MINUTE, now_ns - int(self.retention.raw_s * NS_PER_S))])
        for k, group in enumerate(kinds):
            due = []
            for table, col, level, cutoff in group:
                (oldest,) = db.execute(f"SELECT MIN({col}) FROM {table}").fetchone()
                if oldest is not None and oldest < cutoff:
                    due.append((table, col, level, int(oldest), cutoff))
            if due:
                key = f"prune {'raw' if k == 0 else group[0][0]}"
                end = self._chunk_end(key, due[0][2], min(d[3] for d in due), min(d[4] for d in due))
                return Task(key, [(table, col, oldest, end) for table, col, _, oldest, _ in due if oldest < end], -1)
        return None

    def _chunk_end(self, key: str, level: Level, lo: int, hi: int) -> int:
        chunk = self._chunk_ns.setdefault(key, level.size_ns)
        return min(hi, level.floor(lo) + max(chunk, level.size_ns))

    # -- doing it --------------------------------------------------------------------------------
    def step(self, now_ns: int) -> Step:
        """At most one piece of work (see the module doc); cheap when nothing is due."""
        if 0 <= self._due_ns - now_ns <= MINUTE_NS:  # more than that ahead: the clock was set back, look now
            return Step("idle")
        started, cpu0 = self._clock(), time.process_time()
        try:
            done = self._one(now_ns)
        except StorageError as e:  # a full disk, a damaged file: the ledger says it once (or raises)
            self.ledger.on_fault(e)
            self._due_ns = now_ns + MINUTE_NS
            return Step("error")
        finally:
            self.cpu_s += time.process_time() - cpu0
        done = Step(done.work, done.rows, self._clock() - started)
        if done.work == "idle":
            self._due_ns = now_ns - now_ns % MINUTE_NS + MINUTE_NS
        else:
            self.steps += 1
            self._adapt(done)
        return done

    def _one(self, now_ns: int) -> Step:
        with self.ledger._tx("compact") as db:
            task = self._fold_task(db) or self._prune_task(db, now_ns)
            if task is not None:
                return self._run(db, task)
        return self._vacuum()

    def _run(self, db: sqlite3.Connection, task: Task) -> Step:
        rows = 0
        for name, col, lo, hi in task.pieces:
            if task.level >= 0:
                rows += rollup.fold(db, name, LEVELS[task.level], lo, hi) if lo < hi else 0
            else:
                rows += rollup.prune(db, name, col, lo, hi)
        return Step(task.work, rows)

    def _adapt(self, done: Step) -> None:
        """Grow a chunk while pieces are quick, shrink it when one took longer than the budget."""
        if done.work not in self._chunk_ns:
            return
        chunk = self._chunk_ns[done.work]
        if done.seconds > self.budget_s:
            self._chunk_ns[done.work] = max(MINUTE_NS, chunk // 2)
        elif done.seconds < self.budget_s / 4:
            self._chunk_ns[done.work] = min(31 * DAY_NS, chunk * 2)

    def _vacuum(self) -> Step:
        with self.ledger._read("compact") as db:
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2: incremental
                return Step("idle")
            excess = free - max(self.reserve_pages, pages // 100)
            if excess <= 0:
                return Step("idle")
            # executescript steps the pragma to the end (execute() would free a single page).
            db.executescript(f"PRAGMA incremental_vacuum({min(excess, VACUUM_PAGES)});")
            return Step("vacuum", min(excess, VACUUM_PAGES))

    def catch_up(self, now_ns: int, max_steps: int = 1_000_000) -> int:
        """Step until nothing is due (tests, benchmarks, a first start on a big ledger); the steps taken."""
        self._due_ns = 0
        for n in range(max_steps):
            if self.step(now_ns).work == "idle":
                return n
        return max_steps
