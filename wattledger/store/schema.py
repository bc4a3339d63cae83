"""The ledger's tables, generated from the data model (``model/points.py``: SCHEMA and ADDITIVE).

Measurements with additive fields (``wl_node``, ``wl_job``, ``wl_embodied``)
are *ledger series*, kept compactly and rolled up:

- ``<m>_series``: one row per distinct tag set (id, tags). A raw row names its
  series by number instead of repeating ~90 bytes of tag text.
- ``<m>_raw``: one row per point, keyed (time_ns, series). Additive fields are
  integers of a small unit (``int_col``): micro-units for joules and seconds
  (``energy_j`` -> ``energy_uj``, ``driver_s`` -> ``driver_us``), nano-grams
  for grams (``embodied_g`` -> ``embodied_ng``: a job's embodied carbon in one
  tick is a few micro-grams). Sums of integers are exact, in any order and at
  any resolution. Other fields (``power_w``, ``idle_w``) stay REAL.
- ``<m>_1m``, ``<m>_1h``, ``<m>_1d``: rollups, one row per (bucket start,
  series) with the number of raw rows folded in and the sums of the additive
  fields; the day table also keeps ``hour_bits``, the hours of the day that
  had energy (bit h for hour h, UTC), so a report over days still knows its hours.
- ``<m>``: a view with the old shape (tags and float fields), for people
  reading the file with ``sqlite3``.

The ledger also keeps one series of its own, ``job_tick`` (``DERIVED``),
made from each tick's points as they are written (store/jobtick.py) and never
sent anywhere: one row per tick and (host, job, user, project) charged in it,
with the tick's length, the host's energy, ``_idle``'s energy and the GPU
time held in it. It rolls up like the others (plus the first tick's start
and the last tick's end, ``EXTREMA``), so ``report --job`` reads a job's
duration and share of the host exactly at any resolution.

Other measurements (``wl_carbon``, ``wl_pue``, ``wl_agent``) are one table each
as before: tags as text, fields as REAL. ``job_summary`` (``wl_job``) and
``embodied_summary`` (``wl_embodied``) hold one row per (host, job, user,
project, phase, component), updated as ticks are written. A field added to
SCHEMA becomes a column on the next open (``ALTER TABLE``); an additive one
rolls up with no other code.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from wattledger.model.points import ADDITIVE, SCHEMA, WL_EMBODIED, WL_JOB
from wattledger.model.units import DAY_NS, HOUR_NS, MINUTE_NS

MICRO = 1_000_000  # additive fields are stored as integers of 1e-6 of their unit ...
NANO = 1_000_000_000  # ... and of 1e-9 for grams (SCALE)
SCALE = {"g": NANO}  # unit suffix -> integers per unit, where not MICRO
PREFIX = {MICRO: "u", NANO: "n"}
LAYOUT = "2"  # meta 'layout': 1 was one table per measurement with tags as text in every row

# Conservation, per tick and pool: the wl_job energy of a pool sums to its wl_node energy.
POOL_TAGS = ("host", "component", "device", "source")
CONSERVED = "energy_j"
# The per-job summaries' key: a job of one user, per component; one table per measurement.
SUMMARY_KEY = ("host", "job", "user", "project", "phase", "component")
SUMMARY = "job_summary"
EXPORT_DIRTY = "export_dirty"  # store/export.py: exported rollup buckets that a late raw row changed
SUMMARIES = {WL_JOB: SUMMARY, WL_EMBODIED: "embodied_summary"}

# The ledger's own series (store/jobtick.py): per tick and job, what ``report --job`` needs
# beside the job's energy. Tags, then additive fields (kept as integer micro-units: seconds and joules).
JOB_TICK = "job_tick"
DERIVED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    JOB_TICK: (("host", "job", "user", "project"), ("active_s", "host_j", "unused_j", "gpu_held_s")),
}


@dataclass(frozen=True)
class Extremum:
    """A rollup column kept as MIN or MAX of a raw row's time, less a span field (``before``, seconds) if
    named: the first tick's start is MIN(time_ns - active_s), the last tick's end MAX(time_ns)."""

    column: str
    agg: str  # "MIN" or "MAX"
    before: str = ""

    def sql(self) -> str:
        """The raw row's value, in SQL over the raw table."""
        return f"time_ns - {int_col(self.before)} * 1000" if self.before else "time_ns"

    def value(self, m: str, time_ns: int, ints: Sequence[int | None]) -> int:
        """The raw row's value, from its time and its additive fields as stored (int_cols order; ``before`` is
        in micro-seconds)."""
        if not self.before:
            return time_ns
        return time_ns - (ints[additive(m).index(self.before)] or 0) * 1000


