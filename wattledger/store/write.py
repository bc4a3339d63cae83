"""Writing quantized points into the tables (inside the caller's transaction): raw rows, the ledger's own
``job_tick`` rows (store/jobtick.py), late rollups, summaries."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from wattledger.model.points import ADDITIVE, SCHEMA, WL_CARBON, WL_PUE, Point
from wattledger.store import export, jobtick, rollup, summary
from wattledger.store.quantize import Quantized
from wattledger.store.schema import (DERIVED, LEVELS, additive, level_table, int_cols, plain_fields, raw_table,
                                     series_table, tags_of)

# Series that hold one value per (key tags, time): a newer point replaces the stored
# one, exactly as a same-tags same-time point does in InfluxDB: a re-synced or
# corrected intensity replaces the old figure of the same kind, and a corrected
# PUE replaces the old one. ``kind`` is a tag, so a forecast and the later actual
# for one hour are two rows here as in InfluxDB; readers prefer the actual
# (docs/design-notes.md), and a late forecast can never replace an actual.
REPLACE_KEYS: dict[str, tuple[str, ...]] = {WL_CARBON: ("zone", "provider", "kind"), WL_PUE: ("site",)}


class SeriesIds:
    """Tag set -> series id, per measurement, cached. Forget it when a transaction rolls back."""

    def __init__(self) -> None:
        self._ids: dict[str, dict[tuple[str, ...], int]] = {}

    def clear(self) -> None:
        self._ids.clear()

    def get(self, db: sqlite3.Connection, m: str, key: tuple[str, ...], create: bool = True) -> int | None:
        """The id of the series with these tag values (SCHEMA order), made when new and ``create``."""
        cache = self._ids.setdefault(m, {})
        found = cache.get(key)
        if found is not None:
            return found
        names = tags_of(m)
        where = " AND ".join(f"{t} = ?" for t in names)
        row = db.execute(f"SELECT id FROM {series_table(m)} WHERE {where}", key).fetchone()
        if row is None and create:
            cur = db.execute(f"INSERT INTO {series_table(m)} ({', '.join(names)}) VALUES "
                             f"({', '.join('?' * len(names))})", key)
            row = (cur.lastrowid,)
        if row is None:
            return None
        cache[key] = int(row[0])
        return cache[key]


def _sum_or_null(c: str) -> str:
    return (f"{c} = CASE WHEN {c} IS NULL AND excluded.{c} IS NULL THEN NULL "
            f"ELSE IFNULL({c}, 0) + IFNULL(excluded.{c}, 0) END")


def series_insert_sql(m: str) -> str:
    """Insert raw rows; a second point of the same series and time adds its sums (nothing is dropped)."""
    cols = ["time_ns", "series", *int_cols(m), *plain_fields(m)]
    sets = [_sum_or_null(c) for c in int_cols(m)] + [f"{f} = excluded.{f}" for f in plain_fields(m)]
    return (f"INSERT INTO {raw_table(m)} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (time_ns, series) DO UPDATE SET {', '.join(sets)}")


def _write_series(db: sqlite3.Connection, ids: SeriesIds, m: str, items: Sequence[Quantized]) -> None:
    rows, late = [], []
    mark = rollup.folded(db, level_table(m, LEVELS[0]))
    fields, plain = additive(m), plain_fields(m)
    for q in items:
        p = q.point
        sid = ids.get(db, m, q.tags)
        values = [q.ints.get(f) for f in fields]
        rows.append([p.time_ns, sid, *values, *[p.fields.get(f) for f in plain]])
        if p.time_ns < mark:
            late.append((p.time_ns, int(sid or 0), values))
    rows.sort(key=lambda r: (r[0], r[1]))  # in key order: appended pages fill up (~35 bytes a row, not ~45)
    db.executemany(series_insert_sql(m), rows)
    if late:
        rollup.add_late(db, m, late)
        export.note_late(db, m, [t for t, _, _ in late])


def _write_plain(db: sqlite3.Connection, m: str, pts: Sequence[Point]) -> None:
    tags, fields = SCHEMA[m]
    key = REPLACE_KEYS.get(m)
    if key:
        latest = {(p.time_ns, *(p.tags.get(k, "") for k in key)): p for p in pts}
        pts = list(latest.values())
        where = " AND ".join(["time_ns = ?"] + [f"{k} = ?" for k in key])
        db.executemany(f"DELETE FROM {m} WHERE {where}", list(latest))
    cols = ("time_ns",) + tags + fields
    db.executemany(f"INSERT INTO {m} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                   [(p.time_ns, *(p.tags.get(t, "") for t in tags), *(p.fields.get(f) for f in fields))
                    for p in pts])


def write_points(db: sqlite3.Connection, ids: SeriesIds, items: Sequence[Quantized]) -> None:
    """One write's points (whole ticks) into their tables with their ``job_tick`` rows, late rows into folded
    rollups, wl_job and wl_embodied rows into the summaries."""
    by_measurement: dict[str, list[Quantized]] = {}
    for q in items:
        if q.point.measurement not in SCHEMA:
            raise ValueError(f"unknown measurement {q.point.measurement!r}")
        by_measurement.setdefault(q.point.measurement, []).append(q)
    for m, group in by_measurement.items():
        if m in ADDITIVE:
            _write_series(db, ids, m, group)
        else:
            _write_plain(db, m, [q.point for q in group])
    derived = jobtick.derive(items)
    for m in DERIVED:
        group = [q for q in derived if q.point.measurement == m]
        if group:
            _write_series(db, ids, m, group)
    summary.update(db, items)
