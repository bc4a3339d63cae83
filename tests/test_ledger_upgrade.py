"""A ledger written before rollups (layout 1: one table per measurement, tags as text in every row) is
moved to the compact layout on first open by a writer, without losing or doubling a row."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from wattledger.model.points import SCHEMA, WL_EMBODIED, WL_JOB, WL_NODE
from wattledger.store.errors import StorageError
from wattledger.store.ledger import Ledger

T0 = 1_709_596_800 * 10**9


def layout_1(path: Path, ticks: int) -> tuple[float, float]:
    """The tables the previous wattledger created, with ``ticks`` ticks of 2 pools x 3 jobs and 2 spooled
    points; the (node, job) energy it holds."""
    db = sqlite3.connect(str(path))
    for m, (tags, fields) in SCHEMA.items():
        cols = ", ".join([f"{t} TEXT NOT NULL DEFAULT ''" for t in tags] + [f"{f} REAL" for f in fields])
        db.execute(f"CREATE TABLE {m} (time_ns INTEGER NOT NULL, {cols})")
        db.execute(f"CREATE INDEX {m}_time ON {m}(time_ns)")
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, measurement TEXT NOT NULL, "
               "tags TEXT NOT NULL, fields TEXT NOT NULL, time_ns INTEGER NOT NULL)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    node_j = job_j = 0.0
    for i in range(ticks):
        t = T0 + i * 5 * 10**9
        for dev, e in (("package-0", 10.0 + i / 7), ("package-1", 3.0 + i / 11)):
            db.execute("INSERT INTO wl_node (time_ns, host, component, device, source, energy_j, power_w, "
                       "interval_s) VALUES (?, 'h', 'cpu', ?, 'rapl', ?, ?, 5.0)", (t, dev, e, e / 5))
            node_j += e
            for k in range(3):
                db.execute("INSERT INTO wl_job (time_ns, host, job, user, component, device, source, energy_j, "
                           "dynamic_j, static_j, driver_s) VALUES (?, 'h', ?, 'u', 'cpu', ?, 'rapl', ?, ?, ?, 1.0)",
                           (t, f"j{k}", dev, e / 3, e / 6, e / 6))
                job_j += e / 3
                if dev == "package-0":  # one row per job and tick for the host's parts
                    db.execute("INSERT INTO wl_embodied (time_ns, host, job, user, component, device, embodied_g, "
                               "cpu_g) VALUES (?, 'h', ?, 'u', 'host', 'host', 0.004, 0.001)", (t, f"j{k}"))
    for i in range(2):
        db.execute("INSERT INTO outbox (measurement, tags, fields, time_ns) VALUES ('wl_node', ?, ?, ?)",
                   (json.dumps({"host": "h"}), json.dumps({"energy_j": 1.0}), T0 + i))
    db.execute("INSERT INTO meta VALUES ('outbox_rows', '2')")
    db.commit()
    db.close()
    return node_j, job_j


def test_a_layout_1_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    node_j, job_j = layout_1(path, 1500)
    with pytest.raises(StorageError, match="start the agent once"):
        Ledger(path, readonly=True)  # a reader never changes the file
    ledger = Ledger(path, spool=True)
    nodes, jobs = ledger.rows(WL_NODE), ledger.rows(WL_JOB)
    assert (len(nodes), len(jobs)) == (3000, 9000)
    assert sum(r["energy_j"] for r in nodes) == pytest.approx(node_j, abs=3000e-6)
    assert sum(r["energy_j"] for r in jobs) == pytest.approx(job_j, abs=9000e-6)
    # Per tick and pool the jobs now add up to the node exactly (they were apportioned on the way).
    by_pool: dict[tuple[object, ...], int] = {}
    for r in jobs:
        key = (r["time_ns"], r["device"])
        by_pool[key] = by_pool.get(key, 0) + round(r["energy_j"] * 1e6)
    assert all(by_pool[(r["time_ns"], r["device"])] == round(r["energy_j"] * 1e6) for r in nodes)
    assert ledger.spool_counts()["spooled"] == 2 and len(ledger.pending().ids) == 2
    # The embodied carbon (issue 16) moved too, and the ledger made the job_tick rows report --job reads.
    grams = ledger.rows(WL_EMBODIED)
    assert len(grams) == 3 * 1500 and all(r["embodied_g"] == 0.004 and r["cpu_g"] == 0.001 for r in grams)
    (j0,) = ledger.job_ticks("j0", T0, T0 + 1500 * 5 * 10**9)
    assert (j0["ticks"], j0["active_s"], j0["first_ns"]) == (1500, 1500 * 5.0, T0 - 5 * 10**9)
    assert j0["host_j"] == pytest.approx(node_j, abs=3000e-6)
    db = ledger.connection()
    tables = {r[0]: r[1] for r in db.execute("SELECT name, type FROM sqlite_master")}
    assert tables["wl_job"] == "view" and "v1_wl_job" not in tables
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # VACUUMed once: space can be given back
    assert db.execute("SELECT COUNT(*) FROM wl_job").fetchone()[0] == 9000  # the old name still reads
    ledger.close()
    Ledger(path).close()  # opening again changes nothing
    assert len(Ledger(path, readonly=True).rows(WL_JOB)) == 9000
