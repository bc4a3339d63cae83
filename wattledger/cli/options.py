"""Options and config loading shared by every command module (cli/agent.py, cli/doctor.py, cli/report.py, ...).

Options that set a config key are typed ``config.Overrides``; their
environment twins (``WATTLEDGER_<SECTION>_<KEY>``) are read by
``config.load`` alone, with the same parsers as the file, so a value means
the same wherever it is given.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import click

from wattledger import config as config_mod
from wattledger.config import Config, ConfigError, Overrides, SinkKind, resolve_sink_kind


def load_config(path: str | None, overrides: Overrides | None = None) -> Config:
    """Defaults, the config file, the environment, then the options that were given; a bad value is a usage error."""
    try:
        return config_mod.load(Path(path) if path else None, overrides=overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def config_file(path: str | None) -> Path | None:
    """The config file in use that a user can edit (None: defaults and environment only), for fixes' wording."""
    return config_mod.editable_file(Path(path) if path else None)


class Finite(click.ParamType):
    """A finite number in [lo, hi] (``float`` alone lets nan, inf and 1e12 through)."""

    name = "number"
    what = "a number"

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not (math.isfinite(number) and self.lo <= number <= self.hi):
            self.fail(f"must be {self.what} from {self.lo:g} to {self.hi:g}, got {value!r}", param, ctx)
        return number


class Seconds(Finite):
    name = "seconds"
    what = "a number of seconds"


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


def influx_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--influx-url", help="InfluxDB base URL, e.g. http://localhost:8086 [default: [sink] url]."),
        click.option("--influx-database", help="v1 API: database name [default: [sink] database]."),
        click.option("--influx-bucket", help="v2 API: bucket [default: [sink] bucket]."),
        click.option("--influx-org", help="v2 API: organisation [default: [sink] org]."),
        click.option("--influx-token", help="v2 API: token (1.8+: 'user:password'). Prefer WATTLEDGER_SINK_TOKEN: "
                                            "argv is visible to all users."),
    ]):
        f = opt(f)
    return f


def with_influx(overrides: Overrides, influx_url: str | None, database: str | None, bucket: str | None,
                org: str | None, token: str | None) -> Overrides:
    """The --influx-* options added to the overrides. The sink kind follows from the whole config
    (``config.resolve_sink_kind``), as it does for the file and the environment."""
    return dataclasses.replace(overrides, sink_url=influx_url, sink_database=database, sink_bucket=bucket,
                               sink_org=org, sink_token=token)


def sink_kind(cfg: Config) -> SinkKind:
    try:
        return resolve_sink_kind(cfg.sink)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def check_zone(cfg: Config) -> None:
    """``agent`` and ``doctor`` refuse an unknown [carbon] zone at once, as ``report`` would later."""
    from wattledger.carbon import check_zone as check

    try:
        check(cfg.carbon)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
