"""How big the ledger is, how far back each resolution goes, and how big it will get (``doctor``).

The steady-state size is this host's row rate times each resolution's
retention times its bytes per row. The rate is measured from the newest
minute of raw ticks (rows per tick, seconds per tick) and the series active
in the newest hour; bytes per row are those ``benchmarks/ledger_year.py``
measured (benchmarks/RESULTS.md), SQLite's B-tree overhead included.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from wattledger.model.points import WL_AGENT
from wattledger.model.units import HOUR_NS, MINUTE_NS, NS_PER_S
from wattledger.store.schema import LEVELS, level_table, raw_table, series_measurements

# Bytes a row takes in the file, per table kind: the means over wl_job, wl_node, wl_embodied and job_tick
# weighted by their rows (benchmarks/RESULTS.md, "Ledger over a year").
BYTES_PER_ROW = {"raw": 36.4, "1m": 44.5, "1h": 51.5, "1d": 59.0, WL_AGENT: 90.0}
ROWS_PER_DAY = {"1m": 1440, "1h": 24, "1d": 1}


@dataclass
class Stats:
    size_bytes: int
    oldest_ns: dict[str, int | None] = field(default_factory=dict)  # "raw", "1m", "1h", "1d" -> oldest row
    rows_per_tick: float = 0.0
    tick_s: float | None = None
    series: int = 0  # series with rows in the newest hour
    lost_points: int = 0
    lost_ticks: int = 0


def _oldest(db: sqlite3.Connection, table: str, col: str) -> int | None:
    (t,) = db.execute(f"SELECT MIN({col}) FROM {table}").fetchone()
    return None if t is None else int(t)


def _rate(db: sqlite3.Connection, m: str) -> tuple[float, float | None, int]:
    """(rows per tick, seconds per tick, series) of ``m`` over its newest raw minute / hour."""
    (newest,) = db.execute(f"SELECT MAX(time_ns) FROM {raw_table(m)}").fetchone()
    if newest is None:
        return 0.0, None, 0
    rows, ticks, first = db.execute(f"SELECT COUNT(*), COUNT(DISTINCT time_ns), MIN(time_ns) FROM {raw_table(m)} "
                                    "WHERE time_ns > ?", (newest - MINUTE_NS,)).fetchone()
    tick_s = (newest - first) / NS_PER_S / (ticks - 1) if ticks > 1 else None
    (series,) = db.execute(f"SELECT COUNT(DISTINCT series) FROM {raw_table(m)} WHERE time_ns > ?",
                           (newest - HOUR_NS,)).fetchone()
    return rows / max(ticks, 1), tick_s, int(series)


def stats(db: sqlite3.Connection, path: Path) -> Stats:
    size = sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())
    out = Stats(size)
    for m in series_measurements():
        tables = [("raw", raw_table(m), "time_ns")] + [(lv.name, level_table(m, lv), "bucket_ns") for lv in LEVELS]
        for name, table, col in tables:
            t, seen = _oldest(db, table, col), out.oldest_ns.get(name)
            out.oldest_ns[name] = t if seen is None else seen if t is None else min(t, seen)
    for m in series_measurements():
        rows, tick_s, series = _rate(db, m)
        out.rows_per_tick += rows
        out.tick_s = out.tick_s or tick_s
        out.series += series
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('lost_points', 'lost_ticks')").fetchall())
    out.lost_points, out.lost_ticks = int(meta.get("lost_points", 0)), int(meta.get("lost_ticks", 0))
    return out


def steady_bytes(rows_per_tick: float, tick_s: float, series: int, raw_days: float, minutes_days: float,
                 hours_days: float) -> float:
    """The file size once every resolution holds its full retention, at this rate."""
    ticks_per_day = 86400.0 / tick_s
    raw = rows_per_tick * ticks_per_day * raw_days * BYTES_PER_ROW["raw"]
    agent = ticks_per_day * raw_days * BYTES_PER_ROW[WL_AGENT]
    minutes = series * ROWS_PER_DAY["1m"] * minutes_days * BYTES_PER_ROW["1m"]
    hours = series * ROWS_PER_DAY["1h"] * hours_days * BYTES_PER_ROW["1h"]
    days = series * ROWS_PER_DAY["1d"] * hours_days * BYTES_PER_ROW["1d"]
    return raw + agent + minutes + hours + days

