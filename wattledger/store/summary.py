"""The per-job summaries, updated in the transaction that writes each tick.

``job_summary`` (wl_job): one row per (host, job, user, project, phase,
component): first and last tick seen, ticks, the sums of every additive
wl_job field (integer micro-units, as in the rollups), ``held_us`` (the pools'
intervals over the ticks the job was charged on them: for ``gpu``,
GPU-seconds held) and ``peak_w`` (the largest power the job drew from that
component in one tick, summed over devices).

``embodied_summary`` (wl_embodied): the same key and columns for the
hardware's embodied carbon charged to the job (``gpu`` and ``host``
components): first and last tick, ticks, the sums of every additive field
(nano-grams); ``held_us`` is 0 and ``peak_w`` empty there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from wattledger.model.points import SCHEMA, WL_JOB, WL_NODE
from wattledger.store.quantize import Quantized, pool_index
from wattledger.store.schema import MICRO, SUMMARIES, SUMMARY_KEY, additive, int_cols, scale


@dataclass
class _Acc:
    first_ns: int
    last_ns: int
    times: set[int] = field(default_factory=set)
    held_us: int = 0
    sums: dict[str, int | None] = field(default_factory=dict)
    power_w: dict[int, float] = field(default_factory=dict)  # per tick


# a measurement's tags -> the summary key
_KEY_OF = {m: itemgetter(*(SCHEMA[m][0].index(t) for t in SUMMARY_KEY)) for m in SUMMARIES}


def _intervals(items: Sequence[Quantized]) -> dict[tuple[object, ...], int | None]:
    """(time, pool tags) -> the pool's interval in µs, from the wl_node points."""
    pool_of = itemgetter(*pool_index(WL_NODE))
    return {(q.point.time_ns, pool_of(q.tags)): q.ints.get("interval_s")
            for q in items if q.point.measurement == WL_NODE}


def _accumulate(items: Sequence[Quantized], m: str) -> dict[tuple[str, ...], _Acc]:
    """The summary rows of measurement ``m`` in these points (held time and peak power: wl_job only)."""
    interval_us = _intervals(items) if m == WL_JOB else {}
    pool_of, fields, key_of = itemgetter(*pool_index(WL_JOB)), additive(m), _KEY_OF[m]
    acc: dict[tuple[str, ...], _Acc] = {}
    for q in items:
        if q.point.measurement != m:
            continue
        t, tags, ints = q.point.time_ns, q.tags, q.ints
        key = key_of(tags)
        a = acc.get(key)
        if a is None:
            a = acc[key] = _Acc(t, t)
        a.first_ns, a.last_ns = min(a.first_ns, t), max(a.last_ns, t)
        a.times.add(t)
        for f in fields:
            v = ints.get(f)
            if v is not None:
                a.sums[f] = (a.sums.get(f) or 0) + v
        held = interval_us.get((t, pool_of(tags))) if interval_us else None
        energy = ints.get("energy_j")
        if held:
            a.held_us += held
            if energy is not None:
                a.power_w[t] = a.power_w.get(t, 0.0) + energy / held
    return acc


def _peak_sql() -> str:
    return ("CASE WHEN excluded.peak_w IS NULL THEN peak_w WHEN peak_w IS NULL OR excluded.peak_w > peak_w "
            "THEN excluded.peak_w ELSE peak_w END")


def update(db: sqlite3.Connection, items: Sequence[Quantized]) -> None:
    """Add one write's wl_job and wl_embodied rows to their summaries."""
    for m in SUMMARIES:
        _update(db, m, items)


def _update(db: sqlite3.Connection, m: str, items: Sequence[Quantized]) -> None:
    acc = _accumulate(items, m)
    if not acc:
        return
    cols = int_cols(m)
    names = [*SUMMARY_KEY, "first_ns", "last_ns", "ticks", "held_us", "peak_w", *cols]
    sums = ", ".join(f"{c} = CASE WHEN {c} IS NULL AND excluded.{c} IS NULL THEN NULL "
                     f"ELSE IFNULL({c}, 0) + IFNULL(excluded.{c}, 0) END" for c in cols)
    sql = (f"INSERT INTO {SUMMARIES[m]} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
           f"ON CONFLICT ({', '.join(SUMMARY_KEY)}) DO UPDATE SET first_ns = MIN(first_ns, excluded.first_ns), "
           "last_ns = MAX(last_ns, excluded.last_ns), ticks = ticks + excluded.ticks, "
           f"held_us = held_us + excluded.held_us, peak_w = {_peak_sql()}, {sums}")
    rows = []
    for key, a in acc.items():
        peak = max(a.power_w.values()) if a.power_w else None
        rows.append([*key, a.first_ns, a.last_ns, len(a.times), a.held_us, peak,
                     *(a.sums.get(f) for f in additive(m))])
    db.executemany(sql, rows)


def read(db: sqlite3.Connection, equal: dict[str, str] | None = None, m: str = WL_JOB,
         jobs: Collection[str] | None = None) -> list[dict[str, object]]:
    """Summary rows of measurement ``m`` as dicts: the key tags, first_ns, last_ns, ticks, held_s, peak_w and the
    field sums (floats); only rows whose tags equal ``equal`` and, when given, of the job tags ``jobs``."""
    where = [f"{t} = ?" for t in equal or {}]
    args: list[object] = list((equal or {}).values())
    if jobs is not None:
        where.append(f"job IN ({', '.join('?' * len(jobs))})")
        args += sorted(jobs)
    cols = int_cols(m)
    sql = (f"SELECT {', '.join(SUMMARY_KEY)}, first_ns, last_ns, ticks, held_us, peak_w, {', '.join(cols)} "
           f"FROM {SUMMARIES[m]} WHERE {' AND '.join(where) or '1'}")
    out = []
    for r in db.execute(sql, args):
        d: dict[str, object] = dict(zip(SUMMARY_KEY, r))
        n = len(SUMMARY_KEY)
        d.update(first_ns=r[n], last_ns=r[n + 1], ticks=r[n + 2], held_s=r[n + 3] / MICRO, peak_w=r[n + 4])
        for f, v in zip(additive(m), r[n + 5:]):
            d[f] = None if v is None else v / scale(f)
        out.append(d)
    return out
