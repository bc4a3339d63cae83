#!/usr/bin/env python3
"""A year of a busy GPU server in the local ledger: steady-state size, compaction cost, report times (issue 14).

The server: 2 CPU packages + 2 DRAM + 8 GPUs (12 pools), 50 jobs at a time
(each runs about three days, then another takes its slot), ticks every
second: on each CPU and DRAM pool the 50 jobs plus _untagged, _system,
_agent and _idle (216 rows), one job per GPU (8 rows), 12 wl_node rows: 236
rows a tick, 20.4 M a day. With the defaults the agent also writes the
hardware's embodied carbon ([embodied] enabled): one wl_embodied row per GPU
job and one per job for the host's parts (8 + 54 rows), and the ledger keeps
its own job_tick row per job (54 rows, store/jobtick.py): 352 rows a tick,
30.4 M a day, plus one wl_agent row.

Each simulated hour's ticks are written straight into the raw tables by
SQL, in key order as the agent writes them (the generator may be fast; the
tick path is not what is measured), then the agent's own ``Compactor`` is
stepped until it is idle, exactly as the agent steps it after each tick
(same chunks, same transactions). Jobs' energies vary every tick and sum
exactly to their pool's (pairs of jobs move in opposite directions), like
the agent's quantized rows.

Measured, with the ``[ledger]`` defaults unless given:

- the file's size at the end of the year and, from the measured bytes per
  row and rows per day of each resolution, at steady state (hours are kept
  800 days, longer than the simulated year);
- compaction CPU per simulated day, as % of one core;
- ``wattledger report --since 365d --by job`` and ``--since 24h`` run as a
  command at the end of the year (median of 3), plus the 365-day report
  with an intensity that changes every hour (``--zone BENCH``), which reads
  hours instead of days.

Resumable: progress is kept beside the ledger (``--dir``), so a run stopped
between two days continues where it stopped. A year at 1 s ticks writes 11
billion rows: about 6 hours on a quiet 2-core VM, far longer on a busy one.

``--fast-forward`` keeps 1 s ticks for the first 40 days (every resolution's
retention full: raw, then minutes after 35 days, with the compaction cost of
the steady state) and the last 3 (the raw ticks at the end, what the 24-hour
report reads), and writes the days between at one tick a minute, each
carrying the minute's energy. The rollups those days leave are the same rows
(one per series per minute, hour and day, made by the same compaction from
raw ticks); only their raw ticks, which are pruned after 3 days anyway, are
60 times fewer. The year's figures then come in a few hours on a busy
machine; the compaction cost is measured on the 1 s days only.

    .venv/bin/python benchmarks/ledger_year.py --dir /var/tmp/ledger-year
    .venv/bin/python benchmarks/ledger_year.py --dir /var/tmp/ledger-year --fast-forward
    .venv/bin/python benchmarks/ledger_year.py --dir /tmp/ly --days 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402
from wattledger.model.points import WL_CARBON, Point  # noqa: E402
from wattledger.model.units import DAY_NS, HOUR_NS, NS_PER_S  # noqa: E402
from wattledger.store.compact import Compactor, Retention  # noqa: E402
from wattledger.store.ledger import LEDGER_FILE, Ledger  # noqa: E402
from wattledger.store.schema import LEVELS, level_table, raw_table  # noqa: E402
from wattledger.util.timeutil import iso  # noqa: E402

HOST = "gpu-server-01"
CPU_POOLS = [("cpu", "package-0"), ("cpu", "package-1"), ("dram", "package-0"), ("dram", "package-1")]
GPUS = [f"GPU-8f6a2c1e-{g:04x}-4c5d-9e0f-{g:012x}" for g in range(8)]
SLOTS = 50
RESERVED = ["_untagged", "_system", "_agent", "_idle"]
OFFSET_NS = 250_000_000  # ticks at x.25 s, as a real agent's are not on the second
ROWS_PER_TICK = {"wl_job": 224, "wl_node": 12, "wl_embodied": 62, "job_tick": 54}
FULL_FIRST, FULL_LAST = 40, 3  # with --fast-forward: days at 1 s ticks at the start and at the end


def job_of(slot: int, day: int) -> tuple[str, str, str, str]:
    """(job, user, project, phase) in ``slot`` on ``day``: each slot starts a new job every 3 days, staggered."""
    generation = (day + slot % 3) // 3
    phase = ("train", "search", "inference")[slot % 3]
    return f"sweep-{slot:02d}-{generation:04d}", f"user{slot % 20:02d}", f"proj{slot % 8}", phase


def _series(db: Any, table: str, tags: dict[str, str]) -> int:
    cols = ", ".join(tags)
    db.execute(f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({', '.join('?' * len(tags))})", list(tags.values()))
    where = " AND ".join(f"{t} = ?" for t in tags)
    return int(db.execute(f"SELECT id FROM {table} WHERE {where}", list(tags.values())).fetchone()[0])


@dataclass
class Day:
    """One day's series: jobs (id, pool, base µJ, sign), nodes (id, pool µJ per tick), embodied (id, base ng,
    host parts?) and job ticks (id, GPU µs held per tick)."""

    jobs: list[tuple[int, int, int, int]]
    nodes: list[tuple[int, int]]
    embodied: list[tuple[int, int, int]]
    ticks: list[tuple[int, int]]


def day_series(db: Any, day: int) -> Day:
    """The series of the day's jobs: wl_job, wl_node, wl_embodied and job_tick."""
    jobs, nodes = _energy_series(db, day)
    embodied, ticks = [], []
    for i, (job, user, project, phase) in enumerate([job_of(s, day) for s in range(SLOTS)] +
                                                    [(r, "", "", "") for r in RESERVED]):
        tags = {"host": HOST, "job": job, "user": user, "project": project, "phase": phase}
        if i < len(GPUS):  # slot i runs on GPU i: ~575 kgCO2e over 4 years, 4.6 mg a second
            embodied.append((_series(db, "wl_embodied_series", {**tags, "component": "gpu", "device": GPUS[i]}),
                             4_556_000, 0))
        embodied.append((_series(db, "wl_embodied_series", {**tags, "component": "host", "device": "host"}),
                         840_000 + 977 * i, 1))  # the host's parts by CPU share: ~0.8 mg a second a job
        ticks.append((_series(db, "job_tick_series", {"host": HOST, "job": job, "user": user, "project": project}),
                      1_000_000 if i < len(GPUS) else 0))
    return Day(jobs, nodes, embodied, ticks)


