"""Exact sums of an additive field over a range, read at the coarsest resolution that covers it.

A report needs energy per tag set and *per carbon-intensity hour*, but over a
year that is millions of hour cells. The caller instead names a class for
each hour (``hour_class``: hours with the same intensity and PUE share one),
and gets one sum per (class, tag values). Days whose 24 hours are all in one
class are read from the day table (one row per series and day), other days
from hours, the ragged edges from minutes and raw ticks (store/plan.py). With
one class per hour this is the plain hourly sum. Every figure is a sum of
integers (store/schema.py ``scale``), so it equals the raw ticks' sum whatever the resolution.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wattledger.model.units import HOUR_NS
from wattledger.store import rollup
from wattledger.store.plan import Plan, Segment, Span, plan
from wattledger.store.schema import (DAY, LEVELS, Level, additive, extrema, int_col, int_cols, level_table,
                                     raw_table, scale, series_table, tags_of)

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


def _series_tags(db: sqlite3.Connection, m: str, equal: Mapping[str, str], ids: Iterable[int] | None = None
                 ) -> dict[int, dict[str, str]]:
    """id -> tags of the series whose tags equal ``equal`` (among ``ids``, when given: a short window's series
    are a few hundred of the tens of thousands a year makes)."""
    tags = tags_of(m)
    only = "" if ids is None else f" WHERE id IN ({', '.join(str(int(i)) for i in ids)})"
    out = {}
    for row in db.execute(f"SELECT id, {', '.join(tags)} FROM {series_table(m)}{only}"):
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
    col = int_col(field_name)
    level_spans, raw_kept = spans(db, m)
    p = plan(since_ns, until_ns, level_spans, raw_kept, _one_class_days(hour_class))
    # With a filter, the matching series first (and only their rows); without, the rows first and the tags
    # of the series they name.
    tags = _series_tags(db, m, equal) if equal else None
    ids = sorted(tags) if tags is not None and len(tags) < 30000 else None
    rows = [(seg.level is DAY, r) for seg in p.segments for r in _segment_rows(db, m, col, seg, ids)]
    if tags is None:
        tags = _series_tags(db, m, {}, {r[1] for _, r in rows})
    values_of = {sid: tuple(t.get(g, "") for g in group_tags) for sid, t in tags.items()}
    class_of = _Classes(hour_class)
    acc: dict[tuple[Hashable, tuple[str, ...]], int] = {}
    hours: set[int] = set()
    day_bits: dict[int, int] = {}  # a day read whole -> the hours that had energy (OR of its series' bits)
    for whole_day, (bucket, series, total, bits) in rows:
        values = values_of.get(series)
        if values is None:
            continue
        key = (class_of(bucket), values)
        acc[key] = acc.get(key, 0) + total
        if total and whole_day:
            day_bits[bucket] = day_bits.get(bucket, 0) | bits
        elif total:
            hours.add(bucket)
    for day, bits in day_bits.items():
        hours.update(day + h * HOUR_NS for h in range(24) if bits >> h & 1)
    per_unit = scale(field_name)
    cells = [(class_of.rep[cls], values, total / per_unit) for (cls, values), total in acc.items()]
    return Sums(cells, hours, p)


class _Classes:
    """Each bucket's hour class, asked once per bucket; ``rep``: the first bucket seen of each class."""

    def __init__(self, hour_class: HourClass | None) -> None:
        self._of: HourClass = hour_class or (lambda h: h)
        self._known: dict[int, Hashable] = {}
        self.rep: dict[Hashable, int] = {}

    def __call__(self, bucket: int) -> Hashable:
        if bucket in self._known:
            return self._known[bucket]
        cls = self._known[bucket] = self._of(bucket)
        self.rep[cls] = min(self.rep.get(cls, bucket), bucket)
        return cls



@dataclass
class Totals:
    """One series' sums over a range: rows (ticks, for ``job_tick``), each additive field (as stored: integers,
    ``sum`` gives the field's units) and each extremum (store/schema.py EXTREMA; None: no rows)."""

    rows: int = 0
    ints: dict[str, int] = field(default_factory=dict)
    extrema: dict[str, int | None] = field(default_factory=dict)

    def sum(self, f: str) -> float:
        return self.ints.get(f, 0) / scale(f)

    def add(self, m: str, rows: int, ints: Mapping[str, int | None], ext: Mapping[str, int | None]) -> None:
        """Fold in another range's (or series') rows, integer sums and extrema of measurement ``m``."""
        self.rows += rows
        for f, v in ints.items():
            self.ints[f] = self.ints.get(f, 0) + (v or 0)
        for e in extrema(m):
            self.extrema[e.column] = _extreme(e.agg, self.extrema.get(e.column), ext.get(e.column))


def _extreme(agg: str, a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return b if a is None else a
    return min(a, b) if agg == "MIN" else max(a, b)


def _totals_sql(m: str, seg: Segment, ids: Sequence[int]) -> str:
    cols = int_cols(m)
    only = f" AND series IN ({', '.join(str(i) for i in ids)})"
    if seg.level is None:
        table, t, count = raw_table(m), "time_ns", "COUNT(*)"
        ext = [f"{e.agg}({e.sql()})" for e in extrema(m)]
    else:
        table, t, count = level_table(m, seg.level), "bucket_ns", "SUM(rows)"
        ext = [f"{e.agg}({e.column})" for e in extrema(m)]
    return (f"SELECT series, {count}, {', '.join([*(f'SUM({c})' for c in cols), *ext])} FROM {table} "
            f"WHERE {t} >= ? AND {t} < ?{only} GROUP BY series")


def series_totals(db: sqlite3.Connection, m: str, since_ns: int, until_ns: int, equal: Mapping[str, str]
                  ) -> tuple[dict[int, Totals], dict[int, dict[str, str]], Plan]:
    """Per series whose tags equal ``equal``: its rows, sums and extrema in [since, until), read at the
    coarsest resolution that covers the range exactly (whole days wherever they are kept); the series' tags;
    the plan (its ``since_ns``/``until_ns``: the range actually covered)."""
    level_spans, raw_kept = spans(db, m)
    p = plan(since_ns, until_ns, level_spans, raw_kept)
    tags = _series_tags(db, m, equal)
    out: dict[int, Totals] = {}
    fields, ext = additive(m), extrema(m)
    for seg in p.segments if tags else ():
        for row in db.execute(_totals_sql(m, seg, sorted(tags)), (seg.lo_ns, seg.hi_ns)):
            out.setdefault(int(row[0]), Totals()).add(m, int(row[1] or 0), dict(zip(fields, row[2:2 + len(fields)])),
                                                      dict(zip((e.column for e in ext), row[2 + len(fields):])))
    return out, tags, p
