"""The local SQLite ledger (WAL, in the state dir): the embedded store and the spool.

Every point the agent makes is written here first, in one transaction per
tick, into one table per measurement (same names as in InfluxDB). When a
remote sink is configured the same transaction also puts the point in the
``outbox``; a row leaves the outbox only after a sink accepted it (2xx), so a
crash or an outage loses nothing. The outbox is bounded (``spool_max_rows``):
when full, the oldest undelivered rows are dropped and counted.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wattledger.model.points import SCHEMA, WL_CARBON, WL_PUE, Batch, Point

LEDGER_FILE = "ledger.sqlite3"

# Series that hold one value per (key tags, time): a newer point replaces the stored
# one, exactly as a same-tags same-time point does in InfluxDB: a re-synced or
# corrected intensity replaces the old figure of the same kind, and a corrected
# PUE replaces the old one. ``kind`` is a tag, so a forecast and the later actual
# for one hour are two rows here as in InfluxDB; readers prefer the actual
# (docs/design-notes.md), and a late forecast can never replace an actual.
REPLACE_KEYS: dict[str, tuple[str, ...]] = {WL_CARBON: ("zone", "provider", "kind"), WL_PUE: ("site",)}


def _ddl() -> list[str]:
    stmts = []
    for measurement, (tags, fields) in SCHEMA.items():
        cols = ", ".join([f"{t} TEXT NOT NULL DEFAULT ''" for t in tags] + [f"{f} REAL" for f in fields])
        stmts.append(f"CREATE TABLE IF NOT EXISTS {measurement} (time_ns INTEGER NOT NULL, {cols})")
        stmts.append(f"CREATE INDEX IF NOT EXISTS {measurement}_time ON {measurement}(time_ns)")
    stmts += [
        """CREATE TABLE IF NOT EXISTS outbox (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             measurement TEXT NOT NULL, tags TEXT NOT NULL, fields TEXT NOT NULL, time_ns INTEGER NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS rejected (
             id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, tags TEXT NOT NULL, fields TEXT NOT NULL,
             time_ns INTEGER NOT NULL, reason TEXT NOT NULL, rejected_ns INTEGER NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ]
    return stmts


class Ledger:
    def __init__(self, path: Path, *, spool: bool = False, spool_max_rows: int = 1_000_000,
                 readonly: bool = False) -> None:
        self.path = Path(path)
        self.spool = spool
        self.spool_max_rows = spool_max_rows
        self._lock = threading.Lock()
        if readonly:
            # For readers (report, top) who may not write the state dir: members of the
            # service's group reading /var/lib/wattledger. No schema, no PRAGMA writes.
            # While the agent runs, the -wal and -shm files exist and a read-only
            # connection uses them. When it stopped cleanly they are gone, and a
            # read-only connection could not create the -shm: with no -wal there is
            # no writer, so the file is opened as immutable.
            immutable = "" if Path(f"{self.path}-wal").exists() else "&immutable=1"
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro{immutable}", uri=True, timeout=30,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._tx() as db:
            for stmt in _ddl():
                db.execute(stmt)
            # The outbox size is kept in meta (COUNT(*) costs ~6 ms per 100k rows: a tick's worth
            # of CPU during a long outage). Counted once here for a ledger that has no figure yet.
            db.execute("INSERT OR IGNORE INTO meta (key, value) SELECT 'outbox_rows', COUNT(*) FROM outbox")

    @classmethod
    def in_state_dir(cls, state_dir: Path, **kw: object) -> "Ledger":
        return cls(Path(state_dir) / LEDGER_FILE, **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writing ---------------------------------------------------------
    def append(self, points: Sequence[Point]) -> None:
        """Store one tick's points (and spool them when a remote sink is on)."""
        if not points:
            return
        with self._tx() as db:
            by_measurement: dict[str, list[Point]] = {}
            for p in points:
                by_measurement.setdefault(p.measurement, []).append(p)
            for measurement, pts in by_measurement.items():
                tags, fields = SCHEMA[measurement]
                key = REPLACE_KEYS.get(measurement)
                if key:
                    latest = {(p.time_ns, *(p.tags.get(k, "") for k in key)): p for p in pts}
                    pts = list(latest.values())
                    where = " AND ".join(["time_ns = ?"] + [f"{k} = ?" for k in key])
                    db.executemany(f"DELETE FROM {measurement} WHERE {where}", list(latest))
                cols = ("time_ns",) + tags + fields
                sql = f"INSERT INTO {measurement} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
                db.executemany(
                    sql,
                    [
                        (p.time_ns, *(p.tags.get(t, "") for t in tags), *(p.fields.get(f) for f in fields))
                        for p in pts
                    ],
                )
            if self.spool:
                db.executemany(
                    "INSERT INTO outbox (measurement, tags, fields, time_ns) VALUES (?, ?, ?, ?)",
                    [
                        (p.measurement, json.dumps(dict(p.tags), sort_keys=True), json.dumps(dict(p.fields)), p.time_ns)
                        for p in points
                    ],
                )
                self._bump(db, "outbox_rows", len(points))
                self._enforce_bound(db)

    def _enforce_bound(self, db: sqlite3.Connection) -> None:
        (count,) = db.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'outbox_rows'").fetchone()
        excess = count - self.spool_max_rows
        if excess > 0:
            gone = db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
            ).rowcount
            self._bump(db, "dropped", gone)
            self._bump(db, "outbox_rows", -gone)

    def _bump(self, db: sqlite3.Connection, key: str, n: int) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
            (key, str(n), n),
        )

    # -- the spool -------------------------------------------------------
    def pending(self, limit: int = 5000) -> Batch:
        """The oldest undelivered points, with their outbox ids."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, measurement, tags, fields, time_ns FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        batch = Batch()
        for row_id, measurement, tags, fields, time_ns in rows:
            batch.ids.append(row_id)
            batch.points.append(Point(measurement, json.loads(tags), json.loads(fields), time_ns))
        return batch

    def mark_delivered(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._tx() as db:
            # Count what left the outbox: an id the bound dropped meanwhile is not "delivered".
            gone = db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]).rowcount
            self._bump(db, "delivered", gone)
            self._bump(db, "outbox_rows", -gone)

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
            self._bump(db, "rejected", gone)
            self._bump(db, "outbox_rows", -gone)

    def spool_counts(self) -> dict[str, int]:
        """spooled (waiting now), and the lifetime delivered / dropped / rejected counts."""
        with self._lock:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        return {
            "spooled": int(meta.get("outbox_rows", 0)),
            "delivered": int(meta.get("delivered", 0)),
            "dropped": int(meta.get("dropped", 0)),
            "rejected": int(meta.get("rejected", 0)),
        }

    # -- small key/value state (idle baselines, cursors) -------------------
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- reading ---------------------------------------------------------
    def rows(
        self, measurement: str, since_ns: int | None = None, until_ns: int | None = None
    ) -> list[dict[str, Any]]:
        """Rows of one measurement in [since, until), as dicts with ``time_ns`` (SQLite values: int, float, str, None)."""
        tags, fields = SCHEMA[measurement]
        cols = ("time_ns",) + tags + fields
        where, args = [], []
        if since_ns is not None:
            where.append("time_ns >= ?")
            args.append(since_ns)
        if until_ns is not None:
            where.append("time_ns < ?")
            args.append(until_ns)
        sql = f"SELECT {', '.join(cols)} FROM {measurement}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_ns"
        with self._lock:
            return [dict(zip(cols, r)) for r in self._db.execute(sql, args).fetchall()]

    def hourly_sums(
        self,
        measurement: str,
        field: str,
        group_tags: Sequence[str],
        since_ns: int,
        until_ns: int,
        equal: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Sum of one field per UTC hour and tag set in [since, until), summed by SQLite.

        What InfluxDB's ``SUM(field) ... GROUP BY time(1h), tags`` gives; rows carry
        ``time_ns`` (the hour's start). Reports use it so a month of ticks is not
        loaded row by row.
        """
        tags, fields = SCHEMA[measurement]
        if field not in fields or any(t not in tags for t in [*group_tags, *(equal or {})]):
            raise ValueError(f"{measurement} has no field {field!r} or no such tags")
        hour = 3_600_000_000_000
        cols = ", ".join(group_tags)
        where = ["time_ns >= ?", "time_ns < ?", f"{field} IS NOT NULL"] + [f"{t} = ?" for t in equal or {}]
        sql = (f"SELECT (time_ns / {hour}) * {hour} AS hour_ns, {cols}, SUM({field}) FROM {measurement} "
               f"WHERE {' AND '.join(where)} GROUP BY hour_ns, {cols}")
        with self._lock:
            rows = self._db.execute(sql, [since_ns, until_ns, *(equal or {}).values()]).fetchall()
        return [dict(zip(("time_ns", *group_tags, field), r)) for r in rows]

    def latest_time(self, measurement: str) -> int | None:
        """The newest point's time in one measurement (None when it has none); uses the time index."""
        if measurement not in SCHEMA:
            raise ValueError(f"no measurement {measurement!r}")
        with self._lock:
            (newest,) = self._db.execute(f"SELECT MAX(time_ns) FROM {measurement}").fetchone()
        return None if newest is None else int(newest)

    def job_ticks(self, tag: str, since_ns: int, until_ns: int, equal: dict[str, str] | None = None
                  ) -> list[dict[str, Any]]:
        """Per user of one job tag: the ticks it was charged in, summed by SQLite (``report --job``).

        Each row: ``user``, ``first_ns`` (start of its first tick), ``last_ns`` (end of its last),
        ``active_s`` (its ticks' lengths), ``ticks``, ``host_j`` (every pool's energy in those
        ticks, on the same hosts), ``unused_j`` (``_idle``'s energy in them) and ``gpu_s_held``
        (the length of each tick x GPU it was charged on). ``equal``: more tags its rows must have.
        """
        where = " AND ".join(f"j.{t} = ?" for t in equal or {})
        job_rows = (f"SELECT DISTINCT j.user, j.host, j.time_ns FROM wl_job j WHERE j.job = ? AND j.time_ns >= ? "
                    f"AND j.time_ns < ?{' AND ' + where if where else ''}")
        args = [tag, since_ns, until_ns, *(equal or {}).values()]
        sql = f"""
            WITH t AS ({job_rows}),
            n AS (SELECT time_ns, host, MAX(interval_s) AS dt, SUM(energy_j) AS e FROM wl_node
                  WHERE time_ns IN (SELECT time_ns FROM t) GROUP BY time_ns, host),
            i AS (SELECT time_ns, host, SUM(energy_j) AS e FROM wl_job
                  WHERE job = '_idle' AND time_ns IN (SELECT time_ns FROM t) GROUP BY time_ns, host)
            SELECT t.user, MIN(t.time_ns - CAST(n.dt * 1e9 AS INTEGER)), MAX(t.time_ns), SUM(n.dt), COUNT(*),
                   SUM(n.e), SUM(COALESCE(i.e, 0))
            FROM t JOIN n ON n.time_ns = t.time_ns AND n.host = t.host
            LEFT JOIN i ON i.time_ns = t.time_ns AND i.host = t.host
            GROUP BY t.user"""
        gpu = (f"SELECT j.user, SUM(n.interval_s) FROM wl_job j JOIN wl_node n ON n.time_ns = j.time_ns "
               f"AND n.host = j.host AND n.component = j.component AND n.device = j.device "
               f"WHERE j.job = ? AND j.component = 'gpu' AND j.time_ns >= ? AND j.time_ns < ?"
               f"{' AND ' + where if where else ''} GROUP BY j.user")
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            gpu_s = dict(self._db.execute(gpu, args).fetchall())
        cols = ("user", "first_ns", "last_ns", "active_s", "ticks", "host_j", "unused_j")
        return [{**dict(zip(cols, r)), "gpu_s_held": float(gpu_s.get(r[0]) or 0.0)} for r in rows]
