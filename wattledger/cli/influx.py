"""``wattledger influx setup``: make an InfluxDB ready for a fleet's agents (logic in agent/provision/)."""

from __future__ import annotations

import click

from wattledger.cli.options import config_option, influx_options, load_config, with_influx
from wattledger.config import ConfigError, Overrides


@click.group()
def influx() -> None:
    """The fleet's InfluxDB: its retention policies or buckets for the tiers (docs/fleet.md)."""


@influx.command("setup")
@config_option
@influx_options
@click.option("--grant-write", "write_users", multiple=True, metavar="USER",
              help="1.x: GRANT WRITE on the database to this existing user (the agents' user). Repeatable.")
@click.option("--grant-read", "read_users", multiple=True, metavar="USER",
              help="1.x: GRANT READ on the database to this existing user (Grafana's, report's). Repeatable.")
def setup(config_path: str | None, influx_url: str | None, influx_database: str | None, influx_bucket: str | None,
          influx_org: str | None, influx_token: str | None, write_users: tuple[str, ...],
          read_users: tuple[str, ...]) -> None:
    """Create what the agents' [influx] layout needs, and say what was created. Safe to run again.

    \b
    The tiered layout (the default) keeps three tiers, each with its retention ([influx]):
      raw      every tick                       raw_days      (default 2)
      minutes  the ledgers' exact minute sums   minutes_days  (default 20)
      hours    the ledgers' exact hour sums     hours_days    (default 0: forever)
    InfluxDB 1.x (--influx-database): the database and the retention policies
    raw (the default), minutes and hours. InfluxDB 2.x (--influx-bucket B
    --influx-org O --influx-token T): the buckets B_raw, B_minutes, B_hours
    and DBRP mappings B/raw (default), B/minutes, B/hours for InfluxQL. Both:
    the wl_tier rows the dashboards choose a tier from. With [influx] layout =
    "single": the database and those rows only.

    What exists is read first; only what differs is changed (a retention that
    changed in the config is altered). A second run prints "nothing to change".
    Run it with an admin's credentials: WATTLEDGER_SINK_USERNAME and
    WATTLEDGER_SINK_PASSWORD (1.x) or WATTLEDGER_SINK_TOKEN (2.x) for this one
    command, so they stay off the command line.

    \b
    Examples:
      wattledger influx setup --influx-url http://influx:8086 --influx-database wattledger \\
                              --grant-write wl_agent --grant-read grafana
      wattledger influx setup --config /etc/wattledger/config.toml
    """
    from wattledger.agent.provision import SetupError, setup as run_setup

    cfg = load_config(config_path, with_influx(Overrides(), influx_url, influx_database, influx_bucket, influx_org,
                                               influx_token))
    grants = [("WRITE", u) for u in write_users] + [("READ", u) for u in read_users]
    try:
        changes = run_setup(cfg, grants, on_change=lambda c: click.echo(f"influx setup: {c}"))
    except (SetupError, ConfigError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    where = f"{cfg.sink.url} ({cfg.influx.layout} layout)"
    if not changes:
        click.echo(f"influx setup: {where}: nothing to change, everything is in place")
        return
    click.echo(f"influx setup: {where}: {len(changes)} change(s)")
