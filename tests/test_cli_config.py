"""The command line and the config share one set of rules: env twins, typed options, strict numbers, known zones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from wattledger.carbon import check_zone
from wattledger.cli.main import main
from wattledger.config import CarbonSection, ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "sysfs-intel-2s"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args), env=env)
    return r.exit_code, r.output


@pytest.mark.parametrize("value", ["nan", "inf", "1e-9", "1e12"])
def test_agent_interval_option_is_checked_like_the_file(tmp_path: Path, value: str) -> None:
    rc, out = invoke("agent", "--config", os.devnull, "--state-dir", str(tmp_path), "--interval", value)
    assert rc == 2 and "--interval: [agent] interval_s must be a number from 0.05 to 3600" in out


def test_agent_interval_from_the_environment_is_checked(tmp_path: Path) -> None:
    rc, out = invoke("agent", "--config", os.devnull, "--state-dir", str(tmp_path),
                     env={"WATTLEDGER_AGENT_INTERVAL_S": "nan"})
    assert rc == 2 and "environment WATTLEDGER_AGENT_INTERVAL_S: [agent] interval_s must be" in out


@pytest.mark.parametrize("command", ["run", "top"])
def test_run_and_top_intervals_refuse_nan(command: str) -> None:
    args = ["--interval", "nan"] + (["--", "true"] if command == "run" else ["--once"])
    rc, out = invoke(command, "--config", os.devnull, *args)
    assert rc == 2 and "must be a number of seconds from 0.05 to 3600" in out


@pytest.mark.parametrize("command", ["agent", "doctor"])
def test_agent_and_doctor_refuse_an_unknown_zone(tmp_path: Path, command: str) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[carbon]\nzone = "XX-NOWHERE"\n')
    extra = ["--state-dir", str(tmp_path)] if command == "agent" else []
    rc, out = invoke(command, "--config", str(conf), *extra)
    assert rc == 2 and "[carbon] zone: no static carbon intensity for zone 'XX-NOWHERE'" in out
    assert "known zones:" in out and "g_per_kwh" in out


def test_check_zone_knows_when_a_zone_is_not_needed() -> None:
    check_zone(CarbonSection(zone="US-CAL-CISO"))  # a sub-zone of US: the table answers for it
    check_zone(CarbonSection(zone="XX-NOWHERE", g_per_kwh=123.0))  # an own figure: no table needed
    check_zone(CarbonSection(zone="CAISO_NORTH", provider="watttime"))  # live providers name their own zones
    with pytest.raises(ConfigError, match=r"^\[carbon\] zone: .*XX"):
        check_zone(CarbonSection(zone="XX"))


def test_influx_options_follow_the_one_sink_rule(tmp_path: Path) -> None:
    base = ["agent", "--config", os.devnull, "--state-dir", str(tmp_path), "--influx-url", "http://127.0.0.1:1"]
    rc, out = invoke(*base)
    assert rc == 2 and "--influx-database" in out
    rc, out = invoke(*base, "--influx-database", "d", "--influx-bucket", "b")
    assert rc == 2 and "not both" in out


def test_env_url_plus_database_from_the_file_starts_the_agent(tmp_path: Path) -> None:
    """Refused by the CLI before ('--influx-url needs --influx-database') although config.load accepted it."""
    conf = tmp_path / "c.toml"
    conf.write_text('[sink]\ndatabase = "wl"\n[agent]\ngpus = "never"\n')
    env = dict(CLEAN_ENV, WATTLEDGER_SINK_URL="http://127.0.0.1:1")  # nothing listens: points stay spooled
    r = subprocess.run([sys.executable, "-m", "wattledger.cli.main", "agent", "--config", str(conf), "--ticks", "1",
                        "--interval", "0.2", "--sysfs-root", str(FIXTURE), "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "sink influx_v1" in r.stderr and "not available" in r.stderr
