"""Prometheus, end to end: Debian's prometheus scrapes the real agent's /metrics every second.

The agent runs as the service does (the CLI) over a fixture powercap tree
whose counters a thread advances, with two tagged CPU burners. It is
restarted three times: killed (SIGKILL: its last counter snapshot is stale,
the ticks after it are read back from the ledger), stopped cleanly
(SIGTERM: the snapshot is current), and stopped with its snapshot removed
(the counters really start again from zero: a counter reset for PromQL).

* Every pair of consecutive scrapes: the counter's step equals the ledger's
  energy of the ticks between them (each scrape carries the newest tick it
  includes, ``wattledger_agent_last_tick_timestamp_seconds``): the counters
  are the ledger, continued across restarts; after the reset the counter is
  the energy since it.
* ``increase()`` over the run, evaluated at a scrape's timestamp over a
  range that starts at the first scrape (no extrapolation at either edge),
  is the ledger's sum less only the energy the reset lost (the ticks
  committed after the last scrape before it), and within 2% of the ledger.
* The Prometheus Job dashboard's CO2e query gives the report's CO2e (the
  same energy x PUE x intensity rule, with a wl_carbon point in the ledger)
  within 2%.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.influx_server import free_port
from tests.prometheus_server import PrometheusServer
from tests.test_influx_e2e import MovingRapl
from wattledger.agent.exporter import SNAPSHOT_KEY
from wattledger.grafana import prometheus as prom
from wattledger.model.points import WL_CARBON, Point
from wattledger.model.units import HOUR_NS
from wattledger.store.ledger import Ledger
from wattledger.util.timeutil import hour_floor

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

PHASE_S = 9.0
INTENSITY = 123.4  # g/kWh in wl_carbon for the test's hours (the static WORLD figure is 480)
BURN = "import time\nwhile True:\n    t = time.monotonic()\n    while time.monotonic() - t < {busy}: pass\n    time.sleep({idle})\n"


@pytest.fixture
def burners() -> Iterator[list[str]]:
    jobs = {"burn-a": (0.09, 0.01), "burn-b": (0.03, 0.07)}
    procs = [subprocess.Popen([sys.executable, "-c", BURN.format(busy=busy, idle=idle)],
                              env=dict(os.environ, WATTLEDGER_JOB=tag, WATTLEDGER_PROJECT="prom-test"))
             for tag, (busy, idle) in jobs.items()]
    yield list(jobs)
    for p in procs:
        p.kill()
        p.wait()


class Agent:
    def __init__(self, tmp: Path, rapl: MovingRapl) -> None:
        self.port = free_port()
        self.state = tmp / "state"
        self.config = tmp / "wattledger.toml"
        self.config.write_text(f'[agent]\nstate_dir = "{self.state}"\ninterval_s = 0.5\ngpus = "never"\n'
                               f'[prometheus]\nlisten = "127.0.0.1:{self.port}"\nsnapshot_interval_s = 3\n')
        self.cmd = [sys.executable, "-m", "wattledger.cli.main", "agent", "--config", str(self.config),
                    "--sysfs-root", str(rapl.root)]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=60)
        self.proc = None
        return err

    def ledger(self) -> Ledger:
        return Ledger(self.state / "ledger.sqlite3", readonly=True)


def _seed_intensity(state: Path) -> None:
    """wl_carbon for this hour and the next (the run may cross an hour): PromQL's gauge and the report use it."""
    ledger = Ledger.in_state_dir(state)
    hour = hour_floor(time.time_ns())
    ledger.append([Point(WL_CARBON, {"zone": "WORLD", "provider": "ukci", "kind": "actual"},
                         {"g_per_kwh": INTENSITY}, h) for h in (hour, hour + HOUR_NS)])
    ledger.close()


def _forget_snapshot(state: Path) -> None:
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        db.execute("DELETE FROM meta WHERE key = ?", (SNAPSHOT_KEY,))


