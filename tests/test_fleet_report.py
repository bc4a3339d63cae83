"""Issue 15: a fleet of agents (their real ledgers, outboxes, deliverers and sinks) into one real influxd with
the tiered layout; ``report --from-influx`` over all hosts equals the sum of the hosts' own ledgers, a 4-host
job is one row (``--per-host`` splits it into the hosts' figures), and clock skew between hosts changes nothing.

The hosts tick every 30 s of simulated time over the last five hours before now (InfluxDB refuses points
older than a retention policy, so the data must be recent), with retentions short enough that the report has
to read all three tiers: raw ticks for the last ~1 h, minute sums for ~2 h, hour sums for the rest.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.fleet_sim import FleetStream, SimHost, run_ticks
from tests.influx_server import InfluxServer
from wattledger import report as rp
from wattledger.agent.provision import setup
from wattledger.agent.sinks import make_sink
from wattledger.agent.sinks.routing import routing
from wattledger.config import Config
from wattledger.model.points import WL_CARBON, Point
from wattledger.model.units import HOUR_NS, MINUTE_NS, NS_PER_S

pytestmark = [pytest.mark.influx, pytest.mark.slow]

HOSTS = ["gpu-a", "gpu-b", "gpu-c", "gpu-d"]
SKEWS_S = [-7, 0, 3, 45]  # seconds each host's clock is off
STEP_S = 30


def fleet_cfg(url: str, db: str) -> Config:
    cfg = Config()
    cfg.sink.url, cfg.sink.database = url, db
    cfg.influx.raw_days, cfg.influx.minutes_days, cfg.influx.hours_days = 0.05, 0.1, 0.0  # 72 min, 144 min, forever
    cfg.carbon.zone, cfg.carbon.provider = "DE", "electricitymaps"
    cfg.spool.max_rows = 1_000_000
    return cfg


def carbon(start_ns: int, hours: int) -> list[Point]:
    return [Point(WL_CARBON, {"zone": "DE", "provider": "electricitymaps", "kind": "actual"},
                  {"g_per_kwh": 200.0 + 37.0 * (h % 7)}, start_ns + h * HOUR_NS) for h in range(-1, hours + 2)]


def run_fleet(influxd: InfluxServer, tmp_path: Path, db: str, skews_s: list[int], now: int | None = None
              ) -> tuple[Config, list[SimHost], int]:
    """Four to five hours of four hosts into ``db``, up to ``now``; returns the config, the hosts and the
    data's start (the same stream for the same ``now``)."""
    cfg = fleet_cfg(influxd.url, db)
    setup(cfg)
    now = now or time.time_ns()
    start = now - now % HOUR_NS - 4 * HOUR_NS  # between 4 and 5 hours ago, on the hour
    stream = FleetStream(HOSTS, cpus=1, gpus=2, slots=3, job_ticks=50, multi_node=1, group=4, interval_s=STEP_S)
    hosts = [SimHost.start(h, tmp_path / db / h, cfg, make_sink(cfg.sink, routing(cfg)), s * NS_PER_S)
             for h, s in zip(HOSTS, skews_s)]
    for h in hosts:
        h.commit(carbon(start, 6), agent_point=False)  # each host's carbon sync wrote the same intensities
    for _ in run_ticks(stream, hosts, start, int((now - start) // (STEP_S * NS_PER_S))):
        pass
    for h in hosts:
        assert h.flush(60), f"{h.name} kept points spooled"
    return cfg, hosts, start


Figures = dict[tuple[str, ...], tuple[float, float, float]]


def summed(reports: list[rp.Report]) -> Figures:
    out: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in reports:
        for row in r.rows:
            out[row.key][0] += row.it_j
            out[row.key][1] += row.g_co2e
            out[row.key][2] += row.embodied_g
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def figures(r: rp.Report) -> Figures:
    """Per row: IT energy, operational CO2e and embodied carbon (wl_embodied, rolled up like wl_job)."""
    return {row.key: (row.it_j, row.g_co2e, row.embodied_g) for row in r.rows}


def assert_same(a: Figures, b: Figures) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9), k
    assert sum(v[2] for v in a.values()) > 0  # the embodied carbon went through the tiers too


def test_fleet_report_equals_the_hosts_ledgers_across_tiers_and_skewed_clocks(influxd: InfluxServer,
                                                                              tmp_path: Path) -> None:
    cfg, hosts, start = run_fleet(influxd, tmp_path, "fleet_skewed", SKEWS_S)
    client = rp.InfluxQL.from_config(cfg)
    now = time.time_ns()
    until = now - now % MINUTE_NS
    recent = until - 2 * HOUR_NS  # a minute two hours ago, not on the hour: minute sums are left from there
    # From the first hour on, by user (older hours keep no job names), and from `recent` by job too.
    for since, by in ((start, "user"), (start, "project"), (recent, "user"), (recent, "job")):
        got = rp.from_influx(client, cfg, since, until, rp.Options(by=by))
        assert got.since_ns == since and got.until_ns == until
        mine = [rp.from_ledger(h.ledger, cfg, since, until, rp.Options(by=by)) for h in hosts]
        assert_same(figures(got), summed(mine))
    tiers = {r.rp for r in rp.tiers.reads(client.query, recent, until, True, "", "").reads}
    assert tiers == {"raw", "minutes", "hours"}  # every tier was read

    # The 4-host job: one row, equal to the sum of its four ledgers; --per-host gives each host's figure.
    got = rp.from_influx(client, cfg, recent, until, rp.Options(by="job", per_host=True))
    multi = [row for row in got.rows if row.key[0].startswith("slurm-")]
    ledgers = {h.name: {r.key: r for r in rp.from_ledger(h.ledger, cfg, recent, until, rp.Options(by="job")).rows}
               for h in hosts}
    # Every job that runs wholly inside the window is on all four hosts. One that ends (or starts) within a
    # host's clock skew of the window's edge has ticks inside it on the later clocks only: its row then
    # holds exactly those hosts, as their own ledgers say.
    assert sum(len(row.hosts) == 4 for row in multi) >= 3
    for row in multi:
        assert set(row.hosts) == {name for name, own in ledgers.items() if row.key in own}
        for name, part in row.hosts.items():
            own = ledgers[name][row.key]
            assert part.it_j == pytest.approx(own.it_j, rel=1e-9)
            assert part.g_co2e == pytest.approx(own.g_co2e, rel=1e-9)
    # --host keeps one host: its own ledger's report.
    one = rp.from_influx(client, cfg, recent, until, rp.Options(by="job", host="gpu-c"))
    assert_same(figures(one), figures(rp.from_ledger(hosts[2].ledger, cfg, recent, until, rp.Options(by="job"))))
    # Older than the minute sums, a report by job says why tagged jobs have no names.
    old = rp.from_influx(client, cfg, start, until, rp.Options(by="job"))
    assert any("no job name" in n for n in old.notes())
    for h in hosts:
        h.close()


def test_clock_skew_between_hosts_does_not_change_the_figures(influxd: InfluxServer, tmp_path: Path) -> None:
    """The same fleet with and without skewed clocks: the same energy per job once the window holds all of it."""
    now = time.time_ns()
    cfg, straight, start = run_fleet(influxd, tmp_path, "fleet_straight", [0, 0, 0, 0], now)
    cfg2, skewed, _ = run_fleet(influxd, tmp_path, "fleet_skew2", SKEWS_S, now)
    end = time.time_ns() + 5 * MINUTE_NS  # after every point, even those of the host 45 s ahead
    a = rp.from_influx(rp.InfluxQL.from_config(cfg), cfg, start, end, rp.Options(by="user"))
    b = rp.from_influx(rp.InfluxQL.from_config(cfg2), cfg2, start, end, rp.Options(by="user"))
    assert {k: v[0] for k, v in figures(a).items()} == pytest.approx({k: v[0] for k, v in figures(b).items()},
                                                                     rel=1e-9)
    # And each equals its own hosts' ledgers, CO2e included (the skewed hosts' hours are their clocks' hours).
    assert_same(figures(b), summed([rp.from_ledger(h.ledger, cfg2, start, end, rp.Options(by="user"))
                                    for h in skewed]))
    for h in straight + skewed:
        h.close()
