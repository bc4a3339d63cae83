"""report numbers on a ledger with known data, checked against hand-computed figures."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from wattledger import report as rp
from wattledger.util.timeutil import HOUR_NS, parse_iso_ns
from wattledger.config import Config
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_CARBON, WL_JOB, WL_PUE, Point

H0 = parse_iso_ns("2024-03-05T00:00:00Z")
H1, H2, H3 = H0 + HOUR_NS, H0 + 2 * HOUR_NS, H0 + 3 * HOUR_NS
MIN = 60 * 10**9
KWH = 3.6e6


def job(t: int, job: str, energy_j: float, *, user: str = "", project: str = "", phase: str = "",
        component: str = "cpu", source: str = "rapl", host: str = "gpu01") -> Point:
    tags = {"host": host, "job": job, "user": user, "project": project, "phase": phase, "component": component,
            "device": "0", "source": source}
    return Point(WL_JOB, tags, {"energy_j": energy_j, "dynamic_j": energy_j * 0.8, "static_j": energy_j * 0.2,
                                "driver_s": 1.0}, t)


def ci(t: int, g: float, *, zone: str = "DE", provider: str = "electricitymaps", kind: str = "actual") -> Point:
    return Point(WL_CARBON, {"zone": zone, "provider": provider, "kind": kind}, {"g_per_kwh": g}, t)


def energy_points() -> list[Point]:
    """3 hours on one host. H2 has no intensity (static fallback) and an estimated row."""
    a = {"user": "alice", "project": "bert", "phase": "train"}
    return [
        job(H0 - 5 * MIN, "train-a", KWH, **a),  # before the window
        job(H0 + 20 * MIN, "train-a", 0.5 * KWH, **a),
        job(H0 + 40 * MIN, "train-a", 0.5 * KWH, component="gpu", source="nvml", **a),
        job(H1 + 10 * MIN, "train-a", KWH, component="gpu", source="nvml", **a),
        job(H1 + 50 * MIN, "train-a", KWH, component="gpu", source="nvml", **a),
        job(H1 + 30 * MIN, "_untagged", KWH, user="bob"),
        job(H2 + 15 * MIN, "train-a", KWH, source="model", **a),
        job(H2 + 15 * MIN, "_idle", 0.5 * KWH, component="gpu", source="nvml"),
        job(H2 + 15 * MIN, "_system", 0.1 * KWH),
        job(H2 + 15 * MIN, "_agent", 0.01 * KWH),
        job(H3, "train-a", KWH, **a),  # at `until`: outside
    ]


def carbon_points_first() -> list[Point]:
    return [
        ci(H0, 100.0), ci(H0 + 30 * MIN, 200.0),  # H0: mean 150
        ci(H1, 500.0, kind="forecast"),  # H1: replaced by the actual 300 below
        ci(H0, 999.0, provider="csv"),  # another provider for the zone: not the configured one
        ci(H1, 50.0, zone="FR"),  # another zone
    ]


def carbon_points_backfill() -> list[Point]:
    return [ci(H1, 300.0)]


def make_cfg() -> Config:
    cfg = Config()
    cfg.carbon.zone = "DE"
    cfg.carbon.provider = "electricitymaps"
    cfg.pue.value = 1.5
    return cfg


def make_ledger(path: Path, extra: list[Point] | None = None) -> Ledger:
    ledger = Ledger(path / "ledger.sqlite3")
    ledger.append(energy_points())
    ledger.append(carbon_points_first())
    ledger.append(carbon_points_backfill())  # a later sync: the forecast becomes an actual
    if extra:
        ledger.append(extra)
    return ledger


# Hand-computed: CI H0 = (100 + 200) / 2 = 150, H1 = 300 (actual beats forecast), H2 = static DE 381.
# PUE 1.5. alice: 1 kWh*1.5*150 + 2*1.5*300 + 1*1.5*381 = 225 + 900 + 571.5.
EXPECTED_BY_JOB = {
    ("train-a", "alice"): (4.0, 6.0, 1696.5),
    ("_untagged", "bob"): (1.0, 1.5, 450.0),
    ("_idle", ""): (0.5, 0.75, 285.75),
    ("_system", ""): (0.1, 0.15, 57.15),
    ("_agent", ""): (0.01, 0.015, 5.715),
}


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return make_ledger(tmp_path)


def test_hourly_intensities_give_the_hand_computed_co2e(ledger: Ledger) -> None:
    r = rp.from_ledger(ledger, make_cfg(), H0, H3)
    got = {row.key: (row.it_kwh, row.facility_kwh, row.g_co2e) for row in r.rows}
    assert got.keys() == EXPECTED_BY_JOB.keys()
    for key, want in EXPECTED_BY_JOB.items():
        assert got[key] == pytest.approx(want), key
    assert r.total.g_co2e == pytest.approx(2495.115)
    assert r.total.it_kwh == pytest.approx(5.61)
    assert r.total.facility_kwh == pytest.approx(5.61 * 1.5)
    assert [row.key for row in r.rows][0] == ("train-a", "alice")  # biggest first
    assert r.hours == [H0, H1, H2]


def test_fallback_hours_are_flagged_everywhere(ledger: Ledger) -> None:
    r = rp.from_ledger(ledger, make_cfg(), H0, H3)
    assert r.fallback_hours == [H2]
    assert r.fallback is not None and (r.fallback.zone, r.fallback.g_per_kwh) == ("DE", 381.0)
    alice = r.rows[0]
    assert alice.fallback_kwh == pytest.approx(1.0)
    assert r.intensity_source(alice) == "wl_carbon:electricitymaps + static fallback DE 381 g/kWh"
    bob = next(x for x in r.rows if x.key[0] == "_untagged")
    assert bob.fallback_kwh == 0 and r.intensity_source(bob) == "wl_carbon:electricitymaps"
    idle = next(x for x in r.rows if x.key[0] == "_idle")
    assert r.intensity_source(idle) == "static fallback DE 381 g/kWh"

    table = rp.format_table(r)
    assert "F = intensity from the static DE 381 g/kWh, 2023" in table
    assert "no wl_carbon point for zone DE in 1 of 3 hours" in table
    assert "for 2 of 3 hours" in table
    lines = {line.split()[0]: line for line in table.splitlines() if line.strip()}
    assert lines["train-a"].rstrip().endswith("FE")
    assert lines["_idle"].rstrip().endswith("F")
    assert not lines["_untagged"].rstrip().endswith(("F", "E"))

    rows = list(csv.DictReader(io.StringIO(rp.format_csv(r))))
    by_job = {row["job"]: row for row in rows}
    assert by_job["train-a"]["intensity_fallback"] == "True"
    assert float(by_job["train-a"]["fallback_kwh"]) == pytest.approx(1.0)
    assert "static fallback DE 381" in by_job["train-a"]["intensity_source"]
    assert by_job["_untagged"]["intensity_fallback"] == "False"

    d = json.loads(rp.format_json(r))
    assert d["intensity"] == {"hours": 3, "hours_from_wl_carbon": 2, "hours_static": 1,
                              "static": {"zone": "DE", "g_per_kwh": 381.0, "year": 2023,
                                         "source": r.fallback.source, "why": "fallback"}}
    assert any(n.startswith("F = ") for n in d["notes"])


def test_estimates_and_host_energy_split(ledger: Ledger) -> None:
    r = rp.from_ledger(ledger, make_cfg(), H0, H3)
    assert r.categories == pytest.approx({"tagged": 4 * KWH, "untagged": KWH, "system": 0.1 * KWH,
                                          "idle": 0.5 * KWH, "agent": 0.01 * KWH})
    alice = r.rows[0]
    assert alice.estimated_kwh == pytest.approx(1.0) and alice.estimate_sources == {"model"}
    assert all(row.estimated_it_j == 0 for row in r.rows[1:])
    d = r.to_dict()
    assert d["rows"][0]["estimate"] is True and d["rows"][0]["category"] == "tagged"
    assert d["host_energy"]["tagged"]["share"] == pytest.approx(4 / 5.61)
    assert d["host_energy"]["idle"]["kwh"] == pytest.approx(0.5)
    table = rp.format_table(r)
    assert "E = includes energy not measured by a counter (estimate: source=model), 1 kWh of 5.61 kWh" in table
    assert "tagged 4 kWh (71.3%), untagged 1 kWh (17.8%), system 0.1 kWh (1.8%), idle 0.5 kWh (8.9%), " \
           "agent 0.01 kWh (0.2%)" in table


@pytest.mark.parametrize("by,expected", [
    # A project (and a phase in it) is (name, owner) since issue 17 item 5; no project has no owner.
    ("project", {("bert", "alice"): 1696.5, ("", ""): 450 + 285.75 + 57.15 + 5.715}),
    ("user", {("alice",): 1696.5, ("bob",): 450.0, ("",): 285.75 + 57.15 + 5.715}),
    ("phase", {("train", "alice"): 1696.5, ("", ""): 450 + 285.75 + 57.15 + 5.715}),
])
def test_grouping(ledger: Ledger, by: str, expected: dict) -> None:
    r = rp.from_ledger(ledger, make_cfg(), H0, H3, rp.Options(by=by))
    assert {row.key: row.g_co2e for row in r.rows} == pytest.approx(expected)
    assert r.total.g_co2e == pytest.approx(2495.115)


def test_pue_series_per_hour_for_the_configured_site(tmp_path: Path) -> None:
    pue = [Point(WL_PUE, {"site": "dc1"}, {"pue": 1.2}, H1), Point(WL_PUE, {"site": "dc1"}, {"pue": 1.4}, H1 + 30 * MIN),
           Point(WL_PUE, {"site": "dc2"}, {"pue": 2.0}, H1)]
    ledger = make_ledger(tmp_path, pue)
    cfg = make_cfg()
    cfg.pue.site = "dc1"
    r = rp.from_ledger(ledger, cfg, H0, H3)
    got = {row.key: row.g_co2e for row in r.rows}
    assert got[("train-a", "alice")] == pytest.approx(225 + 2 * 1.3 * 300 + 571.5)
    assert got[("_untagged", "bob")] == pytest.approx(1.3 * 300)
    assert r.pue == "wl_pue series for 1 of 3 hours, else 1.5 ([pue] value)"
    # --pue overrides any series.
    r = rp.from_ledger(ledger, cfg, H0, H3, rp.Options(pue=1.1))
    assert {row.key: row.g_co2e for row in r.rows}[("_untagged", "bob")] == pytest.approx(1.1 * 300)
    assert r.pue == "1.1 (--pue)"
    with pytest.raises(rp.ReportError, match="PUE|pue"):
        rp.from_ledger(ledger, cfg, H0, H3, rp.Options(pue=0.9))


def test_zone_override_and_unknown_zone(ledger: Ledger) -> None:
    cfg = make_cfg()
    r = rp.from_ledger(ledger, cfg, H0, H3, rp.Options(zone="FR"))
    # FR has only H1 = 50; H0 and H2 use the static FR figure 56.
    assert r.total.g_co2e == pytest.approx(1.5 * (1 * 56 + 3 * 50 + 1.61 * 56))
    assert r.fallback_hours == [H0, H2]
    with pytest.raises(rp.ReportError, match="g_per_kwh"):
        rp.from_ledger(ledger, cfg, H0, H3, rp.Options(zone="CAISO_NORTH"))
    cfg.carbon.g_per_kwh = 400.0
    r = rp.from_ledger(ledger, cfg, H0, H3, rp.Options(zone="CAISO_NORTH"))
    assert r.total.g_co2e == pytest.approx(5.61 * 1.5 * 400)
    assert "configured [carbon] g_per_kwh" in rp.format_table(r)


def test_static_provider_is_named_as_configuration_not_fallback(ledger: Ledger) -> None:
    cfg = make_cfg()
    cfg.carbon.provider = "static"
    r = rp.from_ledger(ledger, cfg, H0, H3, rp.Options(zone="US-IA"))
    assert r.total.g_co2e == pytest.approx(5.61 * 1.5 * 736.6)
    assert "[carbon] provider is static" in rp.format_table(r)
    assert r.to_dict()["intensity"]["static"]["why"] == "configured"
    assert r.intensity_source(r.rows[0]) == "static US-IA 736.6 g/kWh"


def test_window_and_host_filter(ledger: Ledger) -> None:
    r = rp.from_ledger(ledger, make_cfg(), H1, H2)
    assert r.total.g_co2e == pytest.approx(900 + 450)
    assert r.fallback_hours == []
    assert rp.from_ledger(ledger, make_cfg(), H0, H3, rp.Options(host="other")).rows == []
    empty = rp.format_table(rp.from_ledger(ledger, make_cfg(), H0, H3, rp.Options(host="other")))
    assert "No wl_job energy in this window" in empty


# -- life cycle --------------------------------------------------------------------------------


def lifecycle_points() -> list[Point]:
    p = {"user": "carol", "project": "gpt-mini"}
    return [
        job(H0 + 10 * MIN, "nas-1", 2 * KWH, phase="search", **p),
        job(H1 + 10 * MIN, "train-1", 4 * KWH, phase="train", **p),
        job(H2 + 10 * MIN, "serve-1", 0.5 * KWH, phase="inference", **p),
        job(H2 + 20 * MIN, "eval-1", 0.1 * KWH, phase="eval", **p),
    ]


def lifecycle_ledger(path: Path) -> Ledger:
    ledger = make_ledger(path)
    ledger.append(lifecycle_points())
    return ledger


def test_lifecycle_arithmetic(tmp_path: Path) -> None:
    ledger = lifecycle_ledger(tmp_path)
    r = rp.from_ledger(ledger, make_cfg(), H0, H3, rp.Options(by="phase", pue=1.2, project="gpt-mini"))
    lc = rp.lifecycle(r, "gpt-mini", inferences_count=1000, expected_inferences=1_000_000)
    assert lc.ct is not None and lc.t is not None and lc.inference is not None
    assert (lc.ct.facility_kwh, lc.ct.g_co2e) == pytest.approx((2.4, 2.4 * 150))
    assert (lc.t.facility_kwh, lc.t.g_co2e) == pytest.approx((4.8, 4.8 * 300))
    assert lc.per_inference() == pytest.approx((0.6 / 1000, 0.6 * 381 / 1000))
    assert lc.projected() == pytest.approx((2.4 + 4.8 + 600, 360 + 1440 + 228_600))
    d = lc.to_dict()
    assert d["lifecycle"]["g_co2e"] == pytest.approx(230_400)
    assert d["lifecycle"]["formula"] == "CT + T + e*I"
    assert set(d["other_phases"]) == {"eval"}
    assert d["train_T"]["intensity_fallback"] is False and d["inference_measured"]["intensity_fallback"] is True
    text = rp.format_lifecycle(lc, "table")
    assert "CT + T + e*I, e = 1,000,000" in text and "230,400" in text
    rows = list(csv.reader(io.StringIO(rp.format_lifecycle(lc, "csv"))))
    assert rows[0] == ["part", "facility_kwh", "g_co2e"] and float(rows[-1][2]) == pytest.approx(230_400)
    # Without expected inferences the life cycle is CT + T.
    assert rp.lifecycle(r, "gpt-mini", None, 0).projected() == pytest.approx((7.2, 1800))


def test_lifecycle_refuses_what_it_cannot_know(tmp_path: Path) -> None:
    ledger = lifecycle_ledger(tmp_path)
    r = rp.from_ledger(ledger, make_cfg(), H0, H3, rp.Options(by="phase", project="gpt-mini"))
    with pytest.raises(rp.ReportError, match="--inferences-count"):
        rp.lifecycle(r, "gpt-mini", None, 10)
    r2 = rp.from_ledger(ledger, make_cfg(), H0, H3, rp.Options(by="phase", project="bert"))
    with pytest.raises(rp.ReportError, match="phase=inference"):
        rp.lifecycle(r2, "bert", 100, 10)
    lc = rp.lifecycle(r2, "bert", None, 0)
    assert lc.ct is None and lc.projected() == pytest.approx((6.0, 1696.5))
    assert "unmeasured" in rp.format_lifecycle(lc, "table")


def test_ledger_hourly_sums_match_a_row_by_row_sum(ledger: Ledger) -> None:
    tags = ("job", "user", "source")
    got = {(r["time_ns"], *(r[t] for t in tags)): r["energy_j"]
           for r in ledger.hourly_sums(WL_JOB, "energy_j", tags, H0, H3)}
    want: dict[tuple, float] = {}
    for r in ledger.rows(WL_JOB, H0, H3):
        k = (r["time_ns"] - r["time_ns"] % HOUR_NS, *(r[t] for t in tags))
        want[k] = want.get(k, 0.0) + r["energy_j"]
    assert got == pytest.approx(want) and len(got) == 8
    only_bob = ledger.hourly_sums(WL_JOB, "energy_j", ("job",), H0, H3, {"user": "bob"})
    assert only_bob == [{"time_ns": H1, "job": "_untagged", "energy_j": KWH}]
    with pytest.raises(ValueError):
        ledger.hourly_sums(WL_JOB, "energy_j; DROP TABLE wl_job", ("job",), H0, H3)


def test_each_row_splits_its_it_energy_by_component(ledger: Ledger) -> None:
    """On a GPU server a researcher wants to see how much of a job was GPU: the parts sum to the row."""
    r = rp.from_ledger(ledger, make_cfg(), H0, H3)
    for row in [*r.rows, r.total]:
        assert sum(row.it_kwh_by_component.values()) == pytest.approx(row.it_kwh)
    assert r.components == ["cpu", "gpu"]
    train = next(row for row in r.rows if row.key == ("train-a", "alice"))
    assert train.it_kwh_by_component == pytest.approx({"cpu": 1.5, "gpu": 2.5})
    assert rp.format_json(r).count('"it_kwh_by_component"') == len(r.rows) + 1
