"""The ledger's tables, generated from the data model (``model/points.py``: SCHEMA and ADDITIVE).

Measurements with additive fields (``wl_node``, ``wl_job``) are *ledger
series*, kept compactly and rolled up:

- ``<m>_series``: one row per distinct tag set (id, tags). A raw row names its
  series by number instead of repeating ~90 bytes of tag text.
- ``<m>_raw``: one row per point, keyed (time_ns, series). Additive fields are
  integers in micro-units (``energy_j`` -> ``energy_uj``, ``driver_s`` ->
  ``driver_us``): sums of integers are exact, in any order and at any
  resolution. Other fields (``power_w``, ``idle_w``) stay REAL.
- ``<m>_1m``, ``<m>_1h``, ``<m>_1d``: rollups, one row per (bucket start,
  series) with the number of raw rows folded in and the sums of the additive
  fields; the day table also keeps ``hour_bits``, the hours of the day that
  had energy (bit h for hour h, UTC), so a report over days still knows its hours.
- ``<m>``: a view with the old shape (tags and float fields), for people
  reading the file with ``sqlite3``.

Other measurements (``wl_carbon``, ``wl_pue``, ``wl_agent``) are one table each
as before: tags as text, fields as REAL. ``job_summary`` holds one row per
(host, job, user, project, phase, component), updated as ticks are written.
A field added to SCHEMA becomes a column on the next open (``ALTER TABLE``);
an additive one rolls up with no other code.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from wattledger.model.points import ADDITIVE, SCHEMA, WL_JOB, WL_NODE
from wattledger.model.units import DAY_NS, HOUR_NS, MINUTE_NS

MICRO = 1_000_000  # additive fields are stored as integer micro-units
LAYOUT = "2"  # meta 'layout': 1 was one table per measurement with tags as text in every row

# Conservation, per tick and pool: the wl_job energy of a pool sums to its wl_node energy.
POOL_TAGS = ("host", "component", "device", "source")
CONSERVED = "energy_j"
# The per-job summary's key: a job of one user, per component.
SUMMARY_KEY = ("host", "job", "user", "project", "phase", "component")
SUMMARY = "job_summary"
EXPORT_DIRTY = "export_dirty"  # store/export.py: exported rollup buckets that a late raw row changed


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
    return tuple(m for m in SCHEMA if m in ADDITIVE)


def micro(field: str) -> str:
    """The integer column of an additive field: ``energy_j`` -> ``energy_uj``, ``driver_s`` -> ``driver_us``."""
    stem, _, unit = field.rpartition("_")
    return f"{stem}_u{unit}" if stem else f"{field}_u"


def additive(measurement: str) -> tuple[str, ...]:
    return ADDITIVE.get(measurement, ())


def micro_cols(measurement: str) -> tuple[str, ...]:
    return tuple(micro(f) for f in additive(measurement))


def plain_fields(measurement: str) -> tuple[str, ...]:
    """The fields kept as REAL with the raw rows only (not summed)."""
    return tuple(f for f in SCHEMA[measurement][1] if f not in additive(measurement))


def series_table(m: str) -> str:
    return f"{m}_series"


def raw_table(m: str) -> str:
    return f"{m}_raw"


def level_table(m: str, level: Level) -> str:
    return f"{m}_{level.name}"


def _tag_cols(tags: tuple[str, ...]) -> str:
    return ", ".join(f"{t} TEXT NOT NULL DEFAULT ''" for t in tags)


def _series_ddl(m: str) -> Iterator[str]:
    tags, _ = SCHEMA[m]
    ints = ", ".join(f"{c} INTEGER" for c in micro_cols(m))
    reals = "".join(f", {f} REAL" for f in plain_fields(m))
    yield (f"CREATE TABLE IF NOT EXISTS {series_table(m)} (id INTEGER PRIMARY KEY, {_tag_cols(tags)}, "
           f"UNIQUE ({', '.join(tags)}))")
    yield (f"CREATE TABLE IF NOT EXISTS {raw_table(m)} (time_ns INTEGER NOT NULL, series INTEGER NOT NULL, "
           f"{ints}{reals}, PRIMARY KEY (time_ns, series)) WITHOUT ROWID")
    for level in LEVELS:
        bits = ", hour_bits INTEGER NOT NULL DEFAULT 0" if level is DAY else ""
        yield (f"CREATE TABLE IF NOT EXISTS {level_table(m, level)} (bucket_ns INTEGER NOT NULL, "
               f"series INTEGER NOT NULL, rows INTEGER NOT NULL, {ints}{bits}, "
               "PRIMARY KEY (bucket_ns, series)) WITHOUT ROWID")


def view_ddl(m: str) -> list[str]:
    """The old-shaped view of a ledger series (dropped and made again: its columns follow SCHEMA)."""
    tags, fields = SCHEMA[m]
    cols = [f"s.{t}" for t in tags] + [
        f"r.{micro(f)} / {float(MICRO)} AS {f}" if f in additive(m) else f"r.{f}" for f in fields]
    return [f"DROP VIEW IF EXISTS {m}",
            f"CREATE VIEW {m} AS SELECT r.time_ns, {', '.join(cols)} FROM {raw_table(m)} r "
            f"JOIN {series_table(m)} s ON s.id = r.series"]


def _plain_ddl(m: str) -> Iterator[str]:
    tags, fields = SCHEMA[m]
    cols = ", ".join([f"{t} TEXT NOT NULL DEFAULT ''" for t in tags] + [f"{f} REAL" for f in fields])
    yield f"CREATE TABLE IF NOT EXISTS {m} (time_ns INTEGER NOT NULL, {cols})"
    yield f"CREATE INDEX IF NOT EXISTS {m}_time ON {m}(time_ns)"


def _summary_ddl() -> str:
    ints = ", ".join(f"{c} INTEGER" for c in micro_cols(WL_JOB))
    return (f"CREATE TABLE IF NOT EXISTS {SUMMARY} ({_tag_cols(SUMMARY_KEY)}, first_ns INTEGER NOT NULL, "
            "last_ns INTEGER NOT NULL, ticks INTEGER NOT NULL, held_us INTEGER NOT NULL, peak_w REAL, "
            f"{ints}, PRIMARY KEY ({', '.join(SUMMARY_KEY)})) WITHOUT ROWID")


def ddl() -> list[str]:
    """Every CREATE of the current layout (idempotent)."""
    stmts: list[str] = []
    for m in SCHEMA:
        stmts += list(_series_ddl(m) if m in ADDITIVE else _plain_ddl(m))
    stmts += [
        _summary_ddl(),
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
            continue
        ints = {c: "INTEGER" for c in micro_cols(m)}
        out[raw_table(m)] = {**ints, **{f: "REAL" for f in plain_fields(m)}}
        for level in LEVELS:
            out[level_table(m, level)] = dict(ints)
    out[SUMMARY] = {c: "INTEGER" for c in micro_cols(WL_JOB)}
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
    """A ledger written before rollups: wl_job / wl_node are tables (not views) with tags in every row."""
    row = db.execute("SELECT type FROM sqlite_master WHERE name = ?", (WL_JOB,)).fetchone()
    node = db.execute("SELECT type FROM sqlite_master WHERE name = ?", (WL_NODE,)).fetchone()
    return (row is not None and row[0] == "table") or (node is not None and node[0] == "table")
