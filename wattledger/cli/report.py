"""The ``report`` command and the ``carbon`` group (``carbon sync``): parsing and presenting only.

cli/main.py registers them with ``main.add_command(report)`` and
``main.add_command(carbon)``; the logic lives in ``wattledger/report/`` and
``wattledger/carbon/``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wattledger.carbon.base import CarbonProviderError
from wattledger.util.timeutil import BadTime, iso, parse_when
from wattledger.cli.options import Finite, config_option, load_config, state_dir_option
from wattledger.config import Config, ConfigError, Overrides, resolve_sink_kind
from wattledger.store.errors import StorageError

if TYPE_CHECKING:
    from wattledger.report.model import PoolBaseline

log = logging.getLogger("wattledger")


def _remote(cfg: Config) -> bool:
    """Points made here (carbon sync) are spooled when the config names a remote sink."""
    try:
        return resolve_sink_kind(cfg.sink).remote
    except ConfigError:
        return False


def _when(text: str | None, now_ns: int, name: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_when(text, now_ns)
    except BadTime as e:
        raise click.BadParameter(str(e), param_hint=name) from None


def _open_ledger(cfg: Config, *, write: bool) -> Any:
    import sqlite3

    from wattledger.store.ledger import LEDGER_FILE, Ledger

    path = cfg.state_dir / LEDGER_FILE
    if not write and not path.exists():
        raise click.ClickException(f"no ledger at {path}: pass --state-dir DIR (where the agent keeps it), "
                                   "or --from-influx")
    try:
        return Ledger(path, spool=_remote(cfg) and write, spool_max_rows=cfg.spool.max_rows, readonly=not write)
    except StorageError as e:
        raise click.ClickException(str(e)) from None
    except (OSError, sqlite3.Error) as e:
        raise click.ClickException(f"cannot open the ledger {path}: {e}") from None


@click.command()
@config_option
@state_dir_option
@click.option("--since", help="Start: ISO-8601 or an age (30m, 2h, 7d) [default: 24h; with --lifecycle: all].")
@click.option("--until", default="now", show_default=True, help="End (exclusive): ISO-8601, an age, or now.")
@click.option("--by", type=click.Choice(["job", "user", "project", "phase"]), default="job", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--pue", type=Finite(1.0, 5.0), help="Use this constant PUE, 1 to 5 [default: wl_pue series, else [pue] value].")
@click.option("--zone", help="Carbon zone [default: [carbon] zone].")
@click.option("--host", help="Only this host's energy (InfluxDB holds a fleet's hosts) [default: all hosts].")
@click.option("--per-host", is_flag=True, help="Under each row, its energy per host (a job that ran on several "
                                               "hosts is one row, summed over them).")
@click.option("--from-influx", is_flag=True, help="Read InfluxDB ([sink] url/database, InfluxQL) instead of the ledger.")
@click.option("--influx-url", help="InfluxDB URL [default: [sink] url].")
@click.option("--influx-database", help="Database [default: [sink] database].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also draw the top rows over time to a PNG.")
@click.option("--lifecycle", is_flag=True, help="Life-cycle model CT + T + e*I of one --project.")
@click.option("--project", help="Only this project (WATTLEDGER_PROJECT of its runs); with --lifecycle: the project.")
@click.option("--job", "job_tag", help="Only this job tag (WATTLEDGER_JOB, slurm-<id>, ...).")
@click.option("--user", help="Only this user's energy.")
@click.option("--inferences-count", type=int, help="With --lifecycle: inferences served by the measured inference energy.")
@click.option("--expected-inferences", type=int, default=0, show_default=True,
              help="With --lifecycle: e, the inferences to project over the model's life.")
def report(config_path: str | None, state_dir: str | None, since: str | None, until: str, by: str, fmt: str,
           pue: float | None, zone: str | None, host: str | None, per_host: bool, from_influx: bool,
           influx_url: str | None,
           influx_database: str | None, plot_path: str | None, lifecycle: bool, project: str | None,
           job_tag: str | None, user: str | None, inferences_count: int | None, expected_inferences: int) -> None:
    """Energy (IT and x PUE) and CO2e per job, user, project or phase over a time range.

    \b
    Examples:
      wattledger report --since 7d --by project
      wattledger report --since 30d --job resnet50-sweep --user alice
      wattledger report --since 2024-03-01 --until 2024-04-01 --format csv > march.csv
      wattledger report --from-influx --since 30d --job slurm-4242 --per-host
      wattledger report --lifecycle --project bert --since 90d --inferences-count 1000000 \\
                        --expected-inferences 100000000
    """
    from wattledger import report as rp
    from wattledger.report.plot import plot
    from wattledger.report.render import render

    cfg = load_config(config_path, Overrides(state_dir=state_dir, sink_url=influx_url, sink_database=influx_database))
    now_ns = time.time_ns()
    if lifecycle:
        if not project:
            raise click.UsageError("--lifecycle needs --project P")
        since = since or "1970-01-01"  # a life cycle is all the measured history unless told otherwise
        by = "phase"
    since = since or "24h"
    since_ns = _when(since, now_ns, "--since")
    until_ns = _when(until, now_ns, "--until")
    assert since_ns is not None and until_ns is not None
    if since_ns >= until_ns:
        raise click.BadParameter(f"{since!r} is not before {until!r}", param_hint="--since/--until")
    opts = rp.Options(by=by, zone=zone, pue=pue, host=host, project=project, job=job_tag, user=user)
    try:
        if from_influx:
            result = rp.from_influx(rp.InfluxQL.from_config(cfg), cfg, since_ns, until_ns, opts)
        else:
            ledger = _open_ledger(cfg, write=False)
            try:
                result = rp.from_ledger(ledger, cfg, since_ns, until_ns, opts, hourly=plot_path is not None)
            finally:
                ledger.close()
        result.per_host = per_host
        if lifecycle:
            click.echo(rp.format_lifecycle(rp.lifecycle(result, project or "", inferences_count,
                                                        expected_inferences), fmt), nl=False)
        else:
            baselines = [] if from_influx else _idle_baselines(cfg.state_dir)
            click.echo(render(result, fmt, baselines), nl=False)
        if plot_path:
            plot(result, plot_path)
            click.echo(f"plot written to {plot_path}", err=True)
    except (rp.ReportError, StorageError) as e:
        raise click.ClickException(str(e)) from None


def _idle_baselines(state_dir: Path) -> list[PoolBaseline]:
    """Each pool's idle baseline, and where it came from, as the agent last saved them (none: [])."""
    from wattledger.accounting.idle import idle_baselines
    from wattledger.report.model import PoolBaseline

    return [PoolBaseline(b.component, b.device, b.power_w, b.source.value, b.learn_ticks, b.describe())
            for b in idle_baselines(state_dir)]


