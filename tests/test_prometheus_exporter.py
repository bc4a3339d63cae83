"""The Prometheus endpoint: counters folded from committed ticks, served over HTTP, continued across restarts.

The counters' arithmetic by property (agent/metrics.py); the endpoint with a
real agent loop and prometheus-client's own parser of the text it serves
(agent/exporter.py); the ``[prometheus]`` keys. With a real Prometheus:
tests/test_prometheus_e2e.py.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.clocks import FakeClock
from tests.influx_server import free_port
from wattledger.agent.exporter import SNAPSHOT_KEY, Exporter, ExporterError
from wattledger.agent.factory import build_agent
from wattledger.agent.loop import Agent
from wattledger.agent.metrics import Counters
from wattledger.config import Config, ConfigError, listen_address, load
from wattledger.model.activity import ProcSample
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_AGENT, WL_CARBON, WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergyCounter, EnergySample
from wattledger.store.ledger import Ledger

T0 = 1_800_000_000_000_000_000
S = 1_000_000_000
A = JobKey("train-a", "alice", "nlp", "train")
B = JobKey("eval-b", "bob")


# -- the counters (pure) ------------------------------------------------------------------------
def _tick(t: int, charges: dict[str, float]) -> list[Point]:
    points = [Point(WL_NODE, {"host": "h", "component": "cpu", "device": "package-0", "source": "rapl"},
                    {"energy_j": sum(charges.values()), "power_w": 1.0, "interval_s": 1.0}, t),
              Point(WL_AGENT, {"host": "h"}, {"tick_s": 0.01, "cpu_s": 0.002, "rss_bytes": 3e7}, t)]
    points += [Point(WL_JOB, {"host": "h", "job": job, "user": "u", "component": "cpu", "device": "package-0",
                              "source": "rapl"}, {"energy_j": e}, t) for job, e in charges.items()]
    return points


ticks_strategy = st.lists(st.dictionaries(st.sampled_from(["a", "b", "_idle", "_system"]),
                                          st.floats(0, 1e4, allow_nan=False), max_size=4), max_size=30)


@given(ticks_strategy)
def test_counters_are_the_sums_of_the_ticks(ticks: list[dict[str, float]]) -> None:
    c = Counters()
    expected: dict[str, float] = defaultdict(float)
    for i, charges in enumerate(ticks):
        c.fold(_tick(T0 + i * S, charges))
        for job, e in charges.items():
            expected[job] += e
    assert {k[1]: s.energy_j for k, s in c.jobs.items()} == pytest.approx(dict(expected))
    assert c.ticks == len(ticks)
    assert sum(c.node_j().values()) == pytest.approx(sum(expected.values()))


@given(ticks_strategy, st.integers(0, 30))
def test_a_snapshot_continues_the_same_counters(ticks: list[dict[str, float]], cut: int) -> None:
    whole, part = Counters(), Counters()
    for i, charges in enumerate(ticks):
        whole.fold(_tick(T0 + i * S, charges))
        if i < cut:
            part.fold(_tick(T0 + i * S, charges))
    part.exposed()
    resumed = Counters.from_json(part.to_json())
    for i, charges in enumerate(ticks[cut:], start=cut):
        resumed.fold(_tick(T0 + i * S, charges))
    assert {k: s.energy_j for k, s in resumed.jobs.items()} == pytest.approx(
        {k: s.energy_j for k, s in whole.jobs.items()})
    # a restored series is already known to Prometheus: it is never shown at 0 again (that reads as a reset)
    assert all(s.shown for k, s in resumed.jobs.items() if k in part.jobs)


def test_a_new_series_is_shown_at_zero_once() -> None:
    """increase() counts from a series' first sample: a job's first ticks count only if it starts at 0."""
    c = Counters()
    c.fold(_tick(T0, {"a": 5.0}))
    assert dict(c.exposed()) == {("h", "a", "u", "", "", "cpu", "package-0"): 0.0}
    c.fold(_tick(T0 + S, {"a": 2.0, "b": 1.0}))
    assert {k[1]: v for k, v in c.exposed()} == {"a": 7.0, "b": 0.0}
    assert {k[1]: v for k, v in c.exposed()} == {"a": 7.0, "b": 1.0}


def test_inactive_jobs_are_no_longer_exposed() -> None:
    c = Counters()
    c.fold(_tick(T0, {"a": 1.0, "b": 1.0}))
    c.fold(_tick(T0 + 100 * S, {"a": 1.0}))
    c.prune(T0 + 100 * S, 60 * S)
    assert [k[1] for k in c.jobs] == ["a"] and c.pruned == 1


def test_snapshots_of_another_version_are_refused() -> None:
    with pytest.raises(ValueError):
        Counters.from_json('{"version": 99}')


# -- the endpoint ---------------------------------------------------------------------------------
class TwoJobs:
    """A process reader with two busy jobs, A twice as busy as B."""

    name = "procfs"

    def __init__(self) -> None:
        self.first = True

    def read(self, read_ns: int, want_pids: Sequence[int] = ()) -> ProcSample:
        first, self.first = self.first, False
        return ProcSample(read_ns, first, 1.5, 2.0, 2, {} if first else {A: 1.0, B: 0.5}, {A: 1.0, B: 1.0})


class Cpu:
    name = "cpu"

    def read(self, read_ns: int) -> EnergySample:
        return EnergySample(read_ns, (EnergyCounter("cpu", "package-0", "rapl", (read_ns - T0) // 1000 * 30),))


def make(tmp_path: Path, port: int | None = None, window_s: float = 900.0) -> tuple[Agent, Ledger, FakeClock]:
    cfg = Config()
    cfg.prometheus.listen = f"127.0.0.1:{port or free_port()}"
    cfg.prometheus.active_window_s = window_s
    cfg.attribution.idle_power_w = {"cpu": 10.0}
    ledger = Ledger.in_state_dir(tmp_path)
    now = [T0]
    clock = FakeClock(lambda: now[0])
    clock.now = now  # type: ignore[attr-defined]
    agent = build_agent(cfg, ledger, energy=[Cpu()], procs=TwoJobs(), clock=clock, host="h1", exporter=True,
                        carbon_sync=False)
    return agent, ledger, clock


def advance(agent: Agent, clock: FakeClock, ticks: int) -> None:
    for _ in range(ticks):
        clock.now[0] += S  # type: ignore[attr-defined]
        agent.commit(agent.tick())


def scrape(agent: Agent) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    assert agent.exporter is not None
    with urllib.request.urlopen(f"http://{agent.exporter.cfg.prometheus.listen}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def job_energy(ledger: Ledger, tag: str) -> float:
    return sum(float(r["energy_j"]) for r in ledger.rows(WL_JOB) if r["job"] == tag)


def test_the_endpoint_serves_the_ledger_as_counters(tmp_path: Path) -> None:
    agent, ledger, clock = make(tmp_path)
    assert agent.exporter is not None
    agent.exporter.start()
    try:
        agent.commit(agent.tick())  # baseline
        advance(agent, clock, 3)
        assert len(agent.exporter._pending) == 4 and agent.exporter._counters.ticks == 0  # nothing folded yet
        first = scrape(agent)
        jobs = first["wattledger_job_energy_joules_total"]
        a_key = (("component", "cpu"), ("device", "package-0"), ("host", "h1"), ("job", "train-a"),
                 ("phase", "train"), ("project", "nlp"), ("user", "alice"))
        assert jobs[a_key] == 0.0  # new series start at 0
        advance(agent, clock, 2)
        metrics = scrape(agent)
        assert metrics["wattledger_job_energy_joules_total"][a_key] == pytest.approx(job_energy(ledger, "train-a"))
        node = metrics["wattledger_node_energy_joules_total"][(("host", "h1"),)]
        assert node == pytest.approx(sum(float(r["energy_j"]) for r in ledger.rows(WL_NODE)))
        assert metrics["wattledger_agent_ticks_total"][(("host", "h1"),)] == 5
        assert metrics["wattledger_pue_ratio"][(("host", "h1"), ("site", ""))] == 1.58
        assert metrics["wattledger_grid_intensity_grams_per_kwh"][
            (("host", "h1"), ("provider", "static"), ("zone", "WORLD"))] == 480.0
        assert "wattledger_agent_process_cpu_seconds_total" in metrics
    finally:
        agent.close()


def test_a_killed_agent_continues_its_counters_from_the_ledger(tmp_path: Path) -> None:
    agent, ledger, clock = make(tmp_path)
    agent.commit(agent.tick())
    advance(agent, clock, 3)
    assert agent.exporter is not None
    agent.exporter.snapshot()
    advance(agent, clock, 4)  # committed to the ledger after the last snapshot; then the agent dies
    restarted = Exporter(agent.cfg, ledger, "h1")
    counters = restarted._counters
    assert counters.ticks == 7
    assert {k[1]: s.energy_j for k, s in counters.jobs.items()}["train-a"] == pytest.approx(job_energy(ledger, "train-a"))


def test_a_snapshot_older_than_the_window_starts_the_counters_again(tmp_path: Path) -> None:
    agent, ledger, clock = make(tmp_path, window_s=10.0)
    agent.commit(agent.tick())
    advance(agent, clock, 2)
    assert agent.exporter is not None
    agent.exporter.snapshot()
    advance(agent, clock, 20)
    assert Exporter(agent.cfg, ledger, "h1")._counters.ticks == 0


def test_the_hours_intensity_comes_from_the_ledger(tmp_path: Path) -> None:
    agent, ledger, clock = make(tmp_path)
    ledger.append([Point(WL_CARBON, {"zone": "WORLD", "provider": "ukci", "kind": k}, {"g_per_kwh": g}, T0)
                   for k, g in (("forecast", 200.0), ("actual", 150.0))])
    assert agent.exporter is not None
    agent.exporter.start()
    try:
        advance(agent, clock, 2)
        gauges = scrape(agent)["wattledger_grid_intensity_grams_per_kwh"]
        assert gauges == {(("host", "h1"), ("provider", "ukci"), ("zone", "WORLD")): 150.0}  # actual beats forecast
    finally:
        agent.close()


def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        agent, _, _ = make(tmp_path, port=busy.getsockname()[1])
        assert agent.exporter is not None
        with pytest.raises(ExporterError, match=r"\[prometheus\] listen.*choose a free port"):
            agent.exporter.start()


def test_a_clean_stop_waits_for_one_last_scrape(tmp_path: Path) -> None:
    agent, _, clock = make(tmp_path)
    assert agent.exporter is not None
    agent.exporter.start()
    agent.commit(agent.tick())
    scrape(agent)
    scrape(agent)
    advance(agent, clock, 1)
    started = time.monotonic()
    agent.close()  # nobody scrapes again: it waits ~2.5 recent intervals (short here), then stops
    assert time.monotonic() - started < 5.0
    assert agent.exporter.scrapes == 2


# -- [prometheus] ------------------------------------------------------------------------------------
@pytest.mark.parametrize("given_, stored, address", [
    ("", "", None),
    ("9464", "127.0.0.1:9464", ("127.0.0.1", 9464)),
    (":9464", "127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:9100", "0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9464", "[::1]:9464", ("::1", 9464)),
])
def test_listen_values(tmp_path: Path, given_: str, stored: str, address: tuple[str, int] | None) -> None:
    cfg = load(None, environ={"WATTLEDGER_PROMETHEUS_LISTEN": given_})
    assert cfg.prometheus.listen == stored and listen_address(cfg.prometheus.listen) == address


@pytest.mark.parametrize("bad", ["http://x:1", "70000", "host:", "::1:9464", "nine"])
def test_bad_listen_values_say_what_is_allowed(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"\[prometheus\] listen must be empty \(off\), a port"):
        load(None, environ={"WATTLEDGER_PROMETHEUS_LISTEN": bad})


def test_off_by_default(tmp_path: Path) -> None:
    assert Config().prometheus.listen == ""
    plain = build_agent(Config(), Ledger.in_state_dir(tmp_path), energy=[Cpu()], procs=TwoJobs(), exporter=True,
                        carbon_sync=False)
    assert plain.exporter is None


def test_the_snapshot_lives_in_the_ledger(tmp_path: Path) -> None:
    agent, ledger, clock = make(tmp_path)
    agent.commit(agent.tick())
    advance(agent, clock, 2)
    agent.close()
    saved = ledger.get_meta(SNAPSHOT_KEY)
    assert saved is not None and Counters.from_json(saved).ticks == 2


def test_without_scrapes_the_queue_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody scrapes (Prometheus down): the tick folds the queue itself once it holds enough points."""
    import wattledger.agent.exporter as exporter_module

    monkeypatch.setattr(exporter_module, "MAX_PENDING_POINTS", 50)
    agent, _, clock = make(tmp_path)
    assert agent.exporter is not None
    agent.commit(agent.tick())
    advance(agent, clock, 30)  # 4-5 points a tick
    assert agent.exporter._pending_points < 50 and agent.exporter._counters.ticks >= 5