def test_prometheus_counters_match_the_ledger_through_restarts(tmp_path: Path, burners: list[str]) -> None:
    with MovingRapl(tmp_path / "sysfs") as rapl:
        agent = Agent(tmp_path, rapl)
        _seed_intensity(agent.state)
        server = PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{agent.port}")
        server.start()
        try:
            started_s = time.time()
            agent.start()
            time.sleep(PHASE_S)
            agent.stop(signal.SIGKILL)   # 1: killed: the snapshot is up to 3 s old, the ledger has the rest
            agent.start()
            time.sleep(PHASE_S)
            agent.stop()                 # 2: a clean stop: the snapshot is current
            agent.start()
            time.sleep(PHASE_S)
            agent.stop()
            reset_s = time.time()
            _forget_snapshot(agent.state)  # 3: the counters start again from zero: a counter reset
            agent.start()
            time.sleep(PHASE_S)
            time.sleep(1.5)  # a last scrape after the last tick we count
            err = agent.stop()
            ended_s = time.time()
            check_run(server, agent, burners, started_s, reset_s, ended_s, err)
        finally:
            if agent.proc is not None:
                agent.stop(signal.SIGKILL)
            server.stop()


def scrapes(server: PrometheusServer, started_s: float, ended_s: float, ticks: list[int]) -> list[tuple[float, int]]:
    """(scrape time s, newest tick ns it included) of every scrape that saw the agent. The gauge is float
    seconds (~0.2 us apart at today's epoch): each is matched to the ledger's tick it names."""
    found = server.samples("wattledger_agent_last_tick_timestamp_seconds", ended_s, ended_s - started_s + 5)
    assert len(found) == 1, found
    out = []
    for t, v in found[0]["values"]:
        if float(v) > 0:
            tick = min(ticks, key=lambda n: abs(n - float(v) * 1e9))
            assert abs(tick - float(v) * 1e9) < 1e4, (v, tick)
            out.append((float(t), tick))
    return out


def check_run(server: PrometheusServer, agent: Agent, burners: list[str], started_s: float, reset_s: float,
              ended_s: float, err: str) -> None:
    ledger = agent.ledger()
    try:
        rows = ledger.rows("wl_job")
        # Every committed tick with points: the first tick after a restart has no wl_agent row
        # (a baseline) but may carry the restart's gap (wl_node rows charged to _unobserved).
        ticks = sorted({int(r["time_ns"]) for m in ("wl_agent", "wl_node") for r in ledger.rows(m)})
    finally:
        ledger.close()
    seen = scrapes(server, started_s, ended_s, ticks)
    assert len(seen) >= 25, (len(seen), err[-2000:])
    last_before_reset = max(tick for t, tick in seen if t < reset_s)
    stopped_before_reset = max(t for t in ticks if t < reset_s * 1e9)
    for tag in burners:
        series = server.samples(f'{prom.JOB_E}{{job="{tag}"}}', ended_s, ended_s - started_s + 5)
        assert series, f"no series for {tag}"
        for s in series:
            check_steps(s, seen, rows, tag, stopped_before_reset)
        check_increase(server, seen, rows, tag, last_before_reset, stopped_before_reset)
    check_co2e(server, agent, seen, burners[0])


def _energy(rows: list[dict[str, Any]], tag: str, after_ns: int, upto_ns: int, **labels: str) -> float:
    return sum(float(r["energy_j"]) for r in rows if r["job"] == tag and after_ns < int(r["time_ns"]) <= upto_ns
               and all(r[k] == v for k, v in labels.items()))