@click.group()
def carbon() -> None:
    """Grid carbon intensity: fetch it from the configured provider into the ledger."""


@carbon.command("sync")
@config_option
@state_dir_option
@click.option("--since", help="Start: ISO-8601 or an age (7d) [default: 24 h before the last sync, or 24h].")
@click.option("--until", default="now", show_default=True, help="End (exclusive).")
def carbon_sync(config_path: str | None, state_dir: str | None, since: str | None, until: str) -> None:
    """Fetch intensities ([carbon] provider, zone) and store them as wl_carbon points.

    Points carry the intensity's own time; a later sync replaces forecasts by actuals.
    With a remote sink configured the points are spooled to it like all others.
    """
    from wattledger.carbon.sync import sync

    cfg = load_config(config_path, Overrides(state_dir=state_dir))
    now_ns = time.time_ns()
    since_ns = _when(since, now_ns, "--since")
    until_ns = _when(until, now_ns, "--until")
    ledger = _open_ledger(cfg, write=True)
    try:
        result = sync(cfg, ledger, since_ns=since_ns, until_ns=until_ns, now_ns=now_ns)
    except (CarbonProviderError, StorageError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()
    if result.skipped:
        click.echo(f"carbon sync: nothing to do for provider {result.provider}: {result.skipped}")
        return
    span = (f"{iso(result.first_ns)} .. {iso(result.last_ns)}" if result.first_ns is not None
            and result.last_ns is not None else "none in the window")
    click.echo(f"carbon sync: {result.written} wl_carbon points for zone {result.zone} from {result.provider} "
               f"({'/'.join(result.kinds) or 'no data'}), {span}; asked {iso(result.since_ns)} .. "
               f"{iso(result.until_ns)}")
