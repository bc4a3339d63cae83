"""A damaged ledger file: moved aside under a timestamped name, and its undelivered points read back.

``move_aside`` renames ``ledger.sqlite3`` (with its ``-wal``, which may hold
the newest commits) to ``ledger.sqlite3.corrupt-<UTC time>`` in the same
directory, so nothing is deleted and an admin can run ``sqlite3 FILE
.recover`` on it. ``read_outbox`` then reads what it can of that file's
outbox, range by range, skipping ranges on damaged pages; the agent appends
those points to its fresh ledger (tables and outbox), so an InfluxDB outage
and a damaged file together still lose only what was on the damaged pages.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from wattledger.model.points import Point

RANGE = 1000  # outbox ids read per query: a damaged page loses at most the ranges that touch it


def move_aside(path: Path, now_s: float | None = None) -> Path:
    """Rename the ledger (and its -wal) aside; drop its -shm (an index SQLite rebuilds). The new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now_s is None else now_s))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    if path.exists():
        os.rename(path, target)
    wal = Path(f"{path}-wal")
    if wal.exists():
        os.rename(wal, Path(f"{target}-wal"))
    shm = Path(f"{path}-shm")
    if shm.exists():
        shm.unlink()
    return target


def _ids(db: sqlite3.Connection) -> tuple[int, int] | None:
    bounds = []
    for sql in ("SELECT MIN(id) FROM outbox", "SELECT MAX(id) FROM outbox",
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"):  # MIN and MAX apart: each off the index
        try:
            row = db.execute(sql).fetchone()
        except sqlite3.DatabaseError:
            row = None
        bounds.append(None if row is None or row[0] is None else int(row[0]))
    last = bounds[1] if bounds[1] is not None else bounds[2]
    return None if last is None else (bounds[0] or 0, last)


def read_outbox(path: Path) -> Iterator[tuple[int | None, list[Point]]]:
    """The readable outbox rows of a damaged ledger, grouped by tick, oldest first."""
    try:
        db = sqlite3.connect(str(path), timeout=5)
    except sqlite3.Error:
        return
    try:
        span = _ids(db)
        if span is None:
            return
        tick: list[Point] = []
        current: int | None = None
        for lo in range(span[0], span[1] + 1, RANGE):
            try:
                rows = db.execute("SELECT measurement, tags, fields, time_ns, tick FROM outbox WHERE id >= ? AND "
                                  "id < ? ORDER BY id", (lo, lo + RANGE)).fetchall()
            except sqlite3.DatabaseError:
                continue  # a damaged page: skip this range, keep reading
            for measurement, tags, fields, time_ns, t in rows:
                try:
                    p = Point(str(measurement), json.loads(tags), json.loads(fields), int(time_ns))
                except (TypeError, ValueError):
                    continue
                if tick and t != current:
                    yield current, tick
                    tick = []
                current = t
                tick.append(p)
        if tick:
            yield current, tick
    finally:
        db.close()
