"""Every dashboard panel, run as Grafana would run it, against a real InfluxDB holding known data.

For each panel: its queries get the variables substituted the way Grafana does
(tests/fake_grafana.py), run on the ``influxd`` fixture (a real InfluxDB 1.x),
and, where the panel has transformations, the answers become Grafana data
frames and go through Grafana's own ``@grafana/data`` in Node. The numbers
that come out are checked against figures worked out by hand from the data
below (the comments give the arithmetic). A panel without a check here fails
``test_every_panel_has_a_check``.

The data (T0 = 2024-03-01T00:00Z; points every 10 minutes at T0 + k*10min,
k = 1..24, stamped at the interval's end):

- host gpu1, wl_node: cpu 60 kJ per point (100 W); gpu 150 kJ (250 W) for
  k = 6..17, else 30 kJ (50 W). host gpu2: cpu 48 kJ (80 W).
- wl_job on gpu1 per point, cpu pool (60 kJ): train-a/alice 30 kJ, train-a/bob
  2 kJ, eval-b/bob 10 kJ, _untagged/carol 6 kJ, _system 4, _agent 1, _idle 7.
  gpu pool: train-a/alice 120 kJ when hot, _idle the rest (30 kJ).
  gpu2: other-job/dave 48 kJ.
- wl_carbon zone DE, electricitymaps actual: T0-2h 400, T0 300, T0+1h 500,
  T0+1h30 600, T0+2h 200 (nothing in hour 3); a forecast 999 at T0+1h; the
  static provider 381 at T0 and T0+1h; zone FR 56 every hour.
- wl_embodied on gpu1 per point, host parts (cpu/dram/storage/chassis grams): train-a/alice 2.0
  (0.2/1.0/0.3/0.5), train-a/bob 0.2 (a tenth of alice's), _idle 5.0 (2.5 x alice's); GPU-0: 3.0 g to
  train-a/alice when hot, else to _idle. gpu2: other-job/dave 1.0 (half of alice's).
- The range is T0+25min .. T0+3h55min: points k = 3..23 (21 points).
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fake_grafana import TimeRange, influx_to_frames, interpolate, node_ready, run_transformations
from wattledger.grafana import dashboards as dash
from wattledger.model.points import Point

pytestmark = pytest.mark.influx

S = 1_000_000_000
T0 = 1_709_251_200 * S  # 2024-03-01T00:00:00Z
MIN = 60 * S
HOUR = 3600 * S
K = range(1, 25)
HOT = range(6, 18)
RANGE = TimeRange((T0 + 25 * MIN) // 1_000_000, (T0 + 3 * HOUR + 55 * MIN) // 1_000_000)
RANGE_S = 12_600  # 3 h 30 min
IN_RANGE = range(3, 24)
DB = "wl_dashboards"
PUE = 1.58
DE_STATIC = 381.0  # the static table's DE figure: the fallback for hour 3


def t(k: int) -> int:
    return T0 + k * 10 * MIN


def job_point(k: int, host: str, job: str, user: str, component: str, device: str, energy_j: float,
              project: str = "", phase: str = "", driver_s: float = 0.0) -> Point:
    static = energy_j / 5
    return Point("wl_job", {"host": host, "job": job, "user": user, "project": project, "phase": phase,
                            "component": component, "device": device, "source": "rapl" if component == "cpu" else "nvml"},
                 {"energy_j": energy_j, "dynamic_j": energy_j - static, "static_j": static, "driver_s": driver_s},
                 t(k))


def embodied_point(k: int, host: str, job: str, user: str, scale: float, project: str = "", phase: str = "",
                   gpu_g: float = 0.0) -> Point:
    """A wl_embodied row: the host's parts (scale x 0.2/1.0/0.3/0.5 g), or GPU-0's gpu_g grams."""
    tags = {"host": host, "job": job, "user": user, "project": project, "phase": phase}
    if gpu_g:
        return Point("wl_embodied", {**tags, "component": "gpu", "device": "GPU-0"}, {"embodied_g": gpu_g}, t(k))
    parts = {"cpu_g": 0.2 * scale, "dram_g": 1.0 * scale, "storage_g": 0.3 * scale, "chassis_g": 0.5 * scale}
    return Point("wl_embodied", {**tags, "component": "host", "device": "host"},
                 {"embodied_g": 2.0 * scale, **parts}, t(k))


def build_points() -> list[Point]:
    pts: list[Point] = []
    for k in K:
        hot = k in HOT
        pts.append(Point("wl_node", {"host": "gpu1", "component": "cpu", "device": "package-0", "source": "rapl"},
                         {"energy_j": 60_000.0, "power_w": 100.0, "idle_w": 40.0, "interval_s": 600.0}, t(k)))
        pts.append(Point("wl_node", {"host": "gpu1", "component": "gpu", "device": "GPU-0", "source": "nvml"},
                         {"energy_j": 150_000.0 if hot else 30_000.0, "power_w": 250.0 if hot else 50.0,
                          "idle_w": 50.0, "interval_s": 600.0}, t(k)))
        pts.append(Point("wl_node", {"host": "gpu2", "component": "cpu", "device": "package-0", "source": "rapl"},
                         {"energy_j": 48_000.0, "power_w": 80.0, "idle_w": 30.0, "interval_s": 600.0}, t(k)))
        cpu = "package-0"
        pts += [
            job_point(k, "gpu1", "train-a", "alice", "cpu", cpu, 30_000, "p1", "train", 300),
            job_point(k, "gpu1", "train-a", "bob", "cpu", cpu, 2_000, "p2", "train", 20),
            job_point(k, "gpu1", "eval-b", "bob", "cpu", cpu, 10_000, "p2", "inference", 100),
            job_point(k, "gpu1", "_untagged", "carol", "cpu", cpu, 6_000),
            job_point(k, "gpu1", "_system", "", "cpu", cpu, 4_000),
            job_point(k, "gpu1", "_agent", "", "cpu", cpu, 1_000),
            job_point(k, "gpu1", "_idle", "", "cpu", cpu, 7_000),
            job_point(k, "gpu2", "other-job", "dave", "cpu", cpu, 48_000, "p3", "search", 500),
        ]
        if hot:
            pts += [job_point(k, "gpu1", "train-a", "alice", "gpu", "GPU-0", 120_000, "p1", "train", 540),
                    job_point(k, "gpu1", "_idle", "", "gpu", "GPU-0", 30_000)]
        else:
            pts.append(job_point(k, "gpu1", "_idle", "", "gpu", "GPU-0", 30_000))
        pts += [embodied_point(k, "gpu1", "train-a", "alice", 1.0, "p1", "train"),
                embodied_point(k, "gpu1", "train-a", "bob", 0.1, "p2", "train"),
                embodied_point(k, "gpu1", "_idle", "", 2.5),
                embodied_point(k, "gpu2", "other-job", "dave", 0.5, "p3", "search"),
                embodied_point(k, "gpu1", *(("train-a", "alice") if hot else ("_idle", "")),
                               1.0, *(("p1", "train") if hot else ("", "")), gpu_g=3.0)]
        # The agent: counters are lifetime (delivered, dropped); write_errors restarts with the agent at k=16.
        pts.append(Point("wl_agent", {"host": "gpu1"}, {
            "tick_s": 0.02 + 0.001 * k, "cpu_s": 0.6, "rss_bytes": 50e6 + k * 1e5,
            "spooled": 100.0 if k < 12 else 0.0, "delivered": 1000.0 * k, "dropped": 0.0 if k < 10 else 5.0,
            "write_errors": float(k // 4 if k < 16 else (k - 16) // 4)}, t(k)))

    def carbon(offset_ns: int, g: float, zone: str = "DE", provider: str = "electricitymaps",
               kind: str = "actual") -> Point:
        return Point("wl_carbon", {"zone": zone, "provider": provider, "kind": kind}, {"g_per_kwh": g},
                     T0 + offset_ns)

    # The forecast for T0+1h came first and the actual replaced it (the ledger keeps the newest per
    # provider and time; InfluxDB keeps both series and readers take the actual).
    pts += [carbon(HOUR, 999, kind="forecast"),
            carbon(-2 * HOUR, 400), carbon(0, 300), carbon(HOUR, 500), carbon(HOUR + 30 * MIN, 600),
            carbon(2 * HOUR, 200),
            carbon(0, 381, provider="static"), carbon(HOUR, 381, provider="static")]
    pts += [carbon(h * HOUR, 56, zone="FR") for h in range(4)]
    # A measured PUE series, well after the job range (the report would use it inside the range).
    pts += [Point("wl_pue", {"site": "dc1"}, {"pue": 1.3 + 0.1 * h}, T0 + (10 + h) * HOUR) for h in range(3)]
    return pts


POINTS = build_points()


# -- running panels ----------------------------------------------------------------------------


def influx_answer(url: str, q: str) -> dict[str, Any]:
    """What Grafana's backend gets: POST /query, epoch=ms."""
    data = urllib.parse.urlencode({"q": q, "db": DB, "epoch": "ms"}).encode()
    with urllib.request.urlopen(url + "/query", data=data, timeout=30) as r:
        answer = json.loads(r.read())
    for result in answer["results"]:
        assert "error" not in result, f"{q}: {result['error']}"
    return answer


def rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for series in answer["results"][0].get("series", []) or []:
        for values in series["values"]:
            row = dict(zip(series["columns"], values))
            row.update(series.get("tags") or {})
            out.append(row)
    return out


@dataclass
class PanelRun:
    panel: dict[str, Any]
    queries: dict[str, str]  # refId -> interpolated InfluxQL
    answers: dict[str, dict[str, Any]]  # refId -> InfluxDB answer
    grafana: dict[str, Any] | None  # transform.js output when the panel has transformations

    def rows(self, ref_id: str = "A") -> list[dict[str, Any]]:
        return rows(self.answers[ref_id])

    def field(self, display_name: str) -> list[Any]:
        assert self.grafana is not None
        for frame in self.grafana["frames"]:
            for f in frame["fields"]:
                if f["displayName"] == display_name:
                    return list(f["values"])
        names = [f["displayName"] for fr in self.grafana["frames"] for f in fr["fields"]]
        raise AssertionError(f"no field {display_name!r} in {names}")

    def field_names(self) -> list[str]:
        """Display names of the fields Grafana shows (Time once)."""
        assert self.grafana is not None
        names = {f["displayName"] for fr in self.grafana["frames"] for f in fr["fields"]}
        return list(names)

    def reduced(self, display_name: str, calc: str) -> float:
        assert self.grafana is not None
        for r in self.grafana["reduced"]:
            if r["displayName"] == display_name:
                return float(r["calcs"][calc])
        raise AssertionError(f"no reduced field {display_name!r} in {self.grafana['reduced']}")


