"""The optional Prometheus endpoint (``[prometheus] listen``): counters from the last committed tick.

Off by default. When on, the agent serves ``/metrics`` (prometheus-client's
WSGI server, its own daemon threads; GET only, nothing can be written):

* ``wattledger_job_energy_joules_total{host,job,user,project,phase,component,device}``:
  joules charged to each job, cumulative; only jobs charged within
  ``[prometheus] active_window_s`` of the newest tick are exposed;
* ``wattledger_pool_energy_joules_total{host,component,device,source}`` and
  ``wattledger_node_energy_joules_total{host}`` (the sum of the pools), the
  pools' last power and idle power;
* ``wattledger_pue_ratio`` and ``wattledger_grid_intensity_grams_per_kwh``
  for the current hour (the ledger's ``wl_pue`` / ``wl_carbon`` by the
  report's rule, else the configured figures), so PromQL can apply
  energy x PUE x intensity per hour as the other dashboards do;
* the agent's health: ticks, its CPU, the last tick's duration and RSS,
  spool figures, delivery errors, the process collector's figures.

No work on the tick path: ``committed`` only appends a reference to the
tick's points to a queue. A scrape folds the queued ticks into the counters
(``agent.metrics``), saves them when a snapshot is due and renders them, in
the server's thread. Only if nobody scrapes while ``MAX_PENDING_POINTS``
points wait does the tick fold the queue itself (and save), so the queue's
memory stays bounded (a few MB).

Counters continue across agent restarts: a snapshot is kept in the ledger's
meta table (at a scrape at most every ``snapshot_interval_s``, and at a clean
stop) and a starting agent loads it and folds the ledger rows committed after
it (a crash loses none). If more than the active window of ticks came after
it, it is dropped: the series start again from zero, which
``increase()``/``rate()`` read as a counter reset. A new series is shown at 0 first, and a clean stop waits for
one last scrape (at most ``LINGER_MAX_S``), so that PromQL sees every joule.
docs/prometheus.md has the PromQL side.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from wattledger.agent.metrics import JOB_LABELS, POOL_LABELS, Counters, points_of_rows
from wattledger.carbon import UnknownZone, fallback_intensity
from wattledger.carbon.hourly import intensity_by_hour
from wattledger.carbon.pue import pue_series
from wattledger.config import Config, listen_address
from wattledger.model.points import WL_AGENT, WL_CARBON, WL_JOB, WL_NODE, WL_PUE, Point
from wattledger.model.units import HOUR_NS, NS_PER_S
from wattledger.store.ledger import Ledger
from wattledger.util.logonce import LogOnce
from wattledger.util.timeutil import hour_floor

log = logging.getLogger("wattledger.prometheus")

SNAPSHOT_KEY = "prometheus_counters"
LINGER_MAX_S = 5.0  # at a clean stop, wait at most this long for Prometheus to scrape the final counters
MAX_PENDING_POINTS = 20_000  # points queued without a scrape before the tick folds them itself
CARBON_REFRESH_NS = 60 * NS_PER_S


class ExporterError(RuntimeError):
    """The endpoint cannot start; the message says what to change."""


@dataclass(frozen=True)
class CarbonNow:
    g_per_kwh: float | None
    zone: str
    provider: str
    pue: float
    site: str


class Exporter:
    """Counters for Prometheus, fed by ``Agent.commit`` and read by the HTTP server's threads."""

    def __init__(self, cfg: Config, ledger: Ledger, host: str) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.host = host
        self.window_ns = int(cfg.prometheus.active_window_s * NS_PER_S)
        self.snapshot_every_ns = int(cfg.prometheus.snapshot_interval_s * NS_PER_S)
        self._lock = threading.Lock()
        self._pending: deque[Sequence[Point]] = deque()
        self._pending_points = 0
        self._once = LogOnce(log)
        self._counters = self._restore()
        self._snapshot_ns = self._counters.last_tick_ns
        self._carbon: tuple[int, CarbonNow | None] = (-1, None)
        self._server: Any = None
        self.scrapes = 0
        self._scraped_at: deque[float] = deque(maxlen=8)  # monotonic times of the last scrapes

    # -- the tick side -----------------------------------------------------------------------------
    def committed(self, points: Sequence[Point], wall_ns: int) -> None:
        """A tick was committed: queue its points (folded at the next scrape). O(1), unless nobody scraped
        for long enough that the queue reached its bound."""
        with self._lock:
            self._pending.append(points)
            self._pending_points += len(points)
            if not self._snapshot_ns:
                self._snapshot_ns = wall_ns  # the first snapshot is one interval after the start
            overflowing = self._pending_points >= MAX_PENDING_POINTS
            if overflowing:
                self._fold_pending()
        if overflowing:
            self._maybe_snapshot()

    def _maybe_snapshot(self) -> None:
        if self._counters.last_tick_ns - self._snapshot_ns >= self.snapshot_every_ns:
            self.snapshot()

    def snapshot(self) -> None:
        """Save the counters in the ledger so that a restarted agent continues them."""
        with self._lock:
            self._fold_pending()
            text, last_ns = self._counters.to_json(), self._counters.last_tick_ns
        try:
            self.ledger.set_meta(SNAPSHOT_KEY, text)
            self._snapshot_ns = last_ns
            self._once.cleared("snapshot", "prometheus: counter snapshot saved again")
        except Exception as e:  # noqa: BLE001 - a full disk must not stop the ledger; said once
            self._once.problem("snapshot", f"prometheus: cannot save the counter snapshot in the ledger ({e}); "
                               "a restart will start the counters from zero (PromQL reads it as a reset)")

    def _fold_pending(self) -> None:
        while self._pending:
            self._counters.fold(self._pending.popleft())
        self._pending_points = 0
        if self._counters.last_tick_ns:
            self._counters.prune(self._counters.last_tick_ns, self.window_ns)

    def _restore(self) -> Counters:
        """The saved counters, plus the ledger's ticks committed after the snapshot; fresh ones if none."""
        text = self.ledger.get_meta(SNAPSHOT_KEY)
        if text is None:
            return Counters()
        try:
            counters = Counters.from_json(text)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            log.warning("prometheus: the saved counter snapshot is unreadable (%s); counters start from zero", e)
            return Counters()
        after_ns = counters.last_tick_ns + 1  # the ticks committed after the snapshot (a crash, a kill)
        newest = self.ledger.rows(WL_AGENT, since_ns=after_ns)
        if newest and int(newest[-1]["time_ns"]) - counters.last_tick_ns > self.window_ns:
            log.info("prometheus: the counter snapshot is older than active_window_s; counters start from zero")
            return Counters()
        for measurement in (WL_NODE, WL_JOB):
            counters.fold(points_of_rows(measurement, self.ledger.rows(measurement, since_ns=after_ns)))
        counters.fold(points_of_rows(WL_AGENT, newest))  # read above
        return counters

    # -- the scrape side ---------------------------------------------------------------------------
    def describe(self) -> list[Any]:
        return []  # no families known before the first tick; the registry then calls collect per scrape

    def collect(self) -> Iterator[Any]:
        """The metric families of the counters as of the last committed tick (prometheus-client API)."""
        with self._lock:
            self._fold_pending()
            c = self._counters
            jobs = c.exposed()
            pools = [(k, s.energy_j, s.power_w, s.idle_w) for k, s in c.pools.items()]
            nodes = c.node_j()
            agent = (c.ticks, c.agent_cpu_s, dict(c.agent_last), c.last_tick_ns, c.pruned)
            self.scrapes += 1
            self._scraped_at.append(time.monotonic())
        self._maybe_snapshot()
        yield from _energy_families(jobs, pools, nodes)
        yield from _agent_families(self.host, *agent, active_jobs=len({k[1:3] for k, _ in jobs}))
        yield from _carbon_families(self.host, self._carbon_now(agent[3]))

    def _await_last_scrape(self) -> None:
        """Wait for one more scrape (up to 2.5 of Prometheus' recent intervals, at most LINGER_MAX_S), so that
        the ticks committed since the last one are seen even if the counters must start from zero next time."""
        times = list(self._scraped_at)
        if self._server is None or len(times) < 2:
            return
        interval_s = (times[-1] - times[0]) / (len(times) - 1)
        deadline = time.monotonic() + min(2.5 * interval_s, LINGER_MAX_S)
        seen = self.scrapes
        while self.scrapes == seen and time.monotonic() < deadline:
            time.sleep(0.02)

    def _carbon_now(self, tick_ns: int) -> CarbonNow | None:
        """PUE and grid intensity of the newest tick's hour, re-read at most once a minute."""
        if tick_ns <= 0:
            return None
        if 0 <= tick_ns - self._carbon[0] < CARBON_REFRESH_NS:
            return self._carbon[1]
        now = current_carbon(self.cfg, self.ledger, tick_ns, self._once)
        self._carbon = (tick_ns, now)
        return now

    # -- the server --------------------------------------------------------------------------------
    def start(self) -> str:
        """Serve /metrics on ``[prometheus] listen``; returns the address. ExporterError if it cannot bind."""
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
        from prometheus_client.process_collector import ProcessCollector

        address = listen_address(self.cfg.prometheus.listen)
        if address is None:
            raise ExporterError("[prometheus] listen is empty: the endpoint is off")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        ProcessCollector(namespace="wattledger_agent", registry=registry)
        try:
            self._server, _ = start_http_server(address[1], addr=address[0], registry=registry)
        except OSError as e:
            raise ExporterError(f"cannot serve /metrics on {self.cfg.prometheus.listen} ([prometheus] listen): "
                                f"{e.strerror or e}; choose a free port or leave listen empty") from None
        log.info("prometheus: serving /metrics on http://%s/metrics", self.cfg.prometheus.listen)
        return self.cfg.prometheus.listen

    def close(self) -> None:
        """Let Prometheus scrape the final counters, stop serving and save them (the next start continues
        them exactly)."""
        self._await_last_scrape()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.snapshot()


