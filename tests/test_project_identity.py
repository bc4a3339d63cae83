"""A project (and the phases in it) is its user's, as a job is (issue 17, item 5).

The reproduction: ``nobody`` runs with ``WATTLEDGER_PROJECT=alice-thesis`` and,
before this change, supplied 94% of alice-thesis's energy in
``report --by project`` and in ``--lifecycle --project alice-thesis``, and the
Grafana project panel added it up the same way. Now a project row is
(name, owner); only an admin's ``[jobs] shared_projects`` lets another user's
energy join a project under its name. Checked on the ledger, on a real
InfluxDB (the report's second source) and on the Grafana panel's queries run
against that InfluxDB.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fake_grafana import TimeRange, interpolate
from tests.influx_server import InfluxServer
from tests.test_report import H0, H1, H2, H3, KWH, MIN, job, make_cfg
from tests.test_report_influx import write
from wattledger import report as rp
from wattledger.cli.main import main
from wattledger.config import Config
from wattledger.grafana import dashboards as dash
from wattledger.grafana.defaults import Defaults
from wattledger.model.jobs import job_for
from wattledger.model.points import Point
from wattledger.store.ledger import Ledger
from wattledger.util.timeutil import iso

THESIS = "alice-thesis"


def points() -> list[Point]:
    """alice: 1 kWh of search and 1 of training; nobody: 32 kWh "training" under alice's project name
    (94% of the name's energy); bob 2 kWh (the admin may share the name with him); carol another project."""
    p = {"project": THESIS}
    return [
        job(H0 + 10 * MIN, "nas", 1 * KWH, user="alice", phase="search", **p),
        job(H1 + 10 * MIN, "fit", 1 * KWH, user="alice", phase="train", **p),
        job(H1 + 20 * MIN, "burn", 32 * KWH, user="nobody", phase="train", **p),
        job(H2 + 10 * MIN, "help", 2 * KWH, user="bob", phase="train", **p),
        job(H2 + 20 * MIN, "other", 3 * KWH, user="carol", project="carol-paper", phase="train"),
        job(H2 + 30 * MIN, "_idle", 0.5 * KWH),
    ]


def cfg(shared: dict[str, list[str]] | None = None) -> Config:
    c = make_cfg()
    c.jobs.shared_projects = shared or {}
    return c


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.append(points())
    return ledger


def kwh_by_key(report: rp.Report) -> dict[tuple[str, ...], float]:
    return {r.key: r.it_kwh for r in report.rows}


def test_the_environment_already_keys_jobs_by_user() -> None:
    """The agent side: the same variables give each user a job of their own (the report merged them)."""
    env = {"WATTLEDGER_JOB": "burn", "WATTLEDGER_PROJECT": THESIS}
    assert job_for("nobody", env, "").user == "nobody"
    assert job_for("nobody", env, "").project == THESIS


def test_owner_rule() -> None:
    from wattledger.model.jobs import project_owner

    shared = {THESIS: ["bob", "alice"]}
    assert project_owner(THESIS, "alice", {}) == "alice"
    assert project_owner(THESIS, "nobody", shared) == "nobody"
    assert project_owner(THESIS, "bob", shared) == project_owner(THESIS, "alice", shared) == "alice+bob"
    assert project_owner("", "alice", shared) == ""  # no project: nobody's name to protect


def test_by_project_never_merges_another_users_energy(ledger: Ledger) -> None:
    got = kwh_by_key(rp.from_ledger(ledger, cfg(), H0, H3, rp.Options(by="project")))
    assert got[(THESIS, "alice")] == pytest.approx(2.0)  # alice's own, not 36 kWh
    assert got[(THESIS, "nobody")] == pytest.approx(32.0)
    assert got[(THESIS, "bob")] == pytest.approx(2.0)
    assert got[("carol-paper", "carol")] == pytest.approx(3.0)
    assert got[("", "")] == pytest.approx(0.5)


def test_by_phase_keeps_owners_apart(ledger: Ledger) -> None:
    got = kwh_by_key(rp.from_ledger(ledger, cfg(), H0, H3, rp.Options(by="phase")))
    assert got[("train", "alice")] == pytest.approx(1.0)
    assert got[("train", "nobody")] == pytest.approx(32.0)


def test_the_admins_map_lets_listed_users_share_a_name(ledger: Ledger) -> None:
    shared = cfg({THESIS: ["alice", "bob"]})
    got = kwh_by_key(rp.from_ledger(ledger, shared, H0, H3, rp.Options(by="project")))
    assert got[(THESIS, "alice+bob")] == pytest.approx(4.0)
    assert got[(THESIS, "nobody")] == pytest.approx(32.0)  # not in the map: still apart
    assert (THESIS, "alice") not in got and (THESIS, "bob") not in got


def test_lifecycle_of_an_ambiguous_name_asks_whose(ledger: Ledger) -> None:
    r = rp.from_ledger(ledger, cfg(), 0, H3, rp.Options(by="phase", project=THESIS))
    with pytest.raises(rp.ReportError, match=r"used by 3 owners \(alice, bob, nobody\).*--user"):
        rp.lifecycle(r, THESIS, None, 0)
    mine = rp.from_ledger(ledger, cfg(), 0, H3, rp.Options(by="phase", project=THESIS, user="alice"))
    lc = rp.lifecycle(mine, THESIS, None, 0)
    assert lc.owner == "alice"
    assert lc.ct is not None and lc.ct.it_kwh == pytest.approx(1.0)
    assert lc.t is not None and lc.t.it_kwh == pytest.approx(1.0)  # nobody's 32 kWh are not alice's training
    shared = cfg({THESIS: ["alice", "bob"]})
    both = rp.lifecycle(rp.from_ledger(ledger, shared, 0, H3, rp.Options(by="phase", project=THESIS,
                                                                          user="alice")), THESIS, None, 0)
    assert both.t is not None and both.t.it_kwh == pytest.approx(1.0)  # --user alice: only alice's part


def test_lifecycle_of_a_shared_project_merges_its_users_only(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.append([p for p in points() if p.tags["user"] != "nobody"])
    shared = cfg({THESIS: ["alice", "bob"]})
    lc = rp.lifecycle(rp.from_ledger(ledger, shared, 0, H3, rp.Options(by="phase", project=THESIS)),
                      THESIS, None, 0)
    assert lc.owner == "alice+bob"
    assert lc.t is not None and lc.t.it_kwh == pytest.approx(3.0)


def test_cli_by_project_and_lifecycle(ledger: Ledger, tmp_path: Path) -> None:
    ledger.close()
    config = tmp_path / "c.toml"
    config.write_text('[carbon]\nzone = "DE"\n')
    base = ["report", "--config", str(config), "--state-dir", str(tmp_path), "--since", iso(H0), "--until",
            iso(H3)]
    r = CliRunner().invoke(main, [*base, "--by", "project", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = {(d["project"], d["owner"]): d["it_kwh"] for d in json.loads(r.stdout)["rows"]}
    assert rows[(THESIS, "alice")] == pytest.approx(2.0) and rows[(THESIS, "nobody")] == pytest.approx(32.0)
    r = CliRunner().invoke(main, [*base, "--by", "project"])
    assert "alice-thesis  nobody" in r.stdout and "alice-thesis  alice " in r.stdout
    life = ["report", "--config", str(config), "--state-dir", str(tmp_path), "--until", iso(H3), "--lifecycle",
            "--project", THESIS]
    r = CliRunner().invoke(main, life)
    assert r.exit_code == 1 and "used by 3 owners" in r.output and "--user" in r.output
    r = CliRunner().invoke(main, [*life, "--user", "alice", "--format", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["owner"] == "alice" and d["train_T"]["it_kwh"] == pytest.approx(1.0)
    config.write_text('[carbon]\nzone = "DE"\n[jobs]\nshared_projects = { "alice-thesis" = ["alice", "bob"] }\n')
    r = CliRunner().invoke(main, [*base, "--by", "project", "--format", "csv"])
    assert "alice-thesis,alice+bob," in r.stdout and "alice-thesis,nobody," in r.stdout


@pytest.mark.influx
def test_influx_report_keys_projects_by_owner_too(influxd: InfluxServer, ledger: Ledger) -> None:
    db = "wl_project_identity"
    influxd.query(f'DROP DATABASE "{db}"')
    influxd.create_db(db)
    write(influxd, db, points())
    client = rp.InfluxQL(influxd.url, db)
    for shared in (cfg(), cfg({THESIS: ["alice", "bob"]})):
        for by in ("project", "phase"):
            a = rp.from_influx(client, shared, H0, H3, rp.Options(by=by))
            b = rp.from_ledger(ledger, shared, H0, H3, rp.Options(by=by))
            assert kwh_by_key(a) == pytest.approx(kwh_by_key(b))
    got = kwh_by_key(rp.from_influx(client, cfg(), H0, H3, rp.Options(by="project")))
    assert got[(THESIS, "alice")] == pytest.approx(2.0)


# -- the Grafana project and phase panels, run against the real InfluxDB -----------------------------


def panel_series(url: str, db: str, board: dict[str, Any], title: str) -> dict[str, float]:
    """Each series of a panel as Grafana would name it (alias with $tag_ filled in) -> facility kWh."""
    panel = next(p for p in board["panels"] if p.get("title") == title)
    when = TimeRange(H0 // 1_000_000, H3 // 1_000_000)
    selected = {"host": "$__all", "user": "$__all", "project": "$__all", "phase": "$__all", "pue": "1.0",
                "zone": "DE", "provider": "electricitymaps", "kind": "actual", "ci_fallback": "381",
                # the database's one retention policy, by the hour (the tier choice: test_dashboards_fleet.py)
                "tier": "autogen", "res": "1h", "res_s": "3600", "jtier": "autogen", "jres": "1h", "jres_s": "3600"}
    out: dict[str, float] = {}
    for target in panel["targets"]:
        q = interpolate(target["query"], board, selected, when, 3_600_000)
        data = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ms"}).encode()
        with urllib.request.urlopen(url + "/query", data=data, timeout=30) as r:
            answer = json.loads(r.read())
        for series in answer["results"][0].get("series") or []:
            name = target["alias"]
            for tag, value in (series.get("tags") or {}).items():
                name = name.replace(f"$tag_{tag}", value)
            (value,) = [row[1] for row in series["values"]]
            out[name] = out.get(name, 0.0) + value
    return out


@pytest.mark.influx
def test_grafana_project_panels_merge_only_what_the_admin_shares(influxd: InfluxServer) -> None:
    db = "wl_project_panels"
    influxd.query(f'DROP DATABASE "{db}"')
    influxd.create_db(db)
    write(influxd, db, points())
    plain = panel_series(influxd.url, db, dash.ledger(), "Facility energy by project")
    assert plain == pytest.approx({"": 0.5, "alice-thesis (alice)": 2.0, "alice-thesis (nobody)": 32.0,
                                   "alice-thesis (bob)": 2.0, "carol-paper (carol)": 3.0})
    from wattledger.grafana.defaults import shared_pairs

    shared = Defaults(shared_projects=shared_pairs({THESIS: ["bob", "alice"]}))
    board = dash.ledger(shared)
    got = panel_series(influxd.url, db, board, "Facility energy by project")
    assert got == pytest.approx({"": 0.5, "alice-thesis (alice+bob)": 4.0, "alice-thesis (nobody)": 32.0,
                                 "carol-paper (carol)": 3.0})
    phases = panel_series(influxd.url, db, board, "Facility energy by phase")
    assert phases == pytest.approx({"": 0.5, "search (alice+bob)": 1.0, "train (alice+bob)": 3.0,
                                    "train (nobody)": 32.0, "train (carol)": 3.0})
    # Every joule once: the panel's series add up to all wl_job energy.
    assert sum(got.values()) == pytest.approx(sum(p.fields["energy_j"] for p in points()) / KWH)
