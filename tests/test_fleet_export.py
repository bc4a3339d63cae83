"""Issue 15: the ledger's exact rollups go through the outbox to a fleet's tiers (store/export.py, exporter.py),
and sinks route each point to its tier's retention policy (agent/sinks/routing.py)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.test_ledger_rollups import JOBS, POOLS, T0, tick
from wattledger.agent.sinks.routing import Routing, single
from wattledger.model.points import WL_AGENT, WL_CARBON, WL_JOB, WL_NODE, Point
from wattledger.model.tiers import HOURS, MINUTES, RAW, tags_at, tier_tags
from wattledger.model.units import HOUR_NS, MINUTE_NS, NS_PER_S
from wattledger.store.compact import Compactor
from wattledger.store.exporter import RollupExporter
from wattledger.store.ledger import Ledger

SHARES = [[3.0, 1.0, 0.0, 1.0], [5.0, 0.0, 1.0, 0.0], [0.0, 2.0, 1.0, 1.0]]


def run(ledger: Ledger, start_ns: int, seconds: int, step_s: int = 10) -> list[list[Point]]:
    """Ticks every ``step_s`` for ``seconds``, each committed as the agent does: append, compact, export."""
    compactor, exporter = Compactor(ledger), RollupExporter(ledger, max_buckets=10_000)
    ticks = []
    for i in range(0, seconds, step_s):
        t = start_ns + (i + step_s) * NS_PER_S
        points = tick(t, [100.0 + i % 7, 250.5, 60.25], SHARES, interval_s=step_s)
        ledger.append(points)
        compactor.catch_up(t)
        exporter.step()
        ticks.append(points)
    return ticks


def drain(ledger: Ledger) -> list[Point]:
    """Everything spooled, batch by batch as the deliverer reads it (each batch one tier)."""
    out: list[Point] = []
    while True:
        batch = ledger.pending(500)
        if not batch.ids:
            return out
        assert len({p.tier for p in batch.points}) == 1, "a batch mixes tiers"
        out += batch.points
        ledger.mark_delivered(batch.ids)


def sums(points: list[Point], tier: str, measurement: str, as_tier: str, bucket_ns: int
         ) -> dict[tuple[object, ...], float]:
    """energy_j per (bucket, tags as ``as_tier`` keeps them) of one tier's points of ``measurement``."""
    out: dict[tuple[object, ...], float] = defaultdict(float)
    keep = tags_at(as_tier, measurement)
    for p in points:
        if p.tier == tier and p.measurement == measurement:
            t = tier_tags(as_tier, measurement, dict(p.tags))
            key = (p.time_ns - p.time_ns % bucket_ns,) + tuple(t.get(k, "") for k in keep)
            out[key] += p.fields["energy_j"]
    return dict(out)