def current_carbon(cfg: Config, ledger: Ledger, now_ns: int, once: LogOnce) -> CarbonNow:
    """The hour's intensity (wl_carbon by ``carbon.hourly``, else the static figure) and PUE."""
    hour = hour_floor(now_ns)
    zone = cfg.carbon.zone.upper()
    found = intensity_by_hour(ledger.rows(WL_CARBON, hour, hour + HOUR_NS), zone, cfg.carbon.provider).get(hour)
    g_per_kwh: float | None
    if found is not None:
        g_per_kwh, provider = found
    else:
        try:
            g_per_kwh, provider = fallback_intensity(cfg.carbon, zone).g_per_kwh, "static"
        except UnknownZone as e:
            once.problem("zone", f"prometheus: no grid intensity for zone {zone} this hour and no static figure "
                         f"({e}); the intensity gauge is left out. Run `wattledger carbon sync` or set "
                         "[carbon] g_per_kwh")
            g_per_kwh, provider = None, ""
    pue = pue_series(ledger.rows(WL_PUE, hour, hour + HOUR_NS), site=cfg.pue.site, constant=cfg.pue.value,
                     constant_source="[pue] value").at(hour)
    return CarbonNow(g_per_kwh, zone, provider, pue, cfg.pue.site)


# -- metric families (prometheus-client objects; imported when the endpoint is on) -----------------


