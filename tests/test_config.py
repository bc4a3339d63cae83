from __future__ import annotations

from pathlib import Path

import pytest

from wattledger import config


def test_defaults() -> None:
    cfg = config.load(environ={})
    assert cfg.pue.value == 1.58 and cfg.jobs.tag_vars[0] == "WATTLEDGER_JOB"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[agent]\ninterval_secs = 3\n")
    with pytest.raises(config.ConfigError, match="unknown key 'interval_secs' in \\[agent\\]"):
        config.load(f, environ={})
    f.write_text("[agnet]\n")
    with pytest.raises(config.ConfigError, match="unknown section \\[agnet\\]"):
        config.load(f, environ={})


def test_file_then_env(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[agent]\ninterval_s = 3\n[attribution]\ncpu_static_policy = "idle"\n')
    cfg = config.load(f, environ={"WATTLEDGER_AGENT_INTERVAL_S": "7"})
    assert cfg.agent.interval_s == 7.0 and cfg.attribution.cpu_static_policy == "idle"


def test_bad_values_say_what_is_wrong(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[attribution]\ncpu_static_policy = "fair"\n')
    with pytest.raises(config.ConfigError, match="cpu_static_policy must be one of"):
        config.load(f, environ={})
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml", environ={})
