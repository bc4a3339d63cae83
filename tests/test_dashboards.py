"""The dashboards' shape: the files match the generator, provisioning works, every query is InfluxQL.

The numbers the panels show are checked in test_dashboards_queries.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from wattledger.grafana import dashboards as dash
from wattledger.carbon.static import lookup
from wattledger.cli.main import main
from wattledger.model.tiers import TIER_TABLE

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = REPO / "dashboards"
BUILTINS = {"timeFilter", "__interval", "__interval_ms", "__from", "__to", "__range_s", "__value",
            "__url_time_range", "interval", "col", "tag_component", "tag_user", "tag_project", "tag_phase",
            "tag_host", "tag_site", "tag_provider", "tag_kind", "tag_job"}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::\w+)?\]\]|\$\{(\w+)(?:\.[^:^\}]+)?(?::[^\}]+)?\}")


TIER_NAMES = {name for tier, (_, res) in dash.TIER_VARIABLES.items() for name in (tier, res, f"{res}_s")}


def all_targets(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in dash.panels(d) for t in p.get("targets", [])]


def test_exported_files_are_what_the_generator_makes() -> None:
    """dashboards/*.json is `wattledger dashboards export dashboards`; regenerate after changing dashboards.py."""
    boards = dash.all_dashboards()
    on_disk = {p.name for p in DASHBOARDS_DIR.glob("*.json")}
    assert on_disk == set(boards), "run: wattledger dashboards export dashboards"
    for name, board in boards.items():
        assert (DASHBOARDS_DIR / name).read_text(encoding="utf-8") == dash.render(board), (
            f"dashboards/{name} is stale: run `wattledger dashboards export dashboards`")


def test_export_command_writes_the_same_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["dashboards", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for name in dash.all_dashboards():
        assert (tmp_path / "out" / name).read_bytes() == (DASHBOARDS_DIR / name).read_bytes()


def test_export_takes_defaults_from_a_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[pue]\nvalue = 1.2\n\n[carbon]\nzone = "FR"\n')
    result = CliRunner().invoke(main, ["dashboards", "export", str(tmp_path / "out"), "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    board = json.loads((tmp_path / "out" / "wattledger-job.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["pue"]["current"]["value"] == "1.2"
    assert variables["zone"]["current"]["value"] == "FR"
    assert variables["ci_fallback"]["current"]["value"] == "56"  # the static table's FR figure

    cfg.write_text('[carbon]\nzone = "FR"\ng_per_kwh = 70.5\n')
    result = CliRunner().invoke(main, ["dashboards", "export", str(tmp_path / "out2"), "--config", str(cfg)])
    board = json.loads((tmp_path / "out2" / "wattledger-job.json").read_text())
    assert {v["name"]: v for v in board["templating"]["list"]}["ci_fallback"]["current"]["value"] == "70.5"


def test_export_with_an_unknown_zone_says_what_to_do(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[carbon]\nzone = "XX-NOWHERE"\n')
    result = CliRunner().invoke(main, ["dashboards", "export", str(tmp_path / "out"), "--config", str(cfg)])
    assert result.exit_code != 0
    assert "g_per_kwh" in result.output


@pytest.mark.parametrize("name", list(dash.BUILDERS))
def test_datasource_is_a_variable_not_an_input(name: str) -> None:
    d = dash.all_dashboards()[name]
    assert "__inputs" not in d and "__requires" not in d
    ds = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert len(ds) == 1 and ds[0]["name"] == "datasource" and ds[0]["query"] == "influxdb"
    for p in dash.panels(d):
        if p["type"] != "text":
            assert p["datasource"] == {"type": "influxdb", "uid": "${datasource}"}, p["title"]
    for t in all_targets(d):
        assert t["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == {"type": "influxdb", "uid": "${datasource}"}


@pytest.mark.parametrize("name", list(dash.BUILDERS))
def test_queries_are_influxql_and_use_only_defined_variables(name: str) -> None:
    d = dash.all_dashboards()[name]
    defined = {v["name"] for v in d["templating"]["list"]}
    texts = [t["query"] for t in all_targets(d)] + [v["query"] for v in d["templating"]["list"]
                                                     if v["type"] == "query"]
    for t in all_targets(d):
        assert t["rawQuery"] is True
        assert t["query"].startswith("SELECT "), t["query"]
        assert "$timeFilter" in t["query"] or "${__from}" in t["query"], t["query"]
        texts.append(t.get("alias", ""))
    for v in d["templating"]["list"]:
        if v["type"] == "query" and v["name"] in TIER_NAMES:  # the hidden tier choice reads the wl_tier rows
            assert v["query"].startswith("SELECT ") and f'FROM "{TIER_TABLE}"' in v["query"] and v["hide"] == 2
            assert v["refresh"] == 2, "the tier must be chosen again when the range changes"
        elif v["type"] == "query":
            assert v["query"].startswith("SHOW TAG VALUES FROM "), v["query"]
    for text in texts:
        assert "from(bucket" not in text and "|>" not in text  # no Flux
        for m in _VARIABLE.finditer(text):
            var = m.group(1) or m.group(2) or m.group(3)
            assert var in defined or var in BUILTINS, f"{name}: ${var} is not defined in {text!r}"


@pytest.mark.parametrize("name", list(dash.BUILDERS))
def test_layout_and_identity(name: str) -> None:
    d = dash.all_dashboards()[name]
    assert d["uid"].startswith("wattledger-") and len(d["uid"]) <= 40
    assert dash.TAG in d["tags"]
    ids = [p["id"] for p in dash.panels(d)]
    assert len(ids) == len(set(ids))
    titles = [(p["type"], p["title"]) for p in dash.panels(d)]
    assert len(titles) == len(set(titles)), "tests find panels by (type, title)"
    for p in dash.panels(d):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "text":
            assert p["description"], p["title"]


def test_uids_are_unique() -> None:
    uids = [d["uid"] for d in dash.all_dashboards().values()]
    assert len(uids) == len(set(uids))


def test_pue_and_carbon_variables() -> None:
    for name, d in dash.all_dashboards().items():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        uses = json.dumps(d)
        if "$pue" in uses:
            assert variables["pue"]["type"] == "textbox" and variables["pue"]["current"]["value"] == "1.58"
        if "wl_carbon" in uses:
            assert variables["zone"]["query"] == 'SHOW TAG VALUES FROM "wl_carbon" WITH KEY = "zone"'
            assert variables["ci_fallback"]["current"]["value"] == f"{lookup('WORLD').g_per_kwh:g}"
    job_vars = {v["name"]: v for v in dash.job()["templating"]["list"]}
    assert job_vars["job"]["query"] == 'SHOW TAG VALUES FROM "wl_job" WITH KEY = "job"'
    assert job_vars["job"]["multi"] is False
    assert job_vars["user"]["allValue"] == ".*"


def test_co2e_panels_multiply_per_hour() -> None:
    """Every CO2e panel takes the product per UTC hour, never a mean intensity over the range."""
    found = 0
    for d in dash.all_dashboards().values():
        for p in dash.panels(d):
            if "CO2e" not in p["title"]:
                continue
            found += 1
            for t in p["targets"]:
                assert "GROUP BY time(1h)" in t["query"], (p["title"], t["query"])
            steps = [s["id"] for s in p["transformations"]]
            assert steps[steps.index("joinByField") + 1] == "calculateField"
            join = next(s for s in p["transformations"] if s["id"] == "joinByField")
            assert join["options"] == {"byField": "Time", "mode": "inner"}
    assert found == 7  # 5, and the job and ledger pages' Total CO2e (operational per hour + embodied, issue 16)


def test_provisioning_files_point_at_the_datasource_and_the_dashboards() -> None:
    ds = yaml.safe_load((DASHBOARDS_DIR / "provisioning/datasources/wattledger.yaml").read_text())
    (source,) = ds["datasources"]
    assert ds["apiVersion"] == 1
    assert (source["name"], source["uid"], source["type"]) == (dash.DATASOURCE_NAME, dash.DATASOURCE_UID, "influxdb")
    assert source["jsonData"]["version"] == "InfluxQL"
    assert "Token ${WATTLEDGER_INFLUX_TOKEN}" == source["secureJsonData"]["httpHeaderValue1"]  # no secret in the file
    prov = yaml.safe_load((DASHBOARDS_DIR / "provisioning/dashboards/wattledger.yaml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards/wattledger"
    # The datasource variable preselects the provisioned datasource.
    var = dash.datasource_variable()
    assert var["current"]["value"] == source["uid"]


def test_transformations_stay_within_grafana_11() -> None:
    """deploy/compose.yaml runs Grafana 11.2 (tests/node pins its @grafana/data): binary operands must be
    field names (11 has no matcher operands such as "all number fields"), and only transformers 11.2 has."""
    known = {"joinByField", "calculateField", "filterFieldsByName", "renameByRegex", "reduce", "organize"}
    for d in dash.all_dashboards().values():
        for p in dash.panels(d):
            for step in p.get("transformations", []):
                assert step["id"] in known, (p["title"], step["id"])
                binary = step["options"].get("binary")
                if binary:
                    assert isinstance(binary["left"], str) and isinstance(binary["right"], str), p["title"]