def _energy_families(jobs: Iterable[tuple[tuple[str, ...], float]],
                     pools: Iterable[tuple[tuple[str, ...], float, float | None, float | None]],
                     nodes: dict[str, float]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    job = CounterMetricFamily("wattledger_job_energy_joules", "IT energy charged to the job since the counters' "
                              "epoch (jobs charged within [prometheus] active_window_s)", labels=JOB_LABELS)
    for key, energy_j in jobs:
        job.add_metric(key, energy_j)
    pool = CounterMetricFamily("wattledger_pool_energy_joules", "IT energy measured on the pool (a CPU package, "
                               "its DRAM, a GPU or MIG instance)", labels=POOL_LABELS)
    power = GaugeMetricFamily("wattledger_pool_power_watts", "The pool's mean power over the last tick",
                              labels=POOL_LABELS)
    idle = GaugeMetricFamily("wattledger_pool_idle_watts", "The pool's idle (static) power baseline",
                             labels=POOL_LABELS)
    for key, energy_j, power_w, idle_w in pools:
        pool.add_metric(key, energy_j)
        if power_w is not None:
            power.add_metric(key, power_w)
        if idle_w is not None:
            idle.add_metric(key, idle_w)
    node = CounterMetricFamily("wattledger_node_energy_joules", "IT energy of the host: the sum of its pools",
                               labels=("host",))
    for host, energy_j in nodes.items():
        node.add_metric((host,), energy_j)
    yield from (job, pool, power, idle, node)


_AGENT_LAST = (  # (kind, wl_agent field, metric, help): the last tick's figures
    ("g", "tick_s", "wattledger_agent_tick_seconds", "Duration of the last tick"),
    ("g", "rss_bytes", "wattledger_agent_rss_bytes", "The agent's resident memory"),
    ("g", "spooled", "wattledger_agent_spooled_points", "Points waiting in the spool for the remote sink"),
    ("c", "delivered", "wattledger_agent_delivered_points", "Points delivered to the remote sink"),
    ("c", "dropped", "wattledger_agent_dropped_points", "Spooled points dropped (spool full)"),
    ("c", "write_errors", "wattledger_agent_write_errors", "Failed writes to the remote sink"),
)


def _agent_families(host: str, ticks: int, cpu_s: float, last: dict[str, float], last_tick_ns: int, pruned: int,
                    *, active_jobs: int) -> Iterator[Any]:
    families = [
        ("c", "wattledger_agent_ticks", "Ticks committed since the counters' epoch", float(ticks)),
        ("c", "wattledger_agent_tick_cpu_seconds", "The agent's CPU seconds in its ticks", cpu_s),
        ("g", "wattledger_agent_last_tick_timestamp_seconds", "Wall time of the newest committed tick",
         last_tick_ns / NS_PER_S),
        ("g", "wattledger_exporter_active_jobs", "Jobs exposed (charged within the active window)",
         float(active_jobs)),
        ("c", "wattledger_exporter_pruned_series", "Job series no longer exposed (inactive)", float(pruned)),
    ]
    families += [(kind, name, doc, last[field]) for kind, field, name, doc in _AGENT_LAST if field in last]
    for kind, name, doc, value in families:
        yield _family(kind, name, doc, host, value)


def _family(kind: str, name: str, doc: str, host: str, value: float) -> Any:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    family = (CounterMetricFamily if kind == "c" else GaugeMetricFamily)(name, doc, labels=("host",))
    family.add_metric((host,), value)
    return family


def _carbon_families(host: str, now: CarbonNow | None) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    if now is None:
        return
    pue = GaugeMetricFamily("wattledger_pue_ratio", "PUE of the current hour (wl_pue, else [pue] value): facility "
                            "energy / IT energy", labels=("host", "site"))
    pue.add_metric((host, now.site), now.pue)
    yield pue
    if now.g_per_kwh is not None:
        ci = GaugeMetricFamily("wattledger_grid_intensity_grams_per_kwh", "Grid carbon intensity of the current "
                               "hour (wl_carbon by the report's rule, else the static figure), g CO2e/kWh",
                               labels=("host", "zone", "provider"))
        ci.add_metric((host, now.zone, now.provider), now.g_per_kwh)
        yield ci