@pytest.fixture(scope="module")
def influx_url(influxd: Any) -> str:
    influxd.query(f'DROP DATABASE "{DB}"')
    influxd.create_db(DB)
    body = "\n".join(p.to_line() for p in POINTS).encode()
    req = urllib.request.Request(f"{influxd.url}/write?db={DB}&precision=ns", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204
    return str(influxd.url)


# The tier variables pick the database's one retention policy and hour buckets: the hand-worked figures
# below are per hour (tests/test_dashboards_fleet.py runs the real choice against a tiered database).
TIERS = {"tier": "autogen", "res": "1h", "res_s": "3600", "jtier": "autogen", "jres": "1h", "jres_s": "3600"}
DEFAULT_SELECTION: dict[str, Any] = {"host": ["gpu1"], "zone": "DE", "provider": "electricitymaps",
                                     "kind": "actual", "job": "train-a", "user": "$__all", "project": "$__all",
                                     "phase": "$__all", "pue": "1.58", "ci_fallback": "381", **TIERS}


def run_panel(url: str, dashboard: dict[str, Any], panel: dict[str, Any], selected: dict[str, Any] | None = None,
              time_range: TimeRange = RANGE, interval_ms: int = 3_600_000) -> PanelRun:
    chosen = {**DEFAULT_SELECTION, **(selected or {})}
    names = {v["name"] for v in dashboard["templating"]["list"]}
    chosen = {k: v for k, v in chosen.items() if k in names}
    queries, answers = {}, {}
    for target in panel.get("targets", []):
        q = interpolate(target["query"], dashboard, chosen, time_range, interval_ms)
        queries[target["refId"]] = q
        answers[target["refId"]] = influx_answer(url, q)
    grafana = None
    if panel.get("transformations"):
        problem = node_ready()
        if problem:
            pytest.fail(f"this panel's transformations run in Node with @grafana/data: {problem}")
        frames = []
        for target in panel["targets"]:
            frames += influx_to_frames(answers[target["refId"]], target["refId"], target.get("alias", ""))
        calcs = panel["options"].get("reduceOptions", {}).get("calcs") if panel["type"] == "stat" else None
        grafana = run_transformations(frames, panel["transformations"], calcs)
    return PanelRun(panel, queries, answers, grafana)


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


# -- the hand-worked figures -----------------------------------------------------------------------
#
# Hour buckets of the range (a point belongs to the hour its timestamp is in):
#   hour 0: k = 3, 4, 5      hour 1: k = 6..11 (gpu hot)   hour 2: k = 12..17 (hot)   hour 3: k = 18..23
# Intensity (DE, electricitymaps, actual): hour 0 300; hour 1 mean(500, 600) = 550; hour 2 200;
#   hour 3 no point -> fallback 381.
CI = [300.0, 550.0, 200.0, DE_STATIC]
HOURS = [T0 // 1_000_000 + h * 3_600_000 for h in range(4)]
# train-a/alice IT energy per hour (J): cpu 30 kJ per point; gpu 120 kJ per hot point.
ALICE_J = [3 * 30_000, 6 * 30_000 + 6 * 120_000, 6 * 30_000 + 6 * 120_000, 6 * 30_000]  # 90k, 900k, 900k, 180k
# g CO2e = kWh x 1.58 x CI: 0.025*1.58*300 = 11.85; 0.25*1.58*550 = 217.25; 0.25*1.58*200 = 79;
#   0.05*1.58*381 = 30.099.  Total 338.199 g.
ALICE_CO2E = [11.85, 217.25, 79.0, 30.099]
ALICE_CO2E_TOTAL = 338.199
BOB_J_PER_POINT = 12_000  # train-a/bob 2 kJ + eval-b 10 kJ


def check_overview(run: PanelRun, title: str) -> None:
    got: Any  # each panel's rows, shaped for its check
    if title == "IT energy":
        # gpu1: cpu 21 x 60 kJ = 1.26 MJ; gpu 12 hot x 150 kJ + 9 x 30 kJ = 2.07 MJ; 3.33 MJ = 0.925 kWh
        assert close(run.rows()[0]["it_kwh"], 0.925)
    elif title == "Facility energy":
        assert close(run.rows()[0]["facility_kwh"], 0.925 * PUE)  # 1.4615
    elif title == "Mean host power":
        assert close(run.rows()[0]["power_w"], 3_330_000 / RANGE_S)  # 264.29 W
    elif title == "Tagged share":
        # tagged: alice 21*30k + 12*120k = 2.07 MJ; bob 21*12k = 252 kJ -> 2.322 MJ of 3.33 MJ
        assert close(run.field("tagged share")[0], 2_322_000 / 3_330_000)
        assert close(run.reduced("tagged share", "sum"), 0.6972972972972973)
    elif title == "Host power by component":
        by = {(r["component"], r["time"]): r["power_w"] for r in run.rows()}
        # hour 0 holds 3 points: cpu 180 kJ / 3600 s = 50 W, gpu 90 kJ -> 25 W; hours 1-2 gpu 250 W.
        assert [by[("cpu", h)] for h in HOURS] == pytest.approx([50, 100, 100, 100])
        assert [by[("gpu", h)] for h in HOURS] == pytest.approx([25, 250, 250, 50])
    elif title == "Where the energy went":
        per = {ref: [r["power_w"] for r in run.rows(ref)] for ref in run.answers}
        hour_points = [3, 6, 6, 6]
        # tagged per point: alice cpu 30k + bob 12k (+ alice gpu 120k when hot)
        assert per["A"] == pytest.approx([n * (42_000 + (120_000 if h in (1, 2) else 0)) / 3600
                                          for h, n in enumerate(hour_points)])
        assert per["B"] == pytest.approx([n * 6_000 / 3600 for n in hour_points])  # untagged
        assert per["C"] == pytest.approx([n * 4_000 / 3600 for n in hour_points])  # system
        assert per["D"] == pytest.approx([n * 37_000 / 3600 for n in hour_points])  # idle 7k cpu + 30k gpu
        assert per["E"] == pytest.approx([n * 1_000 / 3600 for n in hour_points])  # agent
        assert per["F"] == per["G"] == []  # no _unobserved, no _overflow energy in this data (issue 17)
        # Conservation: the classes stack up to the host's power.
        host = [sum(v) for v in zip(*(v for v in per.values() if v))]
        assert host == pytest.approx([75, 350, 350, 150])
    elif title == "Energy shares":
        got = {ref: run.rows(ref)[0][name] for ref, (name, _) in zip("ABCDE", dash.ENERGY_CLASSES)}
        assert got["A"] == pytest.approx(2_322_000 / 3.6e6)
        assert got["B"] == pytest.approx(21 * 6_000 / 3.6e6)
        assert got["C"] == pytest.approx(21 * 4_000 / 3.6e6)
        assert got["D"] == pytest.approx((21 * 7_000 + 21 * 30_000) / 3.6e6)
        assert got["E"] == pytest.approx(21 * 1_000 / 3.6e6)
        assert sum(got.values()) == pytest.approx(0.925)
    elif title == "Energy by component":
        got = {r["component"]: r["it_kwh"] for r in run.rows()}
        assert got == pytest.approx({"cpu": 0.35, "gpu": 0.575})
    elif title == "Devices":
        got = {(r["host"], r["component"], r["device"], r["source"]): (r["power_w"], r["idle_w"])
               for r in run.rows()}
        assert got == {("gpu1", "cpu", "package-0", "rapl"): (100, 40), ("gpu1", "gpu", "GPU-0", "nvml"): (50, 50)}
    elif title == "Embodied carbon":
        # gpu1: host parts 21 x (2.0 + 0.2 + 5.0) g, GPU-0 21 x 3.0 g (alice's or _idle's)
        assert close(run.rows()[0][dash.EMBODIED_G], 21 * 7.2 + 21 * 3.0)
    elif title == "Embodied carbon by job":
        got = {r["job"]: r[dash.EMBODIED_G] for r in run.rows()}
        assert got == pytest.approx({"train-a": 21 * 2.2 + 12 * 3.0, "_idle": 21 * 5.0 + 9 * 3.0})
    else:
        raise AssertionError(f"no check for overview panel {title!r}")


# Embodied grams per hour of the job page (train-a, all users): GPU-0 when hot, the host's parts 2.2 g a point.
JOB_EMBODIED_GPU = [0.0, 18.0, 18.0, 0.0]
JOB_EMBODIED_PARTS = {"cpu": 0.22, "dram": 1.1, "storage": 0.33, "chassis": 0.55}
JOB_EMBODIED = 21 * 2.2 + 12 * 3.0  # 82.2 g


def check_embodied(run: PanelRun, title: str, gpu: list[float], parts: dict[str, float], total_g: float,
                   operational_g: float) -> bool:
    """The embodied row's panels (dashboards.embodied_panels) of the job and ledger pages."""
    if title == "Embodied carbon":
        assert close(run.rows()[0][dash.EMBODIED_G], total_g)
    elif title == "Total CO2e":
        assert close(run.reduced(dash.TOTAL_CO2E, "sum"), operational_g + total_g)
    elif title == "Embodied carbon per bucket":  # per hour: the tests' $res is 1h
        assert [r["gpu"] for r in run.rows("A")] == pytest.approx(gpu)
        for part, per_point in parts.items():
            assert [r[part] for r in run.rows("B")] == pytest.approx([n * per_point for n in (3, 6, 6, 6)])
    else:
        return False
    return True


def check_job(run: PanelRun, title: str) -> None:
    got: Any
    # The job page with job=train-a, user=All: alice's 2.07 MJ plus bob's train-a 21 x 2 kJ = 42 kJ.
    if title == "IT energy":
        assert close(run.rows()[0]["it_kwh"], 2_112_000 / 3.6e6)
    elif title == "Facility energy":
        assert close(run.rows()[0]["facility_kwh"], 2_112_000 / 3.6e6 * PUE)
    elif title == "CO2e":
        # alice's figures plus bob's train-a 2 kJ per point: per hour kWh x 1.58 x CI
        bob = [n * 2_000 / 3.6e6 * PUE * ci for n, ci in zip([3, 6, 6, 6], CI)]
        assert close(run.reduced(dash.CO2E, "sum"), ALICE_CO2E_TOTAL + sum(bob), rel=1e-9)
    elif title == "Device time":
        assert close(run.rows()[0]["driver_s"], 21 * 300 + 21 * 20 + 12 * 540)
    elif title == "Power by component":
        by = {(r["component"], r["time"]): r["power_w"] for r in run.rows()}
        assert [by[("cpu", h)] for h in HOURS] == pytest.approx([n * 32_000 / 3600 for n in (3, 6, 6, 6)])
        assert [by[("gpu", h)] for h in HOURS] == pytest.approx([0, 200, 200, 0])  # 6 x 120 kJ / 3600 s
    elif title == "Energy per hour":
        got = run.rows()
        assert [r["time"] for r in got] == HOURS
        it = [(a + n * 2_000) / 3.6e6 for a, n in zip(ALICE_J, (3, 6, 6, 6))]
        assert [r["it_kwh"] for r in got] == pytest.approx(it)
        assert [r["facility_kwh"] for r in got] == pytest.approx([x * PUE for x in it])
    elif title == "CO2e per hour and cumulative":
        bob = [n * 2_000 / 3.6e6 * PUE * ci for n, ci in zip([3, 6, 6, 6], CI)]
        per_hour = [a + b for a, b in zip(ALICE_CO2E, bob)]
        assert run.field("Time") == HOURS
        assert run.field(dash.CO2E) == pytest.approx(per_hour)
        assert run.field(dash.CO2E_CUMULATIVE) == pytest.approx([sum(per_hour[: i + 1]) for i in range(4)])
    elif check_embodied(run, title, JOB_EMBODIED_GPU, JOB_EMBODIED_PARTS, JOB_EMBODIED, ALICE_CO2E_TOTAL + sum(
            n * 2_000 / 3.6e6 * PUE * ci for n, ci in zip([3, 6, 6, 6], CI))):
        pass
    elif title == "Breakdown by host":
        got = {(r["user"], r["component"]): r for r in run.rows()}
        assert set(got) == {("alice", "cpu"), ("alice", "gpu"), ("bob", "cpu")}
        assert close(got[("alice", "gpu")]["it_kwh"], 12 * 120_000 / 3.6e6)
        assert close(got[("alice", "gpu")]["static_kwh"], 12 * 24_000 / 3.6e6)
        assert close(got[("alice", "cpu")]["dynamic_kwh"], 21 * 24_000 / 3.6e6)
        assert close(got[("bob", "cpu")]["driver_s"], 21 * 20)
    else:
        raise AssertionError(f"no check for job panel {title!r}")


def check_ledger(run: PanelRun, title: str) -> None:
    # Host All: gpu2's other-job/dave (21 x 48 kJ, project p3, phase search) is in.
    if title == "Facility energy by user":
        got = {r["user"]: r["facility_kwh"] for r in run.rows()}
        assert got == pytest.approx({
            "alice": 2_070_000 / 3.6e6 * PUE, "bob": 21 * 12_000 / 3.6e6 * PUE, "carol": 21 * 6_000 / 3.6e6 * PUE,
            "dave": 21 * 48_000 / 3.6e6 * PUE, "": (21 * 12_000 + 21 * 30_000) / 3.6e6 * PUE})
        # _system, _agent and _idle have no user: Grafana would call that series "Value".
        assert sorted(run.field_names()) == ["(no user)", "Time", "alice", "bob", "carol", "dave"]
    # Projects and phases are keyed by owner (issue 17, item 5): A is energy without a project,
    # B each (name, user); no shared projects in the default dashboards.
    elif title == "Facility energy by project":
        assert [r["project"] for r in run.rows("A")] == [""]
        assert run.rows("A")[0]["facility_kwh"] == pytest.approx(
            (21 * 6_000 + 21 * 12_000 + 21 * 30_000) / 3.6e6 * PUE)
        got = {(r["project"], r["user"]): r["facility_kwh"] for r in run.rows("B")}
        assert got == pytest.approx({("p1", "alice"): 2_070_000 / 3.6e6 * PUE,
                                     ("p2", "bob"): 21 * 12_000 / 3.6e6 * PUE,
                                     ("p3", "dave"): 21 * 48_000 / 3.6e6 * PUE})
        assert sorted(run.field_names()) == ["(no project)", "Time", "p1 (alice)", "p2 (bob)", "p3 (dave)"]
    elif title == "Facility energy by phase":
        got = {(r["phase"], r["user"]): r["facility_kwh"] for r in run.rows("B")}
        assert got == pytest.approx({("train", "alice"): 2_070_000 / 3.6e6 * PUE,
                                     ("train", "bob"): 21 * 2_000 / 3.6e6 * PUE,
                                     ("inference", "bob"): 21 * 10_000 / 3.6e6 * PUE,
                                     ("search", "dave"): 21 * 48_000 / 3.6e6 * PUE})
        # Without a project: _untagged, _system, _agent, _idle: 6+4+1+37 kJ.
        assert {r["phase"]: r["facility_kwh"] for r in run.rows("A")} == pytest.approx(
            {"": 21 * 48_000 / 3.6e6 * PUE})
        assert "(no phase)" in run.field_names() and "train (alice)" in run.field_names()
    elif title == "CO2e of the selection":
        # Everything (all users, projects, phases, hosts): gpu1's jobs are its whole host energy per hour
        # (270 kJ, 1.26 MJ, 1.26 MJ, 540 kJ) plus dave's 48 kJ per point on gpu2.
        all_j = [270_000 + 3 * 48_000, 1_260_000 + 6 * 48_000, 1_260_000 + 6 * 48_000, 540_000 + 6 * 48_000]
        assert close(run.reduced(dash.CO2E, "sum"), sum(j / 3.6e6 * PUE * ci for j, ci in zip(all_j, CI)))
    elif check_embodied(run, title, [9.0, 18.0, 18.0, 18.0], {"cpu": 0.82, "dram": 4.1, "storage": 1.23,
                                                              "chassis": 2.05}, 21 * 8.2 + 21 * 3.0,
                        sum(j / 3.6e6 * PUE * ci for j, ci in zip(
                            [270_000 + 3 * 48_000, 1_260_000 + 6 * 48_000, 1_260_000 + 6 * 48_000,
                             540_000 + 6 * 48_000], CI))):
        pass
    elif title == "Facility energy of the selection":
        assert close(run.rows()[0]["facility_kwh"], (3_330_000 + 21 * 48_000) / 3.6e6 * PUE)
    elif title == "Power by user":
        by = {(r["user"], r["time"]): r["power_w"] for r in run.rows()}
        assert [by[("dave", h)] for h in HOURS] == pytest.approx([n * 48_000 / 3600 for n in (3, 6, 6, 6)])
        assert [by[("alice", h)] for h in HOURS] == pytest.approx([j / 3600 for j in ALICE_J])
        assert sorted(run.field_names()) == ["(no user)", "Time", "alice", "bob", "carol", "dave"]
    elif title == "Ledger":
        got = {(r["user"], r["project"], r["phase"], r["job"]): (r["it_kwh"], r["facility_kwh"]) for r in run.rows()}
        assert got[("alice", "p1", "train", "train-a")] == pytest.approx((0.575, 0.575 * PUE))
        assert got[("bob", "p2", "train", "train-a")] == pytest.approx((42_000 / 3.6e6, 42_000 / 3.6e6 * PUE))
        assert got[("", "", "", "_idle")] == pytest.approx((21 * 37_000 / 3.6e6, 21 * 37_000 / 3.6e6 * PUE))
        assert len(got) == 8
        assert sum(v[0] for v in got.values()) == pytest.approx(0.925 + 21 * 48_000 / 3.6e6)
    else:
        raise AssertionError(f"no check for ledger panel {title!r}")


def check_carbon(run: PanelRun, title: str) -> None:
    if title == "Grid carbon intensity":
        got = {(r["provider"], r["kind"], r["time"]): r["mean"] for r in run.rows()}
        # $__interval 1h; the range starts at T0+25min, so hour 0 sees no DE point (T0 is before it).
        assert got == {("electricitymaps", "actual", HOURS[1]): 550, ("electricitymaps", "actual", HOURS[2]): 200,
                       ("electricitymaps", "forecast", HOURS[1]): 999, ("static", "actual", HOURS[1]): 381}
    elif title == "Intensity in range":
        row = run.rows()[0]
        assert (row["mean"], row["min"], row["max"]) == pytest.approx((1300 / 3, 200, 600))
    elif title == "Measured PUE":
        pass  # checked with its own range in test_measured_pue_panel
    elif title == "Host CO2e":
        # gpu1 host energy per hour: 3 x 90 kJ, 6 x 210 kJ, 6 x 210 kJ, 6 x 90 kJ
        host_j = [270_000, 1_260_000, 1_260_000, 540_000]
        expected = sum(j / 3.6e6 * PUE * ci for j, ci in zip(host_j, CI))
        assert close(run.reduced(dash.CO2E, "sum"), expected)
    elif title == "Hours with an intensity point":
        assert run.rows()[0]["hours"] == 2  # hours 1 and 2 (T0 is before the range; hour 3 has none)
    elif title == "Host CO2e per hour and cumulative":
        host_j = [270_000, 1_260_000, 1_260_000, 540_000]
        per_hour = [j / 3.6e6 * PUE * ci for j, ci in zip(host_j, CI)]
        assert run.field(dash.CO2E) == pytest.approx(per_hour)
        assert run.field(dash.CO2E_CUMULATIVE)[-1] == pytest.approx(sum(per_hour))
    else:
        raise AssertionError(f"no check for carbon panel {title!r}")


def check_agent(run: PanelRun, title: str) -> None:
    got: Any
    if title == "Spooled now":
        assert run.rows()[0]["spooled"] == 0
    elif title == "Dropped in range":
        assert run.rows()[0]["dropped"] == 5
    elif title == "Write errors in range":
        # k//4 rises at k = 4, 8, 12; the agent restarts at k = 16 (counter back to 0); rises again at k = 20.
        assert run.rows()[0]["write_errors"] == 4
    elif title == "Agent CPU" and run.panel["type"] == "stat":
        assert close(run.rows()[0]["cpu_pct"], 21 * 0.6 / RANGE_S * 100)  # 0.1 % of a core
    elif title == "Agent CPU":
        got = [r["cpu_pct"] for r in run.rows()]
        assert got == pytest.approx([n * 0.6 / 3600 * 100 for n in (3, 6, 6, 6)])
    elif title == "Tick duration":
        got = {r["time"]: (r["mean"], r["max"]) for r in run.rows()}
        assert got[HOURS[0]] == pytest.approx((0.024, 0.025))  # k = 3, 4, 5
        assert got[HOURS[3]] == pytest.approx((0.0405, 0.043))  # k = 18..23
    elif title == "Memory (RSS)":
        assert [r["rss_bytes"] for r in run.rows()] == pytest.approx([50e6 + k * 1e5 for k in (5, 11, 17, 23)])
    elif title == "Spool":
        assert [r["spooled"] for r in run.rows()] == [100, 100, 0, 0]
    elif title == "Delivery":
        got = run.rows()
        # buckets from hour 1 on: max(delivered) 11000, 17000, 23000 vs 5000 in hour 0
        assert [r["delivered"] for r in got] == [6000, 6000, 6000]
        assert [r["dropped"] for r in got] == [5, 0, 0]  # 0 -> 5 at k = 10
        # max(write_errors) per hour 1, 2, 3, 1: +1, +1, then the restart's drop is no difference at all
        assert [r["write_errors"] for r in got] == [1, 1, None]
    else:
        raise AssertionError(f"no check for agent panel {title!r}")


CHECKS: dict[str, Callable[[PanelRun, str], None]] = {
    "wattledger-overview": check_overview,
    "wattledger-job": check_job,
    "wattledger-ledger": check_ledger,
    "wattledger-carbon": check_carbon,
    "wattledger-agent": check_agent,
}

ALL_PANELS = [(name, p["title"], i) for name, d in dash.all_dashboards().items()
              for i, p in enumerate(dash.panels(d))]


@pytest.mark.parametrize("name,title,index", ALL_PANELS, ids=[f"{n.split('-')[1][:-5]}:{t}" for n, t, _ in ALL_PANELS])
def test_panel_numbers(influx_url: str, name: str, title: str, index: int) -> None:
    dashboard = dash.all_dashboards()[name]
    panel = list(dash.panels(dashboard))[index]
    if panel["type"] == "text":
        assert "${pue}" in panel["options"]["content"] and "${ci_fallback}" in panel["options"]["content"]
        return
    # The overview, carbon and agent pages look at host gpu1; the job and ledger pages at all hosts.
    selection = {"host": "$__all"} if dashboard["uid"] in ("wattledger-job", "wattledger-ledger") else {}
    run = run_panel(influx_url, dashboard, panel, selection)
    CHECKS[dashboard["uid"]](run, title)


def test_every_panel_has_a_check() -> None:
    """A new panel without a check in CHECKS fails here (rather than passing unchecked)."""
    for name, d in dash.all_dashboards().items():
        assert d["uid"] in CHECKS, name


def test_job_page_user_filter(influx_url: str) -> None:
    """user = alice keeps bob's job of the same tag out: a job is (user, tag)."""
    dashboard = dash.job()
    panel = next(p for p in dash.panels(dashboard) if p["title"] == "CO2e")
    run = run_panel(influx_url, dashboard, panel, {"user": ["alice"], "host": "$__all"})
    assert close(run.reduced(dash.CO2E, "sum"), ALICE_CO2E_TOTAL)
    # Two users selected: Grafana sends them as an escaped regex alternative.
    both = run_panel(influx_url, dashboard, panel, {"user": ["alice", "bob"], "host": "$__all"})
    assert '"user" =~ /^(alice|bob)$/' in both.queries["A"]
    assert both.reduced(dash.CO2E, "sum") > ALICE_CO2E_TOTAL


def test_pue_and_fallback_variables_change_the_figures(influx_url: str) -> None:
    dashboard = dash.job()
    panel = next(p for p in dash.panels(dashboard) if p["title"] == "CO2e")
    sel = {"user": ["alice"], "host": "$__all"}
    # PUE 1.2 instead of 1.58 scales every hour; a 0 fallback removes hour 3's 30.099 g.
    assert close(run_panel(influx_url, dashboard, panel, {**sel, "pue": "1.2"}).reduced(dash.CO2E, "sum"),
                 ALICE_CO2E_TOTAL / PUE * 1.2)
    assert close(run_panel(influx_url, dashboard, panel, {**sel, "ci_fallback": "0"}).reduced(dash.CO2E, "sum"),
                 ALICE_CO2E_TOTAL - 30.099)
    # Another zone: FR's 56 g/kWh every hour.
    fr = run_panel(influx_url, dashboard, panel, {**sel, "zone": "FR"}).reduced(dash.CO2E, "sum")
    assert close(fr, 2_070_000 / 3.6e6 * PUE * 56)


def test_ledger_selection_by_user_and_project(influx_url: str) -> None:
    """user=bob, project=p2 on the ledger page: bob's two jobs (12 kJ per point), nobody else's."""
    dashboard = dash.ledger()
    panel = next(p for p in dash.panels(dashboard) if p["title"] == "CO2e of the selection")
    run = run_panel(influx_url, dashboard, panel, {"user": ["bob"], "project": ["p2"], "host": "$__all"})
    assert '"user" =~ /^bob$/ AND "project" =~ /^p2$/' in run.queries["A"]
    expected = sum(n * BOB_J_PER_POINT / 3.6e6 * PUE * ci for n, ci in zip([3, 6, 6, 6], CI))
    assert close(run.reduced(dash.CO2E, "sum"), expected)  # 40.4796 g


def test_measured_pue_panel(influx_url: str) -> None:
    dashboard = dash.carbon()
    panel = next(p for p in dash.panels(dashboard) if p["title"] == "Measured PUE")
    later = TimeRange((T0 + 9 * HOUR) // 1_000_000, (T0 + 13 * HOUR) // 1_000_000)
    got = [(r["site"], r["time"], r["mean"]) for r in run_panel(influx_url, dashboard, panel, {}, later).rows()]
    assert got == [("dc1", (T0 + (10 + h) * HOUR) // 1_000_000, pytest.approx(1.3 + 0.1 * h)) for h in range(3)]
