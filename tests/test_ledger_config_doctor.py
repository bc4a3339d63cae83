"""[ledger] retention in the config, the agent compacting its own ledger as it ticks, and what doctor says
about the ledger (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clocks import FakeClock
from tests.test_storage_faults import Busy, Power
from wattledger import config as config_mod
from wattledger.agent.doctor import ledger_rows
from wattledger.agent.factory import build_agent, retention
from wattledger.config import Config, ConfigError, Gpus
from wattledger.model.points import WL_JOB
from wattledger.model.units import HOUR_NS, MINUTE_NS, NS_PER_S
from wattledger.store.ledger import LEDGER_FILE, Ledger

T0 = 1_709_596_800 * NS_PER_S
REPO = Path(__file__).resolve().parent.parent


def test_ledger_retention_is_configured_with_ranges(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[ledger]\nraw_days = 1.5\nminutes_days = 20\nhours_days = 400\nbuffer_points = 1000\n")
    cfg = config_mod.load(cfg_file, environ={})
    assert (cfg.ledger.raw_days, cfg.ledger.minutes_days, cfg.ledger.hours_days) == (1.5, 20.0, 400.0)
    assert retention(cfg).raw_s == 1.5 * 86400
    env = config_mod.load(None, environ={"WATTLEDGER_LEDGER_RAW_DAYS": "2"})
    assert env.ledger.raw_days == 2.0
    for text, needle in [("raw_days = 0", "[ledger] raw_days must be a number from 0.05 to 3650 (days)"),
                         ("hours_days = inf", "[ledger] hours_days must be"),
                         ("buffer_points = 2.5", "[ledger] buffer_points must be a whole number"),
                         ("raw_days = true", "[ledger] raw_days must be"),
                         ("raw_days = 40", "raw_days (40) <= minutes_days (35)")]:
        cfg_file.write_text(f"[ledger]\n{text}\n")
        with pytest.raises(ConfigError) as e:
            config_mod.load(cfg_file, environ={})
        assert needle in str(e.value)


def test_the_agent_compacts_its_ledger_as_it_ticks(tmp_path: Path) -> None:
    clock = iter(range(T0, T0 + 10 * HOUR_NS, 10 * NS_PER_S))
    cfg = Config()
    cfg.agent.gpus = Gpus.NEVER
    cfg.ledger.raw_days = 1 / 24  # an hour of raw ticks
    ledger = Ledger(tmp_path / LEDGER_FILE)
    agent = build_agent(cfg, ledger, energy=[Power()], procs=Busy(), clock=FakeClock(lambda: next(clock)),
                        host="h", carbon_sync=False)
    for _ in range(3 * 360 + 1):  # three hours of 10 s ticks
        agent.commit(agent.tick())
    meta = ledger.meta()
    assert int(meta["folded:wl_job_1m"]) >= T0 + 3 * HOUR_NS - 2 * MINUTE_NS  # minutes folded as they end
    assert int(meta["folded:wl_job_1h"]) == T0 + 2 * HOUR_NS
    assert int(meta["kept:wl_job_raw"]) >= T0 + HOUR_NS  # raw ticks older than an hour are gone
    assert min(r["time_ns"] for r in ledger.rows(WL_JOB)) >= T0 + HOUR_NS
    assert agent.compactor is not None and agent.compactor.steps > 0
    total = ledger.sums(WL_JOB, "energy_j", ("job",), T0, T0 + 4 * HOUR_NS)
    assert sum(e for _, _, e in total.cells) == pytest.approx(40.0 * 3 * 3600, rel=1e-6)  # 40 W, all of it
    ledger.close()


def test_doctor_shows_retention_size_oldest_tick_and_rollup_and_the_steady_state(tmp_path: Path) -> None:
    cfg = Config()
    cfg.agent.state_dir = str(tmp_path)
    rows = ledger_rows(cfg)
    assert [r.source for r in rows] == ["agent", "ledger"] and "no ledger yet" in rows[1].detail
    clock = iter(range(T0, T0 + 10 * HOUR_NS, NS_PER_S))
    cfg.agent.gpus = Gpus.NEVER
    ledger = Ledger(tmp_path / LEDGER_FILE)
    agent = build_agent(cfg, ledger, energy=[Power()], procs=Busy(), clock=FakeClock(lambda: next(clock)),
                        host="h", carbon_sync=False)
    for _ in range(7200):
        agent.commit(agent.tick())
    ledger.close()
    text = "\n".join(r.detail for r in ledger_rows(cfg))
    assert "keeps raw ticks 3 d, minutes 35 d, hours and days 800 d ([ledger])" in text
    assert f"{tmp_path / LEDGER_FILE}: " in text and " MB" in text
    assert "oldest raw tick 2024-03-05T00:00:01Z; oldest rollups: minute 2024-03-05T00:00:00Z, hour " \
           "2024-03-05T00:00:00Z, day none" in text
    assert "expected size at steady state ~" in text and "rows a tick every 1 s" in text
    env = dict(os.environ, WATTLEDGER_AGENT_GPUS="never", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "wattledger.cli.main", "doctor", "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert "expected size at steady state" in r.stdout and "oldest raw tick" in r.stdout
