"""The ledger's rollups as InfluxDB points for a fleet's tiers (model/tiers.py), inside the caller's transaction.

A fleet's InfluxDB keeps raw ticks for days, minute sums for months and hour
sums for years (docs/fleet.md). Those sums are not computed again by InfluxDB
(continuous queries, tasks): they are the ledger's own exact rollups
(store/rollup.py), read per bucket, with the tags the tier keeps (the device
summed over, the job of tagged work left out at hours), and spooled through
the same outbox as the raw ticks. So the figures in every tier are the
ledger's figures: a sum of integer micro-units (nano-grams for embodied
carbon), sent in joules and grams.

A bucket is exported once it is *folded* (final): the watermark
``exported:<level table>`` in ``meta`` follows ``folded:``, in the same
transaction as the spooling. A raw row that arrives late (a wall clock set
back) and lands in an exported bucket marks that bucket in ``export_dirty``
(``note_late``, called where the row is written); the next export sends the
bucket's new totals again, which overwrite the old points in InfluxDB
(same series, same timestamp).

Points are stamped with their bucket's start, so InfluxQL's ``GROUP BY
time(1h)`` puts a minute in the hour its raw ticks are in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from wattledger.model.points import ADDITIVE, SCHEMA, WL_NODE, Point
from wattledger.model.tiers import reserved_only, tags_at
from wattledger.store import rollup
from wattledger.store.schema import (EXPORT_DIRTY, HOUR, MINUTE, Level, additive, int_cols, level_table, scale,
                                     series_table)

TIER_OF: dict[Level, str] = {MINUTE: "minutes", HOUR: "hours"}
# The data model's rolled-up measurements (those with additive fields: wl_node, wl_job, wl_embodied; not the
# ledger's own job_tick, which is never sent), wl_node first: a reader that sees a bucket's node point sees
# its jobs' in the same spooled write.
EXPORTED = tuple(sorted((m for m in SCHEMA if m in ADDITIVE), key=lambda m: m != WL_NODE))
DIRTY = EXPORT_DIRTY  # exported buckets a late raw row changed (level name, bucket): sent again


def _mark_key(m: str, level: Level) -> str:
    return f"exported:{level_table(m, level)}"


def exported(db: sqlite3.Connection, m: str, level: Level) -> int | None:
    """Buckets of ``level`` before this time were spooled (None: export never started on this ledger)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (_mark_key(m, level),)).fetchone()
    return None if row is None else int(row[0])


def set_exported(db: sqlite3.Connection, m: str, level: Level, value: int) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               (_mark_key(m, level), str(value)))


def _tag_expr(tier: str, m: str, tag: str) -> str:
    if tag in reserved_only(tier, m):
        return f"CASE WHEN substr(s.{tag}, 1, 1) = '_' THEN s.{tag} ELSE '' END"
    return f"s.{tag}"


def bucket_sql(m: str, level: Level, where: str) -> str:
    """Sums per (bucket, tags the tier keeps) of ``level``'s rows matching ``where`` (on ``r.bucket_ns``)."""
    tier = TIER_OF[level]
    tags = tags_at(tier, m)
    sums = ", ".join(f"SUM(r.{c})" for c in int_cols(m))
    cols = ", ".join(_tag_expr(tier, m, t) for t in tags)
    groups = ", ".join(str(i) for i in range(1, len(tags) + 2))
    return (f"SELECT r.bucket_ns, {cols}, {sums} FROM {level_table(m, level)} r JOIN {series_table(m)} s "
            f"ON s.id = r.series WHERE {where} GROUP BY {groups}")


def _points(m: str, level: Level, rows: Iterable[Sequence[Any]]) -> list[Point]:
    tier = TIER_OF[level]
    tags, fields = tags_at(tier, m), additive(m)
    out = []
    for row in rows:
        t = {k: str(v) for k, v in zip(tags, row[1:1 + len(tags)]) if v}
        f = {name: int(v) / scale(name) for name, v in zip(fields, row[1 + len(tags):]) if v is not None}
        if f:
            out.append(Point(m, t, f, int(row[0]), tier))
    return out


def points_between(db: sqlite3.Connection, level: Level, lo_ns: int, hi_ns: int) -> list[Point]:
    """Every series measurement's ``level`` buckets in [lo, hi) as tier points (wl_node first)."""
    out: list[Point] = []
    for m in EXPORTED:
        out += _points(m, level, db.execute(bucket_sql(m, level, "r.bucket_ns >= ? AND r.bucket_ns < ?"),
                                            (lo_ns, hi_ns)))
    return out


def points_at(db: sqlite3.Connection, level: Level, buckets: Sequence[int]) -> list[Point]:
    """The tier points of these ``level`` buckets (whole buckets: all their series)."""
    out: list[Point] = []
    marks = ", ".join("?" * len(buckets))
    for m in EXPORTED:
        out += _points(m, level, db.execute(bucket_sql(m, level, f"r.bucket_ns IN ({marks})"), list(buckets)))
    return out


def note_late(db: sqlite3.Connection, m: str, times_ns: Sequence[int]) -> None:
    """Raw rows written after their buckets were exported: mark those buckets to be sent again."""
    for level in TIER_OF:
        mark = exported(db, m, level)
        if mark is None:
            continue
        late = {level.floor(t) for t in times_ns if t < mark}
        if late:
            db.executemany(f"INSERT OR IGNORE INTO {DIRTY} (level, bucket_ns) VALUES (?, ?)",
                           [(level.name, b) for b in sorted(late)])


def dirty(db: sqlite3.Connection, level: Level, limit: int) -> list[int]:
    return [int(r[0]) for r in db.execute(f"SELECT bucket_ns FROM {DIRTY} WHERE level = ? ORDER BY bucket_ns "
                                          "LIMIT ?", (level.name, limit))]


def clear_dirty(db: sqlite3.Connection, level: Level, buckets: Sequence[int]) -> None:
    db.executemany(f"DELETE FROM {DIRTY} WHERE level = ? AND bucket_ns = ?", [(level.name, b) for b in buckets])


def next_bucket(db: sqlite3.Connection, level: Level, since_ns: int) -> int:
    """The first ``level`` bucket at or after ``since_ns`` that holds a row (a gap costs no steps)."""
    found = [db.execute(f"SELECT MIN(bucket_ns) FROM {level_table(m, level)} WHERE bucket_ns >= ?",
                        (since_ns,)).fetchone()[0] for m in EXPORTED]
    return min((int(f) for f in found if f is not None), default=max(since_ns, ready(db, level)))


def ready(db: sqlite3.Connection, level: Level) -> int:
    """Buckets of ``level`` before this time are final in every series measurement (folded)."""
    return min(rollup.folded(db, level_table(m, level)) for m in EXPORTED)
