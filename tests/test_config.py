from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from wattledger import config
from wattledger.model.policies import StaticPolicy


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


# -- strict numbers (issue 17, item 8): each of these was accepted before ------------------------------------------

BAD_IN_FILE = [
    # (section, key, TOML value, what the error must say is allowed)
    ("agent", "interval_s", "nan", "from 0.05 to 3600"),
    ("agent", "interval_s", "inf", "from 0.05 to 3600"),
    ("agent", "interval_s", "1e-9", "from 0.05 to 3600"),
    ("agent", "interval_s", "1e12", "from 0.05 to 3600"),
    ("agent", "interval_s", "true", "a number"),
    ("sink", "batch_points", "2.9", "a whole number from 1 to"),
    ("sink", "batch_points", "true", "a whole number"),
    ("sink", "timeout_s", "nan", "from 0.1 to 600"),
    ("sink", "timeout_s", "0", "from 0.1 to 600"),
    ("sink", "timeout_s", "inf", "from 0.1 to 600"),
    ("estimate", "cpu_idle_w_per_vcpu", "-0.71", "from 0 to 100"),
    ("estimate", "cpu_max_w_per_vcpu", "-4.26", "from 0 to 100"),
    ("estimate", "dram_w_per_gib", "-0.392", "from 0 to 10"),
    ("jobs", "max_tag_chars", "-1", "a whole number from 1 to 1024"),
    ("jobs", "max_tag_chars", "0", "a whole number from 1 to 1024"),
    ("jobs", "max_tag_chars", "12.5", "a whole number from 1 to 1024"),
    ("pue", "value", "inf", "from 1 to 5"),
    ("pue", "value", "nan", "from 1 to 5"),
    ("pue", "value", "12", "from 1 to 5"),
    ("spool", "max_rows", "2.5", "a whole number from 1 to"),
    ("spool", "max_rows", "false", "a whole number from 1 to"),
    ("attribution", "idle_percentile", "nan", "from 0 to 100"),
    ("attribution", "idle_percentile", "101", "from 0 to 100"),
    ("attribution", "idle_power_w", "{ cpu = -5.0 }", "each a number from 0 to 10000"),
    ("attribution", "idle_power_w", "{ cpu = nan }", "each a number from 0 to 10000"),
    ("attribution", "idle_power_w", "{ cpu = true }", "each a number from 0 to 10000"),
    ("carbon", "g_per_kwh", "nan", "empty or a number from 0 to 2000"),
    ("carbon", "g_per_kwh", "-1", "empty or a number from 0 to 2000"),
    ("carbon", "sync_interval_s", "nan", "0 (off) or a number from 60 to 604800"),
    ("carbon", "sync_interval_s", "1", "0 (off) or a number from 60 to 604800"),
]


@pytest.mark.parametrize("section,key,value,allowed", BAD_IN_FILE,
                         ids=[f"{s}.{k}={v}" for s, k, v, _ in BAD_IN_FILE])
def test_a_bad_number_in_the_file_is_one_line_naming_key_and_range(tmp_path: Path, section: str, key: str,
                                                                    value: str, allowed: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(f, environ={})
    msg = str(e.value)
    assert f"[{section}] {key} must be" in msg and allowed in msg and str(f) in msg and "\n" not in msg


BAD_IN_ENV = [
    ("WATTLEDGER_AGENT_INTERVAL_S", "nan", "[agent] interval_s"),
    ("WATTLEDGER_AGENT_INTERVAL_S", "1e-9", "[agent] interval_s"),
    ("WATTLEDGER_AGENT_INTERVAL_S", "inf", "[agent] interval_s"),
    ("WATTLEDGER_AGENT_INTERVAL_S", "true", "[agent] interval_s"),
    ("WATTLEDGER_SINK_BATCH_POINTS", "2.9", "[sink] batch_points"),
    ("WATTLEDGER_SINK_TIMEOUT_S", "nan", "[sink] timeout_s"),
    ("WATTLEDGER_JOBS_MAX_TAG_CHARS", "-1", "[jobs] max_tag_chars"),
    ("WATTLEDGER_PUE_VALUE", "inf", "[pue] value"),
    ("WATTLEDGER_ESTIMATE_CPU_MAX_W_PER_VCPU", "-1", "[estimate] cpu_max_w_per_vcpu"),
]


@pytest.mark.parametrize("name,value,key", BAD_IN_ENV, ids=[f"{n}={v}" for n, v, _ in BAD_IN_ENV])
def test_a_bad_number_in_the_environment_fails_as_in_the_file(name: str, value: str, key: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.load(environ={name: value})
    msg = str(e.value)
    assert msg.startswith(f"environment {name}: {key} must be") and "\n" not in msg


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e-9, 1e12, -1.0])
def test_a_bad_interval_option_fails_as_in_the_file(value: float) -> None:
    with pytest.raises(config.ConfigError, match=r"^--interval: \[agent\] interval_s must be a number from 0.05"):
        config.load(environ={}, overrides=config.Overrides(interval_s=value))


def test_edges_and_whole_floats_are_accepted(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[agent]\ninterval_s = 0.05\n[sink]\nbatch_points = 3.0\ntimeout_s = 600\n'
                 '[carbon]\ng_per_kwh = ""\nsync_interval_s = 0\n[pue]\nvalue = 1\n')
    cfg = config.load(f, environ={"WATTLEDGER_SPOOL_MAX_ROWS": "10"})
    assert cfg.agent.interval_s == 0.05 and cfg.sink.batch_points == 3 and isinstance(cfg.sink.batch_points, int)
    assert cfg.carbon.g_per_kwh is None and cfg.carbon.sync_interval_s == 0 and cfg.spool.max_rows == 10
    assert config.load(environ={"WATTLEDGER_AGENT_INTERVAL_S": "3600"}).agent.interval_s == 3600.0


