"""Making a ledger file ready for writing: the current tables, columns added by SCHEMA, and the one-time
move from layout 1 (one table per measurement, tags as text in every row, floats) to layout 2.

The move takes an hour of ticks per transaction and deletes what it moved in
the same transaction, so an interrupted upgrade resumes where it stopped and
never doubles a row. The moved rows are quantized like new ones (jobs
apportioned to their pool's energy). At the end the file is VACUUMed once,
which gives back the old tables' space and turns on incremental vacuum.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wattledger.model.points import SCHEMA, Point
from wattledger.model.units import HOUR_NS
from wattledger.store import schema
from wattledger.store.quantize import quantize
from wattledger.store.write import SeriesIds, write_points

log = logging.getLogger("wattledger.ledger")
OLD_PREFIX = "v1_"


@contextmanager
def _tx(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _old_tables(db: sqlite3.Connection) -> list[str]:
    names = [f"{OLD_PREFIX}{m}" for m in schema.series_measurements()]
    return [n for n in names if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                           (n,)).fetchone()]


def prepare(db: sqlite3.Connection, path: Path) -> None:
    """Create or upgrade the tables; move layout-1 rows if there are any."""
    with _tx(db):
        if schema.is_layout_1(db):
            log.warning("ledger %s: upgrading to the rollup layout (one time; the agent resumes it if stopped)",
                        path)
            for m in schema.series_measurements():
                if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (m,)).fetchone():
                    db.execute(f"ALTER TABLE {m} RENAME TO {OLD_PREFIX}{m}")
        for stmt in schema.ddl():
            db.execute(stmt)
        schema.add_missing_columns(db)
        for m in schema.series_measurements():
            drop, create = schema.view_ddl(m)
            found = db.execute("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", (m,)).fetchone()
            if found is None or found[0] != create:
                db.execute(drop)
                db.execute(create)
        # Nothing is written when all is current, so an existing ledger opens on a full disk.
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('layout', ?)", (schema.LAYOUT,))
        db.execute("UPDATE meta SET value = ? WHERE key = 'layout' AND value != ?", (schema.LAYOUT, schema.LAYOUT))
        # The outbox size is kept in meta (COUNT(*) costs ~6 ms per 100k rows: a tick's worth of
        # CPU during a long outage). Counted once here for a ledger that has no figure yet.
        db.execute("INSERT OR IGNORE INTO meta (key, value) SELECT 'outbox_rows', COUNT(*) FROM outbox")
    old = _old_tables(db)
    if old:
        rows = sum(int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in old)
        log.warning("ledger %s: moving %d rows to the new layout; about %.0f minute(s) at ~50,000 rows a second, "
                    "before the agent's first tick (interrupted, it resumes where it stopped)", path, rows,
                    rows / 50_000 / 60)
        _move(db, old, path)


def _old_points(db: sqlite3.Connection, table: str, lo: int, hi: int) -> list[Point]:
    m = table[len(OLD_PREFIX):]
    tags, fields = SCHEMA[m]
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    tags = tuple(t for t in tags if t in have)
    fields = tuple(f for f in fields if f in have)
    out = []
    for r in db.execute(f"SELECT time_ns, {', '.join(tags + fields)} FROM {table} WHERE time_ns >= ? AND "
                        "time_ns < ?", (lo, hi)):
        t = dict(zip(tags, (str(v or "") for v in r[1:1 + len(tags)])))
        f = {k: float(v) for k, v in zip(fields, r[1 + len(tags):]) if v is not None}
        out.append(Point(m, t, f, int(r[0])))
    return out


def _move(db: sqlite3.Connection, old: list[str], path: Path) -> None:
    ids, moved = SeriesIds(), 0
    while True:
        starts = [db.execute(f"SELECT MIN(time_ns) FROM {t}").fetchone()[0] for t in old]
        known = [s for s in starts if s is not None]
        if not known:
            break
        lo = min(known)
        hi = lo - lo % HOUR_NS + HOUR_NS
        try:
            with _tx(db):
                points = [p for t in old for p in _old_points(db, t, lo, hi)]
                write_points(db, ids, quantize(points))
                for t in old:
                    db.execute(f"DELETE FROM {t} WHERE time_ns < ?", (hi,))
        except BaseException:
            ids.clear()
            raise
        moved += len(points)
    with _tx(db):
        for t in old:
            db.execute(f"DROP TABLE {t}")
    log.warning("ledger %s: upgraded, %d rows moved; compacting the file once", path, moved)
    try:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")
    except sqlite3.Error as e:  # e.g. no room for the copy VACUUM makes: the ledger works without it
        log.warning("ledger %s: VACUUM after the upgrade failed (%s); the old tables' space is reused, not "
                    "returned", path, e)
