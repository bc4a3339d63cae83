"""The per-job summary, updated in the transaction that writes each tick.

One row per (host, job, user, project, phase, component): first and last
tick seen, ticks, the sums of every additive wl_job field (micro-units, as in
the rollups), ``held_us`` (the pools' intervals over the ticks the job was
charged on them: for ``gpu``, GPU-seconds held) and ``peak_w`` (the largest
power the job drew from that component in one tick, summed over devices).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from wattledger.model.points import WL_JOB, WL_NODE
from wattledger.store.quantize import Quantized
from wattledger.store.schema import MICRO, POOL_TAGS, SUMMARY, SUMMARY_KEY, additive, micro_cols


@dataclass
class _Acc:
    first_ns: int
    last_ns: int
    times: set[int] = field(default_factory=set)
    held_us: int = 0
    sums: dict[str, int | None] = field(default_factory=dict)
    power_w: dict[int, float] = field(default_factory=dict)  # per tick


def _pool(q: Quantized) -> tuple[object, ...]:
    return (q.point.time_ns, *(q.point.tags.get(t, "") for t in POOL_TAGS))


def _accumulate(items: Sequence[Quantized]) -> dict[tuple[str, ...], _Acc]:
    interval_us = {_pool(q): q.micro.get("interval_s") for q in items if q.point.measurement == WL_NODE}
    acc: dict[tuple[str, ...], _Acc] = {}
    for q in items:
        p = q.point
        if p.measurement != WL_JOB:
            continue
        key = tuple(p.tags.get(t, "") for t in SUMMARY_KEY)
        a = acc.setdefault(key, _Acc(p.time_ns, p.time_ns))
        a.first_ns, a.last_ns = min(a.first_ns, p.time_ns), max(a.last_ns, p.time_ns)
        a.times.add(p.time_ns)
        for f in additive(WL_JOB):
            v = q.micro.get(f)
            if v is not None:
                a.sums[f] = (a.sums.get(f) or 0) + v
        held = interval_us.get(_pool(q))
        energy = q.micro.get("energy_j")
        if held:
            a.held_us += held
            if energy is not None:
                a.power_w[p.time_ns] = a.power_w.get(p.time_ns, 0.0) + energy / held
    return acc


def _peak_sql() -> str:
    return ("CASE WHEN excluded.peak_w IS NULL THEN peak_w WHEN peak_w IS NULL OR excluded.peak_w > peak_w "
            "THEN excluded.peak_w ELSE peak_w END")


def update(db: sqlite3.Connection, items: Sequence[Quantized]) -> None:
    """Add one write's wl_job rows to the summary."""
    acc = _accumulate(items)
    if not acc:
        return
    cols = micro_cols(WL_JOB)
    names = [*SUMMARY_KEY, "first_ns", "last_ns", "ticks", "held_us", "peak_w", *cols]
    sums = ", ".join(f"{c} = CASE WHEN {c} IS NULL AND excluded.{c} IS NULL THEN NULL "
                     f"ELSE IFNULL({c}, 0) + IFNULL(excluded.{c}, 0) END" for c in cols)
    sql = (f"INSERT INTO {SUMMARY} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
           f"ON CONFLICT ({', '.join(SUMMARY_KEY)}) DO UPDATE SET first_ns = MIN(first_ns, excluded.first_ns), "
           "last_ns = MAX(last_ns, excluded.last_ns), ticks = ticks + excluded.ticks, "
           f"held_us = held_us + excluded.held_us, peak_w = {_peak_sql()}, {sums}")
    rows = []
    for key, a in acc.items():
        peak = max(a.power_w.values()) if a.power_w else None
        rows.append([*key, a.first_ns, a.last_ns, len(a.times), a.held_us, peak,
                     *(a.sums.get(f) for f in additive(WL_JOB))])
    db.executemany(sql, rows)


def read(db: sqlite3.Connection, equal: dict[str, str] | None = None) -> list[dict[str, object]]:
    """Summary rows as dicts: the key tags, first_ns, last_ns, ticks, held_s, peak_w and the field sums (floats)."""
    where = " AND ".join(f"{t} = ?" for t in equal or {}) or "1"
    cols = micro_cols(WL_JOB)
    sql = (f"SELECT {', '.join(SUMMARY_KEY)}, first_ns, last_ns, ticks, held_us, peak_w, {', '.join(cols)} "
           f"FROM {SUMMARY} WHERE {where}")
    out = []
    for r in db.execute(sql, list((equal or {}).values())):
        d: dict[str, object] = dict(zip(SUMMARY_KEY, r))
        n = len(SUMMARY_KEY)
        d.update(first_ns=r[n], last_ns=r[n + 1], ticks=r[n + 2], held_s=r[n + 3] / MICRO, peak_w=r[n + 4])
        for f, v in zip(additive(WL_JOB), r[n + 5:]):
            d[f] = None if v is None else v / MICRO
        out.append(d)
    return out
