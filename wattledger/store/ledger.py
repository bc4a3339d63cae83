"""The local SQLite ledger (WAL, in the state dir): the embedded store and the spool.

Every point the agent makes is written here first, in one transaction per
tick (``append``). Additive fields become integers (micro-units) with the jobs
of each pool apportioned to the pool's energy (store/quantize.py), so every
sum the ledger gives is exact and conserved. ``wl_node`` and ``wl_job`` rows
are kept compactly (store/schema.py) and rolled up into minutes, hours and
days by the agent's compaction (store/compact.py), which also prunes raw
ticks past their retention; reads take the coarsest resolution that covers
a range exactly (store/sums.py). The per-job summary is updated in the same
transaction as each tick (store/summary.py).

When a remote sink is configured the same transaction also puts the points
in the ``outbox``; a row leaves it only after a sink accepted it (2xx), so a
crash or an outage loses nothing. The outbox is bounded (``spool_max_rows``):
when full, the oldest whole ticks are dropped, counted and logged once per
episode (store/spool.py).

Every failure comes out as a ``StorageError`` (store/errors.py): one line
that says what failed and what to do. The agent's own ledger, which keeps
going through a full disk or a damaged file, is ``store/guard.py``'s.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wattledger.model.points import ADDITIVE, SCHEMA, WL_JOB, Batch, Point
from wattledger.model.tiers import RAW
from wattledger.store import export, migrate, rollup, schema, spool, summary
from wattledger.store.errors import Fault, StorageError, storage_errors
from wattledger.store.files import connect_readonly, connect_writable
from wattledger.store.quantize import Quantized, quantize
from wattledger.store.schema import additive, raw_table, series_table
from wattledger.store.sizing import Stats, stats
from wattledger.store.sums import HourClass, Sums, Totals, class_sums, series_totals
from wattledger.store.write import REPLACE_KEYS, SeriesIds, write_points

LEDGER_FILE = "ledger.sqlite3"
__all__ = ["LEDGER_FILE", "REPLACE_KEYS", "Ledger", "StorageError"]

log = logging.getLogger("wattledger.ledger")
_SET_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"


class Ledger:
    def __init__(self, path: Path, *, spool: bool = False, spool_max_rows: int = 1_000_000,
                 readonly: bool = False) -> None:
        self.path = Path(path)
        self.spool = spool
        self.spool_max_rows = spool_max_rows
        self.readonly = readonly
        self._lock = threading.RLock()
        self._ids = SeriesIds()
        self._overflow = _overflow_log(self.path, spool_max_rows)
        self._open()

    def _open(self) -> None:
        with storage_errors(self.path, "open"):
            self._db = self._connect()

    @classmethod
    def in_state_dir(cls, state_dir: Path, **kw: Any) -> "Ledger":
        return cls(Path(state_dir) / LEDGER_FILE, **kw)

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            db = connect_readonly(self.path)
            if schema.is_layout_1(db):
                db.close()
                raise StorageError(Fault.OTHER, self.path, "read",
                                   "written by an older wattledger; start the agent once to upgrade its layout")
            return db
        db = connect_writable(self.path)
        try:
            migrate.prepare(db, self.path)
        except BaseException:
            db.close()
            raise
        return db

    def on_fault(self, e: StorageError) -> None:
        """What a failed store operation (compaction, say) means here: for a plain ledger, an error."""
        raise e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, action: str = "write") -> Iterator[sqlite3.Connection]:
        with self._lock, storage_errors(self.path, action):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._ids.clear()  # ids made in this transaction are gone with it
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self, action: str = "read") -> Iterator[sqlite3.Connection]:
        with self._lock, storage_errors(self.path, action):
            yield self._db

    # -- writing ---------------------------------------------------------
    def append(self, points: Sequence[Point], state: Mapping[str, str] | None = None) -> list[Point]:
        """Store one tick's points (and spool them, as one tick, when a remote sink is on); the points as
        stored, their additive fields quantized (store/quantize.py): what every other output of the tick
        (stdout, Prometheus) must show, so that all of them equal the ledger.

        ``state``: meta keys to set in the same transaction (the counters' readings that the tick's
        energy was measured up to: agent/restart.py), so the ledger never holds a tick without them
        nor them without the tick.
        """
        items = quantize(points)
        stored = [q.as_point() for q in items]
        self.write(items, stored, state)
        return stored

    def write(self, items: Sequence[Quantized], stored: Sequence[Point], state: Mapping[str, str] | None) -> None:
        """``append``'s transaction: the quantized ``items``, ``stored`` (the same as points) to the spool."""
        if not items and not state:
            return
        dropped = None
        with self._tx() as db:
            write_points(db, self._ids, items)
            if state:
                db.executemany(_SET_META, list(state.items()))
            if self.spool and items:
                spool.put(db, stored)
                dropped = spool.enforce_bound(db, self.spool_max_rows)
        if dropped is not None:
            self._overflow.dropped(dropped)
        elif self.spool:
            self._overflow.calm()

    def overflow_dropped(self, dropped: spool.Dropped) -> None:
        """Ticks the spool bound dropped outside ``append`` (the rollup export): logged as an overflow."""
        self._overflow.dropped(dropped)

    # -- the spool -------------------------------------------------------
    def pending(self, limit: int = 5000) -> Batch:
        """The oldest undelivered points, with their outbox ids; all of one tier (one request to the sink)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT id, measurement, tags, fields, time_ns, tier FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        batch = Batch()
        for row_id, measurement, tags, fields, time_ns, tier in rows:
            if tier != rows[0][5]:
                break
            batch.ids.append(row_id)
            batch.points.append(Point(measurement, json.loads(tags), json.loads(fields), time_ns, tier or RAW))
        return batch

    def mark_delivered(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._tx() as db:
            # Count what left the outbox: an id the bound dropped meanwhile is not "delivered".
            gone = db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]).rowcount
            spool.bump(db, "delivered", gone)
            spool.bump(db, "outbox_rows", -gone)

    def set_aside(self, ids: Iterable[int], reason: str, now_ns: int) -> None:
        """Move rows a server refused for good (HTTP 400) out of the way, kept for inspection."""
        ids = list(ids)
        if not ids:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO rejected (id, measurement, tags, fields, time_ns, reason, rejected_ns) "
                "SELECT id, measurement, tags, fields, time_ns, ?, ? FROM outbox WHERE id = ?",
                [(reason, now_ns, i) for i in ids],
            )
            gone = db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]).rowcount
            spool.bump(db, "rejected", gone)
            spool.bump(db, "outbox_rows", -gone)

    def spool_counts(self) -> dict[str, int]:
        """spooled (waiting now), and the lifetime delivered / dropped / rejected counts."""
        meta = self.meta()
        return {
            "spooled": int(meta.get("outbox_rows", 0)),
            "delivered": int(meta.get("delivered", 0)),
            "dropped": int(meta.get("dropped", 0)),
            "rejected": int(meta.get("rejected", 0)),
        }

    # -- small key/value state (idle baselines, cursors, counters) -------
    def meta(self) -> dict[str, str]:
        with self._read() as db:
            return {str(k): str(v) for k, v in db.execute("SELECT key, value FROM meta").fetchall()}

    def get_meta(self, key: str) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(_SET_META, (key, value))

    def add_meta(self, key: str, n: int) -> None:
        """Add ``n`` to an integer counter in meta."""
        with self._tx() as db:
            spool.bump(db, key, n)

    # -- reading ---------------------------------------------------------
    def rows(
        self, measurement: str, since_ns: int | None = None, until_ns: int | None = None
    ) -> list[dict[str, Any]]:
        """Raw rows of one measurement in [since, until), as dicts with ``time_ns`` and every tag and field
        (SQLite values: int, float, str, None; additive fields in their units, e.g. joules)."""
        tags, fields = SCHEMA[measurement]
        where, args = [], []
        if since_ns is not None:
            where.append("r.time_ns >= ?")
            args.append(since_ns)
        if until_ns is not None:
            where.append("r.time_ns < ?")
            args.append(until_ns)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        if measurement in ADDITIVE:
            sel = [f"s.{t}" for t in tags] + [f"r.{schema.int_col(f)}" if f in additive(measurement) else f"r.{f}"
                                              for f in fields]
            sql = (f"SELECT r.time_ns, {', '.join(sel)} FROM {raw_table(measurement)} r JOIN "
                   f"{series_table(measurement)} s ON s.id = r.series{cond} ORDER BY r.time_ns, r.series")
        else:
            sql = f"SELECT time_ns, {', '.join(tags + fields)} FROM {measurement} r{cond} ORDER BY time_ns"
        cols = ("time_ns",) + tags + fields
        per_unit = {i + 1 + len(tags): schema.scale(f) for i, f in enumerate(fields) if f in additive(measurement)}
        with self._read() as db:
            rows = db.execute(sql, args).fetchall()
        return [dict(zip(cols, (v / per_unit[i] if i in per_unit and v is not None else v for i, v in enumerate(r))))
                for r in rows]

    def sums(self, measurement: str, field: str, group_tags: Sequence[str], since_ns: int, until_ns: int,
             equal: dict[str, str] | None = None, hour_class: HourClass | None = None) -> Sums:
        """Exact sums of an additive field per hour class and tag values (store/sums.py)."""
        if field not in additive(measurement) or any(t not in SCHEMA[measurement][0]
                                                      for t in [*group_tags, *(equal or {})]):
            raise ValueError(f"{measurement} has no additive field {field!r} or no such tags")
        with self._read() as db:
            return class_sums(db, measurement, field, group_tags, since_ns, until_ns, equal, hour_class)

    def hourly_sums(
        self,
        measurement: str,
        field: str,
        group_tags: Sequence[str],
        since_ns: int,
        until_ns: int,
        equal: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Sum of one field per UTC hour and tag set in [since, until): what InfluxDB's
        ``SUM(field) ... GROUP BY time(1h), tags`` gives; rows carry ``time_ns`` (the hour's start)."""
        found = self.sums(measurement, field, group_tags, since_ns, until_ns, equal)
        return [{"time_ns": hour, **dict(zip(group_tags, values)), field: total}
                for hour, values, total in found.cells]

    def stats(self) -> Stats:
        """Size, oldest row per resolution, row rate, lost points (store/sizing.py)."""
        with self._read() as db:
            return stats(db, self.path)

    def raw_kept_ns(self) -> int:
        """Raw ticks before this time were pruned (folded into rollups); 0: none were."""
        with self._read() as db:
            return max(rollup.kept(db, raw_table(m)) for m in schema.series_measurements())

    def rollup_points(self, level: schema.Level, since_ns: int, until_ns: int) -> list[Point]:
        """The ``level`` buckets that start in [since, until) as a fleet tier's points (store/export.py)."""
        with self._read() as db:
            return export.points_between(db, level, since_ns, until_ns)

    def job_summary(self, equal: dict[str, str] | None = None, measurement: str = WL_JOB,
                    jobs: Collection[str] | None = None) -> list[dict[str, object]]:
        """The per-job summary of wl_job (or wl_embodied) (store/summary.py), optionally only rows whose tags
        equal ``equal`` and of the job tags ``jobs``."""
        with self._read() as db:
            return summary.read(db, equal, measurement, jobs)

    def latest_time(self, measurement: str) -> int | None:
        """The newest point's time in one measurement (None when it has none); reads the time index."""
        if measurement not in SCHEMA:
            raise ValueError(f"no measurement {measurement!r}")
        table = raw_table(measurement) if measurement in ADDITIVE else measurement
        with self._read() as db:
            (newest,) = db.execute(f"SELECT MAX(time_ns) FROM {table}").fetchone()
        return None if newest is None else int(newest)

    def job_ticks(self, tag: str, since_ns: int, until_ns: int, equal: dict[str, str] | None = None
                  ) -> list[dict[str, Any]]:
        """Per user of one job tag: the ticks it was charged in (``report --job``), from the ledger's
        ``job_tick`` series at the coarsest resolution that covers the range (store/jobtick.py).

        Each row: ``user``, ``first_ns`` (start of its first tick), ``last_ns`` (end of its last),
        ``active_s`` (its ticks' lengths), ``ticks``, ``host_j`` (every pool's energy in those
        ticks, on the same hosts), ``unused_j`` (``_idle``'s energy in them) and ``gpu_s_held``
        (the length of each tick x GPU it was charged on). ``equal``: more tags (host, user,
        project) its rows must have.
        """
        with self._read() as db:
            totals, tags, _ = series_totals(db, schema.JOB_TICK, since_ns, until_ns, {**(equal or {}), "job": tag})
        users: dict[str, Totals] = {}
        for sid, tot in sorted(totals.items()):
            if tot.rows:
                users.setdefault(tags[sid]["user"], Totals()).add(schema.JOB_TICK, tot.rows, tot.ints, tot.extrema)
        return [{"user": user, "first_ns": t.extrema.get("first_ns"), "last_ns": t.extrema.get("last_ns"),
                 "ticks": t.rows, "active_s": t.sum("active_s"), "host_j": t.sum("host_j"),
                 "unused_j": t.sum("unused_j"), "gpu_s_held": t.sum("gpu_held_s")} for user, t in sorted(users.items())]

    def connection(self) -> sqlite3.Connection:
        """The open connection, for the store's own readers and the compactor (same package)."""
        return self._db


def _overflow_log(path: Path, max_rows: int) -> spool.OverflowLog:
    return spool.OverflowLog(path, max_rows)
