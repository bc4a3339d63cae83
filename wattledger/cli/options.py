"""Options and config loading shared by every command module (cli.py, cli_report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wattledger import config as config_mod
from wattledger.config import Config, ConfigError


def load_config(path: str | None, **overrides: Any) -> Config:
    """Config file + env, then the command line options that were given."""
    try:
        cfg = config_mod.load(Path(path) if path else None)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, value)
    try:
        config_mod.validate(cfg)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    return cfg


config_option = click.option(
    "--config", "config_path", envvar="WATTLEDGER_CONFIG", type=click.Path(dir_okay=False),
    help="TOML config file [default: /etc/wattledger/config.toml if it exists].",
)
state_dir_option = click.option(
    "--state-dir", envvar="WATTLEDGER_AGENT_STATE_DIR", type=click.Path(file_okay=False),
    help="Where the SQLite ledger and learned state live [default: /var/lib/wattledger].",
)
sysfs_option = click.option("--sysfs-root", envvar="WATTLEDGER_AGENT_SYSFS_ROOT", type=click.Path(file_okay=False),
                            help="Root of sysfs (RAPL zones) [default: /sys].")
procfs_option = click.option("--procfs-root", envvar="WATTLEDGER_AGENT_PROCFS_ROOT", type=click.Path(file_okay=False),
                             help="Root of procfs [default: /proc].")