def _energy_series(db: Any, day: int) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]]]:
    """The day's job series (id, pool, base µJ, sign) and node series (id, pool µJ per tick)."""
    jobs, nodes = [], []
    pools = [(c, d, "rapl") for c, d in CPU_POOLS] + [("gpu", g, "nvml") for g in GPUS]
    for p, (component, device, source) in enumerate(pools):
        pool = {"host": HOST, "component": component, "device": device, "source": source}
        if component == "gpu":
            members = [job_of(p - len(CPU_POOLS), day)]
        else:
            members = [job_of(s, day) for s in range(SLOTS)] + [(r, "", "", "") for r in RESERVED]
        base = 180_000_000 if component == "gpu" else 1_500_000  # ~180 W per GPU job, ~1.5 W per CPU row
        for i, (job, user, project, phase) in enumerate(members):
            sid = _series(db, "wl_job_series", {**pool, "job": job, "user": user, "project": project,
                                                "phase": phase})
            sign = 0 if i == len(members) - 1 and len(members) % 2 else (1 if i % 2 == 0 else -1)
            jobs.append((sid, p, base + 7919 * i, sign))
        total = sum(j[2] for j in jobs if j[1] == p)
        nodes.append((_series(db, "wl_node_series", pool), total))
    return jobs, nodes


