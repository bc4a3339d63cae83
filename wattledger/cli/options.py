"""Options and config loading shared by every command module (cli/main.py, cli/report.py).

Options that set a config key are typed ``config.Overrides``; their
environment twins (``WATTLEDGER_<SECTION>_<KEY>``) are read by
``config.load`` alone, with the same parsers as the file, so a value means
the same wherever it is given.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from wattledger import config as config_mod
from wattledger.config import Config, ConfigError, Overrides


def load_config(path: str | None, overrides: Overrides | None = None) -> Config:
    """Defaults, the config file, the environment, then the options that were given; a bad value is a usage error."""
    try:
        return config_mod.load(Path(path) if path else None, overrides=overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


class Seconds(click.ParamType):
    """A finite number of seconds in [lo, hi] (``float`` alone lets nan, inf and 1e12 through)."""

    name = "seconds"

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if isinstance(value, bool) or not (math.isfinite(seconds) and self.lo <= seconds <= self.hi):
            self.fail(f"must be a number of seconds from {self.lo:g} to {self.hi:g}, got {value!r}", param, ctx)
        return seconds


config_option = click.option(
    "--config", "config_path", envvar="WATTLEDGER_CONFIG", type=click.Path(dir_okay=False),
    help="TOML config file [default: /etc/wattledger/config.toml if it exists].",
)
state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False),
    help="Where the SQLite ledger and learned state live [default: [agent] state_dir, /var/lib/wattledger].",
)
sysfs_option = click.option("--sysfs-root", type=click.Path(file_okay=False),
                            help="Root of sysfs (RAPL zones) [default: [agent] sysfs_root, /sys].")
procfs_option = click.option("--procfs-root", type=click.Path(file_okay=False),
                             help="Root of procfs [default: [agent] procfs_root, /proc].")
