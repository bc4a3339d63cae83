"""`wattledger report` and `wattledger carbon sync` through click: parsing and presenting."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.fake_carbon_apis import FakeCarbonAPIs
from tests.influx_server import InfluxServer
from tests.test_report import H0, H3, lifecycle_ledger, make_ledger
from wattledger.util.timeutil import iso
from wattledger.cli.main import main
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_CARBON

WINDOW = ["--since", iso(H0), "--until", iso(H3)]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "state"
    make_ledger(state).close()
    config = tmp_path / "config.toml"
    config.write_text('[carbon]\nzone = "DE"\nprovider = "electricitymaps"\n[pue]\nvalue = 1.5\n')
    return config, state


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_report_table_json_csv(setup: tuple[Path, Path]) -> None:
    config, state = setup
    base = ["report", "--config", str(config), "--state-dir", str(state), *WINDOW]
    rc, out, _ = run(*base)
    assert rc == 0
    assert "train-a    alice" in out and "F = intensity from the static DE 381 g/kWh" in out
    assert "IT kWh  cpu kWh  gpu kWh" in out  # the GPU's share of each job, on a GPU server
    rc, out, _ = run(*base, "--format", "json", "--by", "project")
    d = json.loads(out)
    assert {r["project"]: r["g_co2e"] for r in d["rows"]} == pytest.approx(
        {"bert": 1696.5, "": 450 + 285.75 + 57.15 + 5.715})
    assert d["total"]["g_co2e"] == pytest.approx(2495.115)
    rc, out, _ = run(*base, "--format", "csv", "--pue", "1.0")
    assert out.splitlines()[0].startswith("job,user,category,it_kwh,cpu_kwh,gpu_kwh,facility_kwh,g_co2e")
    assert out.splitlines()[1].startswith("train-a,alice,tagged,4.0,1.5,2.5,")
    assert out.splitlines()[2].startswith("_untagged,bob,untagged,1.0,1.0,0.0,")
    assert "static fallback DE 381 g/kWh" in out
    rc, out, _ = run(*base, "--format", "json", "--zone", "US-IA", "--pue", "1.0")
    assert json.loads(out)["total"]["g_co2e"] == pytest.approx(5.61 * 736.6)


def test_report_lifecycle(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lifecycle_ledger(state).close()
    config = tmp_path / "c.toml"
    config.write_text('[carbon]\nzone = "DE"\nprovider = "electricitymaps"\n')
    rc, out, _ = run("report", "--config", str(config), "--state-dir", str(state), "--until", iso(H3),
                     "--lifecycle", "--project", "gpt-mini", "--pue", "1.2", "--inferences-count", "1000",
                     "--expected-inferences", "1000000", "--format", "json")
    assert rc == 0, out
    d = json.loads(out)
    assert d["lifecycle"]["g_co2e"] == pytest.approx(230_400)
    assert d["since"] == "1970-01-01T00:00:00Z"  # all history by default
    r = CliRunner().invoke(main, ["report", "--config", str(config), "--state-dir", str(state), "--lifecycle"])
    assert r.exit_code == 2 and "--project" in r.output


def test_report_errors_are_messages(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, state = setup
    r = CliRunner().invoke(main, ["report", "--config", str(config), "--state-dir", str(tmp_path / "none")])
    assert r.exit_code == 1 and "no ledger at" in r.output
    r = CliRunner().invoke(main, ["report", "--config", str(config), "--state-dir", str(state), "--since", "lately"])
    assert r.exit_code == 2 and "7d" in r.output
    r = CliRunner().invoke(main, ["report", "--config", str(config), "--state-dir", str(state), *WINDOW,
                                 "--zone", "CAISO_NORTH"])
    assert r.exit_code == 1 and "g_per_kwh" in r.output


def test_report_plot(setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, state = setup
    png = tmp_path / "r.png"
    rc, out, err = run("report", "--config", str(config), "--state-dir", str(state), *WINDOW, "--plot", str(png))
    assert rc == 0 and "plot written" in err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    r = CliRunner().invoke(main, ["report", "--config", str(config), "--state-dir", str(state), *WINDOW,
                                  "--plot", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "pip install 'wattledger[plot]'" in r.output


@pytest.fixture
def fake() -> Iterator[FakeCarbonAPIs]:
    with FakeCarbonAPIs() as f:
        yield f


def test_carbon_sync_then_report_uses_it(fake: FakeCarbonAPIs, tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "c.toml"
    config.write_text(f'[carbon]\nprovider = "ukci"\nzone = "GB"\napi_url = "{fake.url}"\n[pue]\nvalue = 1.0\n')
    rc, out, _ = run("carbon", "sync", "--config", str(config), "--state-dir", str(state), *WINDOW)
    assert rc == 0
    assert "carbon sync: 6 wl_carbon points for zone GB from ukci (actual)" in out
    ledger = Ledger.in_state_dir(state)
    assert len(ledger.rows(WL_CARBON)) == 6
    ledger.close()
    rc, out, _ = run("report", "--config", str(config), "--state-dir", str(state), *WINDOW)
    assert "No wl_job energy" in out  # no agent ran here; the intensity is there for when it does
    # Static provider: nothing to sync, said plainly.
    config.write_text('[carbon]\nprovider = "static"\nzone = "GB"\n')
    rc, out, _ = run("carbon", "sync", "--config", str(config), "--state-dir", str(state))
    assert rc == 0 and "nothing to do" in out
    # A provider error is a message and exit 1, never a traceback.
    config.write_text(f'[carbon]\nprovider = "electricitymaps"\nzone = "DE"\napi_url = "{fake.url}"\n')
    r = CliRunner().invoke(main, ["carbon", "sync", "--config", str(config), "--state-dir", str(state)],
                           env={"WATTLEDGER_CARBON_TOKEN": "wrong-token-000"})
    assert r.exit_code == 1 and "HTTP 401" in r.output and "wrong-token-000" not in r.output


@pytest.mark.influx
def test_report_from_influx_cli(setup: tuple[Path, Path], influxd: InfluxServer, tmp_path: Path) -> None:
    from tests.test_report import carbon_points_backfill, carbon_points_first, energy_points
    from tests.test_report_influx import write

    config, state = setup
    influxd.create_db("wl_cli")
    write(influxd, "wl_cli", [*energy_points(), *carbon_points_first(), *carbon_points_backfill()])
    rc, out, _ = run("report", "--config", str(config), *WINDOW, "--from-influx", "--format", "json",
                     env={"WATTLEDGER_SINK_URL": influxd.url, "WATTLEDGER_SINK_DATABASE": "wl_cli"})
    assert rc == 0
    assert json.loads(out)["total"]["g_co2e"] == pytest.approx(2495.115)