def _temp_tables(db: Any, d: Day) -> None:
    for name, cols, rows in (
            ("js", "series INTEGER, pool INTEGER, base INTEGER, sign INTEGER, pair INTEGER",
             [(s, p, b, g, i // 2) for i, (s, p, b, g) in enumerate(d.jobs)]),
            ("ns", "series INTEGER, energy INTEGER", d.nodes),
            ("es", "series INTEGER, base INTEGER, host INTEGER", d.embodied),
            ("ts", "series INTEGER, gpu INTEGER", d.ticks)):
        db.execute(f"DROP TABLE IF EXISTS temp.{name}")
        db.execute(f"CREATE TEMP TABLE {name} ({cols})")
        db.executemany(f"INSERT INTO temp.{name} VALUES ({', '.join('?' * len(rows[0]))})", rows)


def write_hour(db: Any, start_ns: int, d: Day, tick_s: int = 1) -> None:
    """An hour of ticks every ``tick_s`` seconds from ``start_ns``: every row of every tick, straight into the
    raw tables, in key order. Additive values scale with the tick (a 60 s tick carries a minute's energy)."""
    _temp_tables(db, d)
    n, x = 3600 // tick_s, tick_s  # ticks in the hour; each tick's additive values x the 1 s figures
    ticks = f"WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n - 1})"
    t = f"{start_ns + OFFSET_NS} + k.i * {tick_s * NS_PER_S}"
    swing = "js.sign * ((k.i * 7919 + js.pair * 104729) % (js.base / 2))"
    host_uj = sum(e for _, e in d.nodes)
    db.execute("BEGIN")
    db.execute(f"INSERT INTO wl_job_raw (time_ns, series, energy_uj, dynamic_uj, static_uj, driver_us) {ticks} "
               f"SELECT {t}, js.series, {x} * (js.base + {swing}), {x} * ((js.base + {swing}) * 7 / 10), "
               f"{x} * ((js.base + {swing}) - (js.base + {swing}) * 7 / 10), "
               f"{x} * ((k.i * 13 + js.series) % 1000000) FROM k CROSS JOIN temp.js ORDER BY 1, 2")
    db.execute(f"INSERT INTO wl_node_raw (time_ns, series, energy_uj, interval_us, power_w, idle_w) {ticks} "
               f"SELECT {t}, ns.series, {x} * ns.energy, {x} * 1000000, ns.energy / 1e6, 60.0 "
               "FROM k CROSS JOIN temp.ns ORDER BY 1, 2")
    e = f"({x} * (es.base + (k.i * 7919 + es.series * 104729) % (es.base / 4)))"
    db.execute(f"INSERT INTO wl_embodied_raw (time_ns, series, embodied_ng, cpu_ng, dram_ng, storage_ng, chassis_ng) "
               f"{ticks} SELECT {t}, es.series, {e}, CASE WHEN es.host THEN {e} / 100 END, "
               f"CASE WHEN es.host THEN {e} * 70 / 100 END, CASE WHEN es.host THEN {e} * 22 / 100 END, "
               f"CASE WHEN es.host THEN {e} - {e} / 100 - {e} * 70 / 100 - {e} * 22 / 100 END "
               "FROM k CROSS JOIN temp.es ORDER BY 1, 2")
    db.execute(f"INSERT INTO job_tick_raw (time_ns, series, active_us, host_uj, unused_uj, gpu_held_us) {ticks} "
               f"SELECT {t}, ts.series, {x} * 1000000, {x} * {host_uj}, {x} * (6000000 + (k.i * 7919) % 3000000), "
               f"{x} * ts.gpu FROM k CROSS JOIN temp.ts ORDER BY 1, 2")
    db.execute(f"INSERT INTO wl_agent (time_ns, host, tick_s, cpu_s, rss_bytes, spooled, delivered, dropped, "
               f"write_errors) {ticks} SELECT {t}, '{HOST}', 0.004, 0.003, 38000000.0, 0, 0, 0, 0 FROM k")
    db.execute("COMMIT")


def summary_day(db: Any, day_ns: int, d: Day) -> None:
    """The per-job summary rows the agent would have kept up: one upsert per job and component a day."""
    rows: dict[tuple[str, ...], list[int]] = {}
    for sid, _pool, base, _sign in d.jobs:
        tags = db.execute("SELECT host, job, user, project, phase, component FROM wl_job_series WHERE id = ?",
                          (sid,)).fetchone()
        acc = rows.setdefault(tuple(tags), [0, 0])
        acc[0] += base * 86400
        acc[1] += 86400 * 1_000_000
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO job_summary (host, job, user, project, phase, component, first_ns, last_ns, ticks, held_us, "
        "peak_w, energy_uj, dynamic_uj, static_uj, driver_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 86400, ?, ?, ?, ?, "
        "?, ?) ON CONFLICT DO UPDATE SET last_ns = excluded.last_ns, ticks = ticks + 86400, "
        "held_us = held_us + excluded.held_us, energy_uj = energy_uj + excluded.energy_uj",
        [(*k, day_ns, day_ns + DAY_NS - NS_PER_S, held, e / 86400 / 1e6 * 1.5, e, e * 7 // 10, e - e * 7 // 10,
          held // 2) for k, (e, held) in rows.items()])
    grams = [(*db.execute("SELECT host, job, user, project, phase, component FROM wl_embodied_series WHERE id = ?",
                          (sid,)).fetchone(), base * 86400) for sid, base, _ in d.embodied]
    db.executemany(
        "INSERT INTO embodied_summary (host, job, user, project, phase, component, first_ns, last_ns, ticks, "
        "held_us, embodied_ng) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 86400, 0, ?) ON CONFLICT DO UPDATE SET "
        "last_ns = excluded.last_ns, ticks = ticks + 86400, embodied_ng = embodied_ng + excluded.embodied_ng",
        [(*g[:6], day_ns, day_ns + DAY_NS - NS_PER_S, g[6]) for g in grams])
    db.execute("COMMIT")


def table_bytes(db: Any) -> dict[str, tuple[int, int]]:
    """table -> (rows, bytes in the file: the table's B-tree and its indexes)."""
    sizes: dict[str, int] = {}
    for name, tbl, size in db.execute("SELECT d.name, m.tbl_name, SUM(d.pgsize) FROM dbstat d JOIN sqlite_schema m "
                                      "ON m.name = d.name GROUP BY d.name"):
        sizes[tbl] = sizes.get(tbl, 0) + int(size)
    return {t: (int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]), b) for t, b in sizes.items()}


def report_env() -> dict[str, str]:
    """The command's environment as on an installed machine: Python may keep its compiled bytecode (pip
    compiles an installed package; a sandbox's PYTHONDONTWRITEBYTECODE would add ~0.15 s of compiling)."""
    env = dict(os.environ, WATTLEDGER_AGENT_GPUS="never")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_report(state: Path, *args: str, fmt: str = "table") -> float:
    """Median seconds of 3 runs of the whole command, after one untimed run (bytecode and page cache warm)."""
    times = []
    for i in range(4):
        started = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "wattledger.cli.main", "report", "--state-dir", str(state), *args,
                            "--format", fmt], capture_output=True, text=True, env=report_env())
        if i:
            times.append(time.perf_counter() - started)
        if r.returncode != 0:
            raise SystemExit(f"report failed: {r.stderr}")
    return statistics.median(times)


def fast_day(day: int, days: int, fast_forward: bool) -> bool:
    """With --fast-forward, the days between the first FULL_FIRST and the last FULL_LAST are written at one
    tick a minute (see the module doc)."""
    return fast_forward and FULL_FIRST <= day < days - FULL_LAST


def simulate(state: Path, days: int, progress: dict[str, Any], retention: Retention, fast_forward: bool = False
             ) -> None:
    ledger = Ledger(state / LEDGER_FILE)
    compactor = Compactor(ledger, retention)  # on the ledger's own connection, with its settings
    db = sqlite3.connect(str(state / LEDGER_FILE), isolation_level=None, timeout=60)  # the generator's
    db.execute("PRAGMA cache_size = -262144")  # 256 MiB: writing the ticks is not what is measured
    db.execute("PRAGMA synchronous = OFF")
    start_ns = int(progress["start_ns"])
    for day in range(int(progress["days_done"]), days):
        day_ns = start_ns + day * DAY_NS
        t0, cpu0 = time.perf_counter(), compactor.cpu_s
        series, fast = day_series(db, day), fast_day(day, days, fast_forward)
        for hour in range(24):
            write_hour(db, day_ns + hour * HOUR_NS, series, 60 if fast else 1)
            compactor.catch_up(day_ns + (hour + 1) * HOUR_NS + OFFSET_NS)
        summary_day(db, day_ns, series)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        record = {"day": day, "wall_s": time.perf_counter() - t0, "compact_cpu_s": compactor.cpu_s - cpu0,
                  "size_bytes": (state / LEDGER_FILE).stat().st_size, "fast": fast}
        progress["per_day"].append(record)
        progress["days_done"] = day + 1
        (state / "progress.json").write_text(json.dumps(progress))
        print(f"day {day + 1}/{days}: {record['wall_s']:.0f} s, compaction {record['compact_cpu_s']:.1f} s CPU, "
              f"{record['size_bytes'] / 1e9:.2f} GB", flush=True)
    db.close()
    ledger.close()


def add_hourly_intensity(state: Path, start_ns: int, end_ns: int) -> None:
    """A BENCH zone whose intensity changes every hour of the year (the slow case for reports)."""
    ledger = Ledger(state / LEDGER_FILE)
    if not ledger.rows(WL_CARBON, start_ns, start_ns + DAY_NS):
        ledger.append([Point(WL_CARBON, {"zone": "BENCH", "provider": "csv", "kind": "actual"},
                             {"g_per_kwh": 200.0 + (h * 37) % 300}, start_ns - start_ns % HOUR_NS + h * HOUR_NS)
                       for h in range((end_ns - start_ns) // HOUR_NS + 1)])
    ledger.close()


def measure(state: Path, progress: dict[str, Any], retention: Retention) -> dict[str, Any]:
    end_ns = int(progress["start_ns"]) + int(progress["days_done"]) * DAY_NS
    add_hourly_intensity(state, int(progress["start_ns"]), end_ns)
    ledger = Ledger(state / LEDGER_FILE)
    db = ledger.connection()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    out: dict[str, Any] = {"size_bytes": (state / LEDGER_FILE).stat().st_size, "tables": table_bytes(db)}
    ledger.close()
    until = iso(end_ns)
    year, day = ("--since", iso(end_ns - 365 * DAY_NS), "--until", until), ("--since", iso(end_ns - DAY_NS),
                                                                              "--until", until)
    out["report_365d_s"] = run_report(state, *year, "--by", "job")
    out["report_365d_json_s"] = run_report(state, *year, "--by", "job", fmt="json")
    out["report_24h_s"] = run_report(state, *day, "--by", "job")
    out["report_24h_json_s"] = run_report(state, *day, "--by", "job", fmt="json")
    out["report_365d_hourly_ci_s"] = run_report(state, *year, "--by", "job", "--zone", "BENCH")
    full = [d for d in progress["per_day"] if not d.get("fast")]  # 1 s ticks: what the agent's compaction costs
    steady = [d for d in full if d["day"] >= retention.minutes_s / 86400] or full  # every resolution pruned
    out["compact_cpu_s_per_day"] = statistics.mean(d["compact_cpu_s"] for d in steady[-30:])
    out["compact_cpu_s_per_day_max"] = max(d["compact_cpu_s"] for d in full)
    out["compact_days"] = len(steady[-30:])
    out["fast_days"] = sum(1 for d in progress["per_day"] if d.get("fast"))
    out["retention_days"] = [retention.raw_s / 86400, retention.minutes_s / 86400, retention.hours_s / 86400]
    return out


def markdown(days: int, out: dict[str, Any]) -> str:
    t = out["tables"]
    raw_d, min_d, hour_d = out["retention_days"]
    lines = [f"Machine: {machine_line()}. Simulated {days} days at 1 s ticks, {sum(ROWS_PER_TICK.values())} rows "
             "a tick.", "",
             "| table | rows | bytes/row | rows per day | kept (days) | MB now | MB at steady state |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    steady = 0.0
    for m, per_tick in ROWS_PER_TICK.items():
        for name, table, per_day, keep in [("raw", raw_table(m), 86400 * per_tick, raw_d),
                                           *[(lv.name, level_table(m, lv), per_tick *
                                              (86400 // (lv.size_ns // NS_PER_S)), min_d if lv.name == "1m" else
                                              hour_d) for lv in LEVELS]]:
            rows, size = t.get(table, (0, 0))
            per_row = size / rows if rows else 0.0
            steady += per_row * per_day * keep
            lines.append(f"| {table} | {rows:,} | {per_row:.1f} | {per_day:,} | {keep:g} | {size / 1e6:,.1f} | "
                         f"{per_row * per_day * keep / 1e6:,.1f} |")
    series_tables = tuple(f"{m}_" for m in ROWS_PER_TICK)
    rest = sum(b for tb, (_, b) in t.items() if not tb.startswith(series_tables) or tb.endswith("series"))
    lines += ["", f"Other tables (series, summaries, wl_agent, meta): {rest / 1e6:,.1f} MB.",
              f"File size after {days} days: **{out['size_bytes'] / 1e9:.2f} GB**; at steady state "
              f"(every resolution full): **{(steady + rest) / 1e9:.2f} GB** (target <= 5 GB).",
              f"Compaction: {out['compact_cpu_s_per_day']:.1f} s CPU per simulated day (mean of the last "
              f"{out.get('compact_days', 30)} days at 1 s ticks with every resolution pruning, max "
              f"{out['compact_cpu_s_per_day_max']:.1f}): **{100 * out['compact_cpu_s_per_day'] / 86400:.3f} % of a "
              "core** (target <= 0.5 %).",
              *([f"{out['fast_days']} of the {days} days were fast-forwarded at one tick a minute (--fast-forward)."]
                if out.get("fast_days") else []),
              f"`report --since 365d --by job`: **{out['report_365d_s']:.2f} s** (target <= 2 s; "
              f"{out.get('report_365d_json_s', 0.0):.2f} s with `--format json`); `--since 24h`: "
              f"**{out['report_24h_s']:.2f} s** (target <= 1 s; {out.get('report_24h_json_s', 0.0):.2f} s as JSON); "
              f"365 days with an intensity that changes every hour (reads hours, not days): "
              f"{out['report_365d_hourly_ci_s']:.2f} s. Median of 3 runs of the command, the whole process."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="state directory for the ledger (resumed if present)")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--fast-forward", action="store_true",
                    help=f"write the days between the first {FULL_FIRST} and the last {FULL_LAST} at one tick a "
                         "minute (see above)")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    retention = Retention()
    progress_file = args.dir / "progress.json"
    if progress_file.exists():
        progress = json.loads(progress_file.read_text())
    else:
        now_ns = time.time_ns()
        end_ns = now_ns - now_ns % NS_PER_S
        progress = {"start_ns": end_ns - args.days * DAY_NS, "days_done": 0, "per_day": []}
        progress_file.write_text(json.dumps(progress))
    simulate(args.dir, args.days, progress, retention, args.fast_forward)
    out = measure(args.dir, progress, retention)
    if args.json:
        args.json.write_text(json.dumps({"progress": progress, "result": out}, indent=1))
    print(markdown(args.days, out))


if __name__ == "__main__":
    main()