def test_estimate_max_below_idle_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[estimate]\ncpu_idle_w_per_vcpu = 5.0\ncpu_max_w_per_vcpu = 4.0\n")
    with pytest.raises(config.ConfigError, match="cpu_max_w_per_vcpu .* must be at least cpu_idle_w_per_vcpu"):
        config.load(f, environ={})


def test_validate_checks_a_config_built_in_code() -> None:
    cfg = config.Config()
    cfg.agent.interval_s = math.nan
    with pytest.raises(config.ConfigError, match=r"^\[agent\] interval_s must be"):
        config.validate(cfg)


def test_every_key_has_an_explicit_parser() -> None:
    for section in config.SECTIONS:
        for f in dataclasses.fields(getattr(config.Config(), section)):
            parser = config.parser_of(section, f.name)
            assert parser.parse(getattr(getattr(config.Config(), section), f.name)) == getattr(
                getattr(config.Config(), section), f.name), f"[{section}] {f.name}: its default must parse"


# -- enums parsed once, typed overrides, one env reader, one sink rule ----------------------------------------------


def test_choices_are_enums_after_load(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[agent]\nestimate = "always"\ngpus = "never"\n[attribution]\ngpu_static_policy = "idle"\n'
                 '[sink]\nkind = "stdout"\n')
    cfg = config.load(f, environ={})
    assert cfg.agent.estimate is config.Estimate.ALWAYS and cfg.agent.gpus is config.Gpus.NEVER
    assert cfg.attribution.gpu_static_policy is StaticPolicy.IDLE and cfg.sink.kind is config.SinkKind.STDOUT
    assert cfg.attribution.static_policy("gpu") is StaticPolicy.IDLE
    assert cfg.attribution.static_policy("dram") is StaticPolicy.CAPACITY  # the default since issue 13 (time-driven ABC)
    assert str(cfg.sink.kind) == "stdout" and f"{cfg.agent.estimate}" == "always"  # print as the admin wrote
    assert not cfg.sink.kind.remote and config.SinkKind.INFLUX_V1.remote
    with pytest.raises(config.ConfigError, match=r"\[agent\] estimate must be one of auto, always, never"):
        config.load(environ={"WATTLEDGER_AGENT_ESTIMATE": "sometimes"})


def test_overrides_win_over_file_and_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[agent]\ninterval_s = 3\nstate_dir = "/file"\n')
    env = {"WATTLEDGER_AGENT_INTERVAL_S": "7", "WATTLEDGER_AGENT_STATE_DIR": "/env"}
    cfg = config.load(f, environ=env, overrides=config.Overrides(interval_s=2.0))
    assert cfg.agent.interval_s == 2.0 and cfg.agent.state_dir == "/env"
    cfg = config.load(f, environ=env, overrides=config.Overrides(state_dir="/cli", sink_kind="stdout"))
    assert cfg.agent.interval_s == 7.0 and cfg.agent.state_dir == "/cli" and cfg.sink.kind is config.SinkKind.STDOUT


def test_env_url_with_file_database_is_v1_wherever_each_comes_from(tmp_path: Path) -> None:
    """One rule: a url and a database mean v1, whether each came from the file, the environment or an option."""
    f = tmp_path / "c.toml"
    f.write_text('[sink]\ndatabase = "wl"\n')
    url = "http://127.0.0.1:8086"
    from_env = config.load(f, environ={"WATTLEDGER_SINK_URL": url})
    from_option = config.load(f, environ={}, overrides=config.Overrides(sink_url=url))
    for cfg in (from_env, from_option):
        assert cfg.sink.url == url and config.resolve_sink_kind(cfg.sink) is config.SinkKind.INFLUX_V1
    v2 = config.load(f, environ={"WATTLEDGER_SINK_URL": url, "WATTLEDGER_SINK_TOKEN": "t"})
    assert config.resolve_sink_kind(v2.sink) is config.SinkKind.INFLUX_V2  # a token means the v2 API


def test_the_sink_rule_refuses_ambiguous_and_incomplete() -> None:
    both = config.SinkSection(url="http://x", database="d", bucket="b")
    with pytest.raises(config.ConfigError, match="not both"):
        config.resolve_sink_kind(both)
    both.kind = config.SinkKind.INFLUX_V2  # said explicitly: fine (1.8: the bucket wins, as make_sink does)
    assert config.resolve_sink_kind(both) is config.SinkKind.INFLUX_V2
    with pytest.raises(config.ConfigError, match="--influx-database"):
        config.resolve_sink_kind(config.SinkSection(url="http://x"))
    assert config.resolve_sink_kind(config.SinkSection(database="d")) is config.SinkKind.NONE  # no url, no sink


def test_configured_idle_power_device_first_then_component() -> None:
    cfg = config.Config()
    cfg.attribution.idle_power_w = {"cpu": 20.0, "gpu:GPU-1": 60.0}
    assert config.configured_idle_w(cfg, "cpu", "package-0") == 20.0
    assert config.configured_idle_w(cfg, "gpu", "GPU-1") == 60.0
    assert config.configured_idle_w(cfg, "gpu", "GPU-2") is None