# Columns a rollup keeps as MIN or MAX instead of a sum.
EXTREMA: dict[str, tuple[Extremum, ...]] = {
    JOB_TICK: (Extremum("first_ns", "MIN", "active_s"), Extremum("last_ns", "MAX")),
}


@dataclass(frozen=True)
class Level:
    """One rollup resolution: the table suffix and the bucket length."""

    name: str
    size_ns: int

    def floor(self, t_ns: int) -> int:
        return t_ns - t_ns % self.size_ns

    def ceil(self, t_ns: int) -> int:
        return -((-t_ns) // self.size_ns) * self.size_ns


MINUTE, HOUR, DAY = Level("1m", MINUTE_NS), Level("1h", HOUR_NS), Level("1d", DAY_NS)
LEVELS = (MINUTE, HOUR, DAY)  # finest first; each is folded from the one before it (raw for the first)


def series_measurements() -> tuple[str, ...]:
    """Every measurement kept as compact series and rolled up: the data model's additive ones, then DERIVED."""
    return tuple(m for m in SCHEMA if m in ADDITIVE) + tuple(DERIVED)


def tags_of(m: str) -> tuple[str, ...]:
    return DERIVED[m][0] if m in DERIVED else SCHEMA[m][0]


def fields_of(m: str) -> tuple[str, ...]:
    return DERIVED[m][1] if m in DERIVED else SCHEMA[m][1]


def extrema(m: str) -> tuple[Extremum, ...]:
    return EXTREMA.get(m, ())


def scale(field: str) -> int:
    """Integers per unit of an additive field: 1e6 (micro-joules, micro-seconds), 1e9 for grams."""
    return SCALE.get(field.rpartition("_")[2], MICRO)


def int_col(field: str) -> str:
    """The integer column of an additive field: ``energy_j`` -> ``energy_uj``, ``driver_s`` -> ``driver_us``,
    ``embodied_g`` -> ``embodied_ng``."""
    stem, _, unit = field.rpartition("_")
    prefix = PREFIX[scale(field)]
    return f"{stem}_{prefix}{unit}" if stem else f"{field}_{prefix}"


def additive(measurement: str) -> tuple[str, ...]:
    if measurement in DERIVED:
        return DERIVED[measurement][1]
    return ADDITIVE.get(measurement, ())


def int_cols(measurement: str) -> tuple[str, ...]:
    return tuple(int_col(f) for f in additive(measurement))


def plain_fields(measurement: str) -> tuple[str, ...]:
    """The fields kept as REAL with the raw rows only (not summed)."""
    return tuple(f for f in fields_of(measurement) if f not in additive(measurement))


def series_table(m: str) -> str:
    return f"{m}_series"


def raw_table(m: str) -> str:
    return f"{m}_raw"


def level_table(m: str, level: Level) -> str:
    return f"{m}_{level.name}"


def _tag_cols(tags: tuple[str, ...]) -> str:
    return ", ".join(f"{t} TEXT NOT NULL DEFAULT ''" for t in tags)


def _series_ddl(m: str) -> Iterator[str]:
    tags = tags_of(m)
    ints = ", ".join(f"{c} INTEGER" for c in int_cols(m))
    reals = "".join(f", {f} REAL" for f in plain_fields(m))
    ext = "".join(f", {e.column} INTEGER" for e in extrema(m))
    yield (f"CREATE TABLE IF NOT EXISTS {series_table(m)} (id INTEGER PRIMARY KEY, {_tag_cols(tags)}, "
           f"UNIQUE ({', '.join(tags)}))")
    yield (f"CREATE TABLE IF NOT EXISTS {raw_table(m)} (time_ns INTEGER NOT NULL, series INTEGER NOT NULL, "
           f"{ints}{reals}, PRIMARY KEY (time_ns, series)) WITHOUT ROWID")
    for level in LEVELS:
        bits = ", hour_bits INTEGER NOT NULL DEFAULT 0" if level is DAY else ""
        yield (f"CREATE TABLE IF NOT EXISTS {level_table(m, level)} (bucket_ns INTEGER NOT NULL, "
               f"series INTEGER NOT NULL, rows INTEGER NOT NULL, {ints}{ext}{bits}, "
               "PRIMARY KEY (bucket_ns, series)) WITHOUT ROWID")


def view_ddl(m: str) -> list[str]:
    """The old-shaped view of a ledger series (dropped and made again: its columns follow SCHEMA)."""
    tags, fields = tags_of(m), fields_of(m)
    cols = [f"s.{t}" for t in tags] + [
        f"r.{int_col(f)} / {float(scale(f))} AS {f}" if f in additive(m) else f"r.{f}" for f in fields]
    return [f"DROP VIEW IF EXISTS {m}",
            f"CREATE VIEW {m} AS SELECT r.time_ns, {', '.join(cols)} FROM {raw_table(m)} r "
            f"JOIN {series_table(m)} s ON s.id = r.series"]


def _plain_ddl(m: str) -> Iterator[str]:
    tags, fields = SCHEMA[m]
    cols = ", ".join([f"{t} TEXT NOT NULL DEFAULT ''" for t in tags] + [f"{f} REAL" for f in fields])
    yield f"CREATE TABLE IF NOT EXISTS {m} (time_ns INTEGER NOT NULL, {cols})"
    yield f"CREATE INDEX IF NOT EXISTS {m}_time ON {m}(time_ns)"


def _summary_ddl(m: str) -> str:
    ints = ", ".join(f"{c} INTEGER" for c in int_cols(m))
    return (f"CREATE TABLE IF NOT EXISTS {SUMMARIES[m]} ({_tag_cols(SUMMARY_KEY)}, first_ns INTEGER NOT NULL, "
            "last_ns INTEGER NOT NULL, ticks INTEGER NOT NULL, held_us INTEGER NOT NULL, peak_w REAL, "
            f"{ints}, PRIMARY KEY ({', '.join(SUMMARY_KEY)})) WITHOUT ROWID")


def ddl() -> list[str]:
    """Every CREATE of the current layout (idempotent)."""
    stmts: list[str] = []
    for m in SCHEMA:
        stmts += list(_series_ddl(m) if m in ADDITIVE else _plain_ddl(m))
    for m in DERIVED:
        stmts += list(_series_ddl(m))
    stmts += [_summary_ddl(m) for m in SUMMARIES]
    stmts += [
        """CREATE TABLE IF NOT EXISTS outbox (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             measurement TEXT NOT NULL, tags TEXT NOT NULL, fields TEXT NOT NULL, time_ns INTEGER NOT NULL,
             tick INTEGER, tier TEXT)""",
        """CREATE TABLE IF NOT EXISTS rejected (
             id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, tags TEXT NOT NULL, fields TEXT NOT NULL,
             time_ns INTEGER NOT NULL, reason TEXT NOT NULL, rejected_ns INTEGER NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {EXPORT_DIRTY} (level TEXT NOT NULL, bucket_ns INTEGER NOT NULL, "
        "PRIMARY KEY (level, bucket_ns)) WITHOUT ROWID",
    ]
    return stmts


def wanted_columns() -> dict[str, dict[str, str]]:
    """table -> {column: type} that must exist, for tables whose columns follow SCHEMA (added when missing)."""
    out: dict[str, dict[str, str]] = {}
    for m, (tags, fields) in SCHEMA.items():
        if m not in ADDITIVE:
            out[m] = {**{t: "TEXT NOT NULL DEFAULT ''" for t in tags}, **{f: "REAL" for f in fields}}
    for m in series_measurements():
        ints = {c: "INTEGER" for c in int_cols(m)}
        out[raw_table(m)] = {**ints, **{f: "REAL" for f in plain_fields(m)}}
        for level in LEVELS:
            out[level_table(m, level)] = {**ints, **{e.column: "INTEGER" for e in extrema(m)}}
    for m, table in SUMMARIES.items():
        out[table] = {c: "INTEGER" for c in int_cols(m)}
    out["outbox"] = {"tick": "INTEGER", "tier": "TEXT"}  # tier: NULL for raw points (model/tiers.py)
    return out


def add_missing_columns(db: sqlite3.Connection) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for every column SCHEMA now has and a table lacks; the columns added."""
    added = []
    for table, cols in wanted_columns().items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for col, kind in cols.items():
            if col not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
                added.append(f"{table}.{col}")
    return added


def is_layout_1(db: sqlite3.Connection) -> bool:
    """A ledger written before rollups: wl_job / wl_node (/ wl_embodied) are tables, not views, with tags
    in every row."""
    for m in series_measurements():
        row = db.execute("SELECT type FROM sqlite_master WHERE name = ?", (m,)).fetchone()
        if row is not None and row[0] == "table":
            return True
    return False
