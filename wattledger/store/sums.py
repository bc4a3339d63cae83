"""Exact sums of an additive field over a range, read at the coarsest resolution that covers it.

A report needs energy per tag set and *per carbon-intensity hour*, but over a
year that is millions of hour cells. The caller instead names a class for
each hour (``hour_class``: hours with the same intensity and PUE share one),
and gets one sum per (class, tag values). Days whose 24 hours are all in one
class are read from the day table (one row per series and day), other days
from hours, the ragged edges from minutes and raw ticks (store/plan.py). With
one class per hour this is the plain hourly sum. Every figure is a sum of
integer micro-units, so it equals the raw ticks' sum whatever the resolution.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from wattledger.model.points import SCHEMA
from wattledger.model.units import HOUR_NS
from wattledger.store import rollup
from wattledger.store.plan import Plan, Segment, Span, plan
from wattledger.store.schema import DAY, HOUR, LEVELS, MICRO, Level, level_table, micro, raw_table, series_table

HourClass = Callable[[int], Hashable]


@dataclass
class Sums:
    """Sums per (class, tag values), the hours that had a nonzero sum, and the range actually covered."""

    cells: list[tuple[int, tuple[str, ...], float]]  # (an hour of the class, tag values, sum in field units)
    hours: set[int] = field(default_factory=set)
    plan: Plan | None = None


def spans(db: sqlite3.Connection, m: str) -> tuple[list[Span], int]:
    """Each rollup level's complete span (coarsest first) and the oldest kept raw tick.

    A level that was never pruned is complete from its first row (nothing was
    before it): starting the span there keeps a plan from walking back to 1970.
    """
    out = []
    for level in reversed(LEVELS):
        table = level_table(m, level)
        (first,) = db.execute(f"SELECT MIN(bucket_ns) FROM {table}").fetchone()
        kept = max(rollup.kept(db, table), 0 if first is None else int(first))
        out.append(Span(level, kept, rollup.folded(db, table)))
    return out, rollup.kept(db, raw_table(m))


def _series_tags(db: sqlite3.Connection, m: str, equal: Mapping[str, str]) -> dict[int, dict[str, str]]:
    tags = SCHEMA[m][0]
    out = {}
    for row in db.execute(f"SELECT id, {', '.join(tags)} FROM {series_table(m)}"):
        t = dict(zip(tags, row[1:]))
        if all(t.get(k) == v for k, v in equal.items()):
            out[int(row[0])] = t
    return out


def _segment_rows(db: sqlite3.Connection, m: str, col: str, seg: Segment, ids: Sequence[int] | None
                  ) -> list[tuple[int, int, int, int]]:
    """(bucket or hour, series, sum, hour_bits) of one segment; hour_bits only from the day table."""
    if seg.level is None:
        table, t = raw_table(m), "time_ns"
    else:
        table, t = level_table(m, seg.level), "bucket_ns"
    only = f" AND series IN ({', '.join(str(i) for i in ids)})" if ids is not None else ""
    if seg.level is DAY:
        sql = (f"SELECT bucket_ns, series, {col}, hour_bits FROM {table} WHERE bucket_ns >= ? AND "
               f"bucket_ns < ?{only} AND {col} IS NOT NULL")
    else:
        sql = (f"SELECT ({t} / {HOUR_NS}) * {HOUR_NS}, series, SUM({col}), 0 FROM {table} WHERE {t} >= ? AND "
               f"{t} < ?{only} AND {col} IS NOT NULL GROUP BY 1, 2")
    return db.execute(sql, (seg.lo_ns, seg.hi_ns)).fetchall()


def _one_class_days(hour_class: HourClass | None) -> dict[Level, Callable[[int], bool]]:
    """Days may be read whole only when their 24 hours are in one class."""
    def day_ok(day_ns: int) -> bool:
        if hour_class is None:
            return False
        first = hour_class(day_ns)
        return all(hour_class(day_ns + h * HOUR_NS) == first for h in range(1, 24))
    return {DAY: day_ok}


def class_sums(db: sqlite3.Connection, m: str, field_name: str, group_tags: Sequence[str], since_ns: int,
               until_ns: int, equal: Mapping[str, str] | None = None, hour_class: HourClass | None = None) -> Sums:
    """Sum of ``field_name`` per (hour class, ``group_tags`` values) in [since, until) (see the module doc).

    ``hour_class`` None: each hour is its own class (hourly sums).
    """
    col = micro(field_name)
    level_spans, raw_kept = spans(db, m)
    p = plan(since_ns, until_ns, level_spans, raw_kept, _one_class_days(hour_class))
    tags = _series_tags(db, m, equal or {})
    ids = sorted(tags) if equal and len(tags) < 30000 else None
    cls_of: HourClass = hour_class or (lambda h: h)
    acc: dict[tuple[Hashable, tuple[str, ...]], int] = {}
    rep: dict[Hashable, int] = {}
    hours: set[int] = set()
    for seg in p.segments:
        for bucket, series, total, bits in _segment_rows(db, m, col, seg, ids):
            if series not in tags:
                continue
            cls = cls_of(bucket)
            rep[cls] = min(rep.get(cls, bucket), bucket)
            key = (cls, tuple(tags[series].get(t, "") for t in group_tags))
            acc[key] = acc.get(key, 0) + total
            if total and seg.level is DAY:
                hours.update(bucket + h * HOUR_NS for h in range(24) if bits >> h & 1)
            elif total:
                hours.add(bucket)
    cells = [(rep[cls], values, total / MICRO) for (cls, values), total in acc.items()]
    return Sums(cells, hours, p)

