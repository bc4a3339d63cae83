"""Rollups: folding raw rows into minutes, minutes into hours, hours into days; pruning what was folded.

Each fold is one SQL statement, generic over the additive fields of the
measurement (schema.int_cols), run inside the caller's transaction together
with the move of its watermark, so a crash either did the whole fold and moved
the watermark or did neither: nothing is lost or counted twice.

Watermarks (in ``meta``):

- ``folded:<table>`` for each rollup table: every bucket before it is final
  (all raw rows with earlier times are in it). Folding moves it forward.
- ``kept:<table>`` for raw and rollup tables: rows before it were pruned.
  Rows are pruned only below the next coarser table's ``folded`` mark, so
  every instant is always held, complete, at some resolution.

A raw row that arrives with a time below a ``folded`` mark (a wall clock
stepped back) is added to the already-folded buckets by ``add_late`` in the
same transaction as the raw row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from wattledger.model.units import HOUR_NS
from wattledger.store.schema import DAY, LEVELS, Level, extrema, level_table, int_cols, raw_table

_SUM_NULLS = "CASE WHEN {c} IS NULL AND excluded.{c} IS NULL THEN NULL ELSE IFNULL({c}, 0) + IFNULL(excluded.{c}, 0) END"
# MIN/MAX of two values where either may be NULL (SQLite's scalar MIN(NULL, x) is NULL).
_EXTREME = "CASE WHEN {c} IS NULL THEN excluded.{c} WHEN excluded.{c} IS NULL THEN {c} ELSE {agg}({c}, excluded.{c}) END"


def _bits_expr(m: str, time_col: str) -> str:
    """The hour-of-day bit of a row with energy (for the day table's ``hour_bits``)."""
    energy = "energy_uj" if "energy_uj" in int_cols(m) else "1"
    return f"CASE WHEN IFNULL({energy}, 0) != 0 THEN 1 << (({time_col} / {HOUR_NS}) % 24) ELSE 0 END"


def upsert_tail(m: str, level: Level) -> str:
    """ON CONFLICT clause that adds a new partial sum into an existing bucket row."""
    sets = ["rows = rows + excluded.rows"] + [f"{c} = {_SUM_NULLS.format(c=c)}" for c in int_cols(m)]
    sets += [f"{e.column} = {_EXTREME.format(c=e.column, agg=e.agg)}" for e in extrema(m)]
    if level is DAY:
        sets.append("hour_bits = hour_bits | excluded.hour_bits")
    return f" ON CONFLICT (bucket_ns, series) DO UPDATE SET {', '.join(sets)}"


def source_of(level: Level) -> Level | None:
    """The table a level is folded from (None: the raw table)."""
    i = LEVELS.index(level)
    return LEVELS[i - 1] if i else None


def fold_sql(m: str, level: Level) -> str:
    """INSERT the sums of the source rows in [?, ?) into ``level``'s buckets (adding to existing ones)."""
    src = source_of(level)
    cols = int_cols(m)
    table, time_col = (raw_table(m), "time_ns") if src is None else (level_table(m, src), "bucket_ns")
    count = "COUNT(*)" if src is None else "SUM(rows)"
    names = ["bucket_ns", "series", "rows", *cols, *(e.column for e in extrema(m))]
    values = [f"({time_col} / {level.size_ns}) * {level.size_ns}", "series", count, *(f"SUM({c})" for c in cols),
              *(f"{e.agg}({e.sql() if src is None else e.column})" for e in extrema(m))]
    if level is DAY:
        names.append("hour_bits")
        values.append(f"SUM({_bits_expr(m, time_col)})")  # one source row per (hour, series): the sum is an OR
    return (f"INSERT INTO {level_table(m, level)} ({', '.join(names)}) SELECT {', '.join(values)} FROM {table} "
            f"WHERE {time_col} >= ? AND {time_col} < ? GROUP BY 1, 2" + upsert_tail(m, level))


def add_late(db: sqlite3.Connection, m: str, rows: Sequence[tuple[int, int, Sequence[int | None]]]) -> None:
    """Raw rows (time_ns, series, micro values) written after their bucket was folded: add them to every
    level whose ``folded`` mark is past them."""
    cols = int_cols(m)
    for level in LEVELS:
        mark = folded(db, level_table(m, level))
        late = [r for r in rows if r[0] < mark]
        if not late:
            return  # coarser levels are folded no further than finer ones
        ext = extrema(m)
        names = ["bucket_ns", "series", "rows", *cols, *(e.column for e in ext)] + (
            ["hour_bits"] if level is DAY else [])
        args = []
        for t, series, values in late:
            row = [level.floor(t), series, 1, *values, *(e.value(m, t, values) for e in ext)]
            if level is DAY:
                energy = values[cols.index("energy_uj")] if "energy_uj" in cols else 1
                row.append(1 << ((t // HOUR_NS) % 24) if energy else 0)
            args.append(row)
        db.executemany(f"INSERT INTO {level_table(m, level)} ({', '.join(names)}) VALUES "
                       f"({', '.join('?' * len(names))})" + upsert_tail(m, level), args)


# -- watermarks ----------------------------------------------------------------------------------


def _mark(db: sqlite3.Connection, key: str, default: int) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else int(row[0])


def _set_mark(db: sqlite3.Connection, key: str, value: int) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               (key, str(value)))


def folded(db: sqlite3.Connection, table: str) -> int:
    """Buckets of ``table`` before this time are final (0: nothing folded yet)."""
    return _mark(db, f"folded:{table}", 0)


def kept(db: sqlite3.Connection, table: str) -> int:
    """Rows of ``table`` before this time were pruned (0: none)."""
    return _mark(db, f"kept:{table}", 0)


def set_folded(db: sqlite3.Connection, table: str, value: int) -> None:
    _set_mark(db, f"folded:{table}", value)


def set_kept(db: sqlite3.Connection, table: str, value: int) -> None:
    _set_mark(db, f"kept:{table}", value)


def fold(db: sqlite3.Connection, m: str, level: Level, lo: int, hi: int) -> int:
    """Fold source rows in [lo, hi) into ``level`` and move its mark to ``hi``; returns rows written."""
    n = db.execute(fold_sql(m, level), (lo, hi)).rowcount
    set_folded(db, level_table(m, level), hi)
    return max(n, 0)


def prune(db: sqlite3.Connection, table: str, time_col: str, lo: int, hi: int) -> int:
    """Delete rows of ``table`` with time in [lo, hi) and mark ``hi`` as the oldest kept; returns rows deleted."""
    n = db.execute(f"DELETE FROM {table} WHERE {time_col} >= ? AND {time_col} < ?", (lo, hi)).rowcount
    set_kept(db, table, hi)
    return max(n, 0)