def test_every_tier_holds_the_same_energy_as_the_raw_ticks(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    run(ledger, T0, 3 * 3600 + 600)  # 3 h 10 min: three whole hours and their minutes are final
    spooled = drain(ledger)
    raw = [p for p in spooled if p.tier == RAW]
    for tier, size in ((MINUTES, MINUTE_NS), (HOURS, HOUR_NS)):
        for m in (WL_NODE, WL_JOB):
            got = sums(spooled, tier, m, tier, size)
            # The raw ticks of the buckets the tier has, summed per bucket with the tier's tags.
            want = {k: v for k, v in sums(raw, RAW, m, tier, size).items() if k[0] in {g[0] for g in got}}
            assert got.keys() == want.keys(), (tier, m)
            assert all(got[k] == pytest.approx(want[k], rel=1e-12) for k in got), (tier, m)
    hours = {p.time_ns for p in spooled if p.tier == HOURS}
    assert hours == {T0, T0 + HOUR_NS, T0 + 2 * HOUR_NS}
    assert len({p.time_ns for p in spooled if p.tier == MINUTES}) == 3 * 60 + 10  # the tick at 3:10:00 closed 3:09


def test_hours_keep_the_job_tag_only_for_the_ledgers_own_jobs(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    run(ledger, T0, 3600 + 120)
    hourly = [p for p in drain(ledger) if p.tier == HOURS and p.measurement == WL_JOB]
    jobs = {p.tags.get("job", "") for p in hourly}
    assert jobs == {"", "_idle", "_system"}  # train and eval are folded into their user/project/phase
    assert all("device" not in p.tags for p in hourly)
    users = {(p.tags.get("user", ""), p.tags.get("project", "")) for p in hourly if "job" not in p.tags}
    assert users == {("alice", "bert"), ("bob", "")}
    node = [p for p in drain(ledger) if p.tier == HOURS and p.measurement == WL_NODE]
    assert not node  # drained above already
    assert {j for j, *_ in JOBS} >= jobs - {""}


def test_a_late_tick_sends_its_exported_buckets_again_with_the_new_totals(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    run(ledger, T0, 3600 + 180)
    first = drain(ledger)
    minute = T0 + 5 * MINUTE_NS
    before = sum(p.fields["energy_j"] for p in first if p.tier == MINUTES and p.measurement == WL_NODE
                 and p.time_ns == minute)
    ledger.append(tick(minute + 30 * NS_PER_S + 1, [40.0, 0.0, 0.0], SHARES))  # the wall clock went back
    step = RollupExporter(ledger).step()
    assert step.resent == 2  # its minute and its hour
    again = drain(ledger)
    after = sum(p.fields["energy_j"] for p in again if p.tier == MINUTES and p.measurement == WL_NODE
                and p.time_ns == minute)
    assert after == pytest.approx(before + 40.0)
    hour = sum(p.fields["energy_j"] for p in again if p.tier == HOURS and p.measurement == WL_NODE)
    raw = sum(p.fields["energy_j"] for p in first + again if p.tier == RAW and p.measurement == WL_NODE
              and T0 <= p.time_ns < T0 + HOUR_NS)
    assert hour == pytest.approx(raw)  # the whole hour again, as InfluxDB must hold it


def test_an_existing_ledger_starts_exporting_from_where_it_is(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    compactor = Compactor(ledger)
    for i in range(200):
        ledger.append(tick(T0 + (i + 1) * 10 * NS_PER_S, [10.0, 0.0, 0.0], SHARES))
    compactor.catch_up(T0 + 2000 * NS_PER_S)
    drain(ledger)
    RollupExporter(ledger).step()  # first step on a ledger with history: nothing old is sent
    assert drain(ledger) == []


def test_export_is_off_for_the_single_layout_and_a_local_ledger(tmp_path: Path) -> None:
    from wattledger.agent.delivery import Deliverer
    from wattledger.agent.factory import build_agent
    from wattledger.agent.sinks.stdout import StdoutSink
    from wattledger.collectors.procs import ProcCollector
    from wattledger.config import Config, Layout

    cfg = Config()
    cfg.agent.state_dir = str(tmp_path)
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    procs = ProcCollector(procfs_root=tmp_path / "no-proc")
    deliverer = Deliverer(ledger, StdoutSink())
    assert build_agent(cfg, ledger, energy=[], procs=procs, carbon_sync=False).rollups is None  # local only
    cfg.influx.layout = Layout.SINGLE
    assert build_agent(cfg, ledger, energy=[], procs=procs, carbon_sync=False, deliverer=deliverer).rollups is None
    cfg.influx.layout = Layout.TIERED
    assert build_agent(cfg, ledger, energy=[], procs=procs, carbon_sync=False,
                       deliverer=deliverer).rollups is not None


# -- routing ---------------------------------------------------------------------------------------------------

TARGETS = {RAW: "raw", MINUTES: "minutes", HOURS: "hours"}
NOW = T0 + 10 * 86_400 * NS_PER_S


def point(m: str, tier: str, age_days: float) -> Point:
    return Point(m, {"host": "h"}, {"energy_j": 1.0}, NOW - int(age_days * 86_400 * NS_PER_S), tier)


def test_points_go_to_their_tier_carbon_to_every_tier_the_agent_point_to_raw() -> None:
    r = Routing(TARGETS)
    groups, expired = r.split([point(WL_JOB, RAW, 0), point(WL_JOB, HOURS, 0), point(WL_CARBON, RAW, 0),
                               point(WL_AGENT, RAW, 0)], NOW)
    assert expired == 0
    assert {t: [(p.measurement, p.tier) for p in g] for t, g in groups.items()} == {
        "raw": [(WL_JOB, RAW), (WL_CARBON, RAW), (WL_AGENT, RAW)],
        "hours": [(WL_JOB, HOURS), (WL_CARBON, RAW)],
        "minutes": [(WL_CARBON, RAW)],
    }


def test_points_older_than_their_tier_are_left_out_and_counted() -> None:
    r = Routing(TARGETS, {RAW: 2.0, MINUTES: 90.0, HOURS: 0.0})
    groups, expired = r.split([point(WL_JOB, RAW, 3), point(WL_JOB, RAW, 1), point(WL_JOB, MINUTES, 3),
                               point(WL_JOB, MINUTES, 91), point(WL_CARBON, RAW, 30), point(WL_JOB, HOURS, 900)],
                              NOW)
    assert expired == 2  # the 3-day-old raw tick and the 91-day-old minute
    assert {t: len(g) for t, g in groups.items()} == {"raw": 1, "minutes": 2, "hours": 2}


def test_single_layout_writes_each_point_once() -> None:
    groups, _ = single("").split([point(WL_CARBON, RAW, 0), point(WL_JOB, RAW, 0)], NOW)
    assert list(groups) == [""] and len(groups[""]) == 2
    # Sums spooled before the layout became single would count the raw ticks twice in the one policy.
    groups, _ = single("").split([point(WL_JOB, MINUTES, 0), point(WL_JOB, HOURS, 0)], NOW)
    assert groups == {}


def test_a_tiered_sink_writes_each_tier_to_its_retention_policy(influxd: object, tmp_path: Path) -> None:
    from tests.influx_server import InfluxServer
    from wattledger.agent.sinks.influx_v1 import InfluxV1Sink

    assert isinstance(influxd, InfluxServer)
    db = "fleet_routing"
    influxd.create_db(db)
    for rp in TARGETS:
        influxd.query(f'CREATE RETENTION POLICY "{rp}" ON "{db}" DURATION 0s REPLICATION 1')
    sink = InfluxV1Sink(influxd.url, db, routing=Routing(TARGETS))
    now = T0 + 3 * HOUR_NS
    pts = [Point(WL_JOB, {"host": "h", "job": "a"}, {"energy_j": float(i)}, now + i, tier)
           for i, tier in enumerate((RAW, MINUTES, HOURS))]
    assert sink.write(pts + [Point(WL_CARBON, {"zone": "DE"}, {"g_per_kwh": 300.0}, now)]).ok
    for i, rp in enumerate(TARGETS):
        rows = influxd.series_values(f'SELECT energy_j FROM "{rp}"."wl_job"', db)
        assert [r["energy_j"] for r in rows] == [i]
        assert len(influxd.series_values(f'SELECT g_per_kwh FROM "{rp}"."wl_carbon"', db)) == 1
    assert POOLS  # the fixture's pools are the ones tick() charges


def test_a_measurement_without_rows_does_not_hold_folding_back(tmp_path: Path) -> None:
    """wl_embodied has no rows when [embodied] is off: compaction must still fold this minute at once, not
    walk from 1970 a month per step (which kept a new agent from sending minute sums for hundreds of ticks)."""
    from wattledger.store import rollup
    from wattledger.store.schema import MINUTE, level_table

    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    compactor = Compactor(ledger)
    t = T0 + 10 * NS_PER_S
    for i in range(8):
        points = tick(t + i * 10 * NS_PER_S, [10.0, 0.0, 0.0], SHARES)
        ledger.append([p for p in points if p.measurement != "wl_embodied"])
        compactor.step(t + i * 10 * NS_PER_S)
    db = ledger.connection()
    assert rollup.folded(db, level_table(WL_NODE, MINUTE)) == T0 + MINUTE_NS
    assert rollup.folded(db, level_table("wl_embodied", MINUTE)) == T0 + MINUTE_NS


def test_resend_replays_the_minute_and_hour_sums_too(influxd: object, tmp_path: Path) -> None:
    """After a spool overflow (or into a new server), `wattledger resend` sends a range's sums as well."""
    from tests.influx_server import InfluxServer
    from wattledger.agent.resend import resend
    from wattledger.agent.sinks.influx_v1 import InfluxV1Sink

    assert isinstance(influxd, InfluxServer)
    db = "fleet_resend"
    influxd.create_db(db)
    for rp in TARGETS:
        influxd.query(f'CREATE RETENTION POLICY "{rp}" ON "{db}" DURATION 0s REPLICATION 1')
    ledger = Ledger(tmp_path / "l.sqlite3")  # no spool: nothing was delivered
    run(ledger, T0, 2 * 3600 + 120)
    sink = InfluxV1Sink(influxd.url, db, routing=Routing(TARGETS))
    out = resend(ledger, sink, T0, T0 + 3 * HOUR_NS, raw_kept_ns=ledger.raw_kept_ns(), tiers=True)
    assert out.stopped is None and out.sent == out.points
    hours = influxd.series_values('SELECT sum("energy_j") FROM "hours"."wl_node" GROUP BY time(1h) fill(none)', db)
    raw = influxd.series_values('SELECT sum("energy_j") FROM "raw"."wl_node" WHERE time < '
                                f'{T0 + 2 * HOUR_NS} GROUP BY time(1h) fill(none)', db)
    assert [r["sum"] for r in hours] == pytest.approx([r["sum"] for r in raw]) and len(hours) == 2
    minutes = influxd.series_values('SELECT count("energy_j") FROM "minutes"."wl_node"', db)
    assert minutes[0]["count"] == (2 * 60 + 2) * len(POOLS)