def check_steps(series: dict[str, Any], seen: list[tuple[float, int]], rows: list[dict[str, Any]], tag: str,
                stopped_before_reset: int) -> None:
    """Every sample of one counter is the ledger's energy of that series from the counters' epoch to the
    newest tick the scrape included. A series is born at 0 (the first scrape that sees it shows 0, so
    that ``increase()`` counts all of it): at the start, and again after the reset (epoch: the restart)."""
    labels = {k: series["metric"][k] for k in ("component", "device")}
    tick_at = dict(seen)
    values = [(tick_at[float(t)], float(v)) for t, v in series["values"] if float(t) in tick_at]
    assert values[0][1] == 0.0, values[:3]
    epoch_ns, previous = 0, 0.0
    for tick, value in values:
        if value < previous:
            assert value == 0.0, (tick, value, previous)  # the reset: the new series is shown at 0 first
            epoch_ns = stopped_before_reset
        elif value > 0:
            assert value == pytest.approx(_energy(rows, tag, epoch_ns, tick, **labels), rel=1e-9, abs=1e-9), (
                tag, labels, tick, epoch_ns)
        previous = value


def check_increase(server: PrometheusServer, seen: list[tuple[float, int]], rows: list[dict[str, Any]], tag: str,
                   last_before_reset: int, stopped_before_reset: int) -> None:
    """PromQL increase() from the first scrape (where the series shows 0) to the last, evaluated at the last
    scrape's time: no extrapolation at either edge. It is the ledger's energy of the job, less what the reset
    lost (ticks committed after the last scrape before it; the agent waits for that scrape at a clean stop)."""
    (first_s, _), (last_s, last_tick) = seen[0], seen[-1]
    expr = f'sum(increase({prom.JOB_E}{{job="{tag}"}}[{round((last_s - first_s) * 1000)}ms]))'
    found = float(server.query(expr, last_s)[0]["value"][1])
    ledger_j = _energy(rows, tag, 0, last_tick)
    lost_j = _energy(rows, tag, last_before_reset, stopped_before_reset)
    assert found == pytest.approx(ledger_j - lost_j, rel=1e-6), (tag, found, ledger_j, lost_j)
    assert abs(found - ledger_j) <= 0.02 * ledger_j, (tag, found, ledger_j)
    print(f"\nincrease() {tag}: {found:.6g} J, ledger {ledger_j:.6g} J ({found / ledger_j - 1:+.4%}), lost at the "
          f"reset {lost_j:.3g} J")


def check_co2e(server: PrometheusServer, agent: Agent, seen: list[tuple[float, int]], tag: str) -> None:
    """The Job dashboard's CO2e (PromQL) and `wattledger report`'s, same job, same time range.

    Grafana fills in $__range and $energy_step (5 s here: a few scrapes). The query sums whole steps, so it
    is evaluated at a step boundary; what it can know ends at the newest tick the last scrape before that
    boundary included, and the report is asked for the same range."""
    step_s = 5
    at_s = seen[-1][0] // step_s * step_s
    range_s = round(at_s - seen[0][0]) // step_s * step_s + 30  # from before the agent started
    known_ns = max(tick for t, tick in seen if t <= at_s)
    expr = (prom.co2e_g(prom.JOB_E, prom.JOB).replace("$job", tag).replace("$user", ".*").replace("$host", ".*")
            .replace("$energy_step", f"{step_s}s").replace("$__range", f"{range_s}s"))
    promql_g = float(server.query(expr, at_s)[0]["value"][1])
    report = json.loads(subprocess.run(
        [sys.executable, "-m", "wattledger.cli.main", "report", "--config", str(agent.config), "--job", tag,
         "--since", _iso(at_s - range_s), "--until", _iso(known_ns / 1e9 + 1e-3), "--format", "json"],
        capture_output=True, text=True, check=True, timeout=60).stdout)
    report_g = report["total"]["g_co2e"]
    assert report["total"]["g_per_kwh"] == pytest.approx(INTENSITY, rel=1e-9)  # the seeded wl_carbon point
    print(f"\nCO2e {tag}: PromQL {promql_g:.6g} g, report {report_g:.6g} g ({promql_g / report_g - 1:+.3%})")
    assert promql_g == pytest.approx(report_g, rel=0.02), (promql_g, report_g)
    gauges = {r["metric"]["provider"]: float(r["value"][1]) for r in server.query(prom.CI, seen[-1][0])}
    assert gauges == {"ukci": INTENSITY}


def _iso(at_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at_s)) + f".{round(at_s % 1 * 1000):03d}Z"
