"""The ``report`` command and the ``carbon`` group (``carbon sync``): parsing and presenting only.

cli/main.py registers them with ``main.add_command(report)`` and
``main.add_command(carbon)``; the logic lives in ``wattledger/report/`` and
``wattledger/carbon/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wattledger.carbon.base import CarbonProviderError
from wattledger.util.timeutil import BadTime, iso, parse_when
from wattledger.cli.options import Finite, config_option, load_config, state_dir_option
from wattledger.config import Config, ConfigError, Overrides, resolve_sink_kind
from wattledger.store.errors import StorageError
from wattledger.util.energyfmt import UNIT_CHOICES

if TYPE_CHECKING:
    from wattledger.report.assemble import Options
    from wattledger.report.jobview import JobTicks
    from wattledger.report.model import PoolBaseline, Report
    from wattledger.store.runs import Runs

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
@click.option("--by", type=click.Choice(["job", "user", "project", "phase"]), default="job", show_default=True,
              help="Group by job (and user), user, project or phase (and owner: a project is its user's, or "
                   "shared by the users [jobs] shared_projects lists).")
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
@click.option("--project", help="Only this project (WATTLEDGER_PROJECT of its runs); with --lifecycle: the project "
                                "(one owner's: add --user U when several users used the name).")
@click.option("--job", "job_tag", help="Only this job tag (WATTLEDGER_JOB, slurm-<id>, ...): its summary (duration, "
              "energy by component, facility energy, CO2e, GPU-hours held, share of the host).")
@click.option("--user", help="Only this user's energy.")
@click.option("--account", help="Only Slurm jobs of this account (from the jobs' environment; ledger only).")
@click.option("--partition", help="Only Slurm jobs of this partition (from the jobs' environment; ledger only).")
@click.option("--unit", type=click.Choice(UNIT_CHOICES), help="Energy unit of the tables: J, Wh, kWh, or auto "
              "by size [default: auto for --job's summary, kWh for the table]. CSV and JSON stay in kWh.")
@click.option("--runs-file", type=click.Path(dir_okay=False),
              help="`wattledger run` records to include [default: your runs file, if you have one].")
@click.option("--no-runs", is_flag=True, help="Leave out `wattledger run` records.")
@click.option("--inferences-count", type=int, help="With --lifecycle: inferences served by the measured inference energy.")
@click.option("--expected-inferences", type=int, default=0, show_default=True,
              help="With --lifecycle: e, the inferences to project over the model's life.")
def report(config_path: str | None, state_dir: str | None, since: str | None, until: str, by: str, fmt: str,
           pue: float | None, zone: str | None, host: str | None, per_host: bool, from_influx: bool,
           influx_url: str | None,
           influx_database: str | None, plot_path: str | None, lifecycle: bool, project: str | None,
           job_tag: str | None, user: str | None, account: str | None, partition: str | None,
           unit: str | None, runs_file: str | None, no_runs: bool,
           inferences_count: int | None, expected_inferences: int) -> None:
    """Energy (IT and x PUE) and CO2e per job, user, project or phase over a time range.

    With --job TAG: that job's summary (when it ran, energy by component, facility energy, CO2e and
    where its intensity came from, GPU-hours held, share of the host). Unused capacity (_idle) and
    your `wattledger run` records (marked R) are shown. With --by job, jobs that Slurm ran show
    their Slurm id, account, partition and the first and last tick that saw them (an sacct-like view).

    \b
    Examples:
      wattledger report --since 7d --by project
      wattledger report --since 30d --job resnet50-sweep --user alice
      wattledger report --since 7d --job slurm-4242
      wattledger report --since 30d --by job --account physics --partition gpu
      wattledger report --since 2024-03-01 --until 2024-04-01 --format csv > march.csv
      wattledger report --from-influx --since 30d --job slurm-4242 --per-host
      wattledger report --lifecycle --project bert --since 90d --inferences-count 1000000 \\
                        --expected-inferences 100000000
    """
    from wattledger import report as rp
    from wattledger.report.plot import plot, require_matplotlib

    cfg = load_config(config_path, Overrides(state_dir=state_dir, sink_url=influx_url, sink_database=influx_database))
    if lifecycle:
        if not project:
            raise click.UsageError("--lifecycle needs --project P")
        since = since or "1970-01-01"  # a life cycle is all the measured history unless told otherwise
        by = "phase"
    since_ns, until_ns = _window(since or "24h", until)
    opts = rp.Options(by=by, zone=zone, pue=pue, host=host, project=project, job=job_tag, user=user,
                      account=account, partition=partition, per_host=per_host)
    runs = None if no_runs else _runs(runs_file)
    try:
        if plot_path:
            require_matplotlib()  # before anything is printed
        # the runs alone where there is no ledger: only when no ledger was asked for by name
        read = _read(cfg, opts, since_ns, until_ns, from_influx, runs,
                     runs_alone=state_dir is None or runs_file is not None, plot=bool(plot_path))
        if lifecycle:
            click.echo(rp.format_lifecycle(rp.lifecycle(read.report, project or "", inferences_count,
                                                        expected_inferences), fmt), nl=False)
        else:
            click.echo(_text(cfg, read, runs, opts, fmt, unit, from_influx), nl=False)
        if plot_path:
            plot(read.report, plot_path, measured_s=read.measured_s)
            click.echo(f"plot written to {plot_path}", err=True)
    except (rp.ReportError, StorageError) as e:
        raise click.ClickException(str(e)) from None


def _window(since: str, until: str) -> tuple[int, int]:
    """[since, until) in ns from what the user typed; since must be before until."""
    now_ns = time.time_ns()
    since_ns = _when(since, now_ns, "--since")
    until_ns = _when(until, now_ns, "--until")
    assert since_ns is not None and until_ns is not None
    if since_ns >= until_ns:
        raise click.BadParameter(f"{since!r} is not before {until!r}", param_hint="--since/--until")
    return since_ns, until_ns


def _text(cfg: Config, read: _Read, runs: Runs | None, opts: Options, fmt: str, unit: str | None,
          from_influx: bool) -> str:
    """The report as text: --job's one-job summary, else the table (CSV, JSON) with the idle baselines."""
    from wattledger.report.render import render

    job = _one_job(opts)
    if job:
        from wattledger.report.jobtext import format_jobs
        from wattledger.report.jobview import job_summaries, run_record_ticks

        ticks = read.ticks + (run_record_ticks(runs.records, job) if runs is not None else [])
        return format_jobs(read.report, job_summaries(read.report, ticks), fmt, unit or "auto")
    baselines = [] if from_influx else _idle_baselines(cfg.state_dir)
    return render(read.report, fmt, baselines, unit or "kWh")


def _one_job(opts: Options) -> str | None:
    """--job's tag when it comes with --by job: the one-job summary, the only view that needs the job's
    ticks; else None."""
    return opts.job if opts.job and opts.by == "job" else None


@dataclass
class _Read:
    report: Report
    ticks: list[JobTicks]  # what the source knows of --job's ticks (read only for the one-job summary)
    measured_s: dict[int, float]  # for a plot: the seconds of each hour that were measured


def _runs(runs_file: str | None) -> Runs | None:
    """The `wattledger run` records to include: the given file (which must exist), else the user's own (if any)."""
    from wattledger.store.runs import default_runs_path, read_runs

    path = Path(runs_file) if runs_file else default_runs_path()
    if runs_file and not path.exists():
        raise click.ClickException(f"no runs file at {path} (`wattledger run` writes one; --no-runs leaves them out)")
    try:
        runs = read_runs(path)
    except OSError as e:
        raise click.ClickException(f"cannot read the runs file {path}: {e} (--no-runs leaves them out)") from None
    if runs.unreadable_lines:
        log.warning("%s: %d lines are not run records and were skipped", path, runs.unreadable_lines)
    return runs if runs.records else None


def _read(cfg: Config, opts: Options, since_ns: int, until_ns: int, from_influx: bool,
          runs: Runs | None, runs_alone: bool, plot: bool) -> _Read:
    """The report from InfluxDB or the ledger (opened read-only), what the source knows of --job's
    ticks, and for a plot the seconds of each hour that were measured (partial hours are drawn as
    the part they are). The runs alone when there is no ledger."""
    from wattledger import report as rp
    from wattledger.report.assemble import from_runs
    from wattledger.report.ledger import job_ticks
    from wattledger.store.ledger import LEDGER_FILE

    if from_influx:
        from wattledger.report.influxql import job_ticks as influx_ticks

        client = rp.InfluxQL.from_config(cfg)
        result = rp.from_influx(client, cfg, since_ns, until_ns, opts, runs)
        return _Read(result, influx_ticks(client, since_ns, until_ns, opts) if _one_job(opts) else [],
                     rp.influx_measured_seconds(client, result, opts.host) if plot else {})
    if runs is not None and runs_alone and not (cfg.state_dir / LEDGER_FILE).exists():
        return _Read(from_runs(cfg, opts, runs, since_ns, until_ns), [], {})
    ledger = _open_ledger(cfg, write=False)
    try:
        result = rp.from_ledger(ledger, cfg, since_ns, until_ns, opts, runs, hourly=plot)
        return _Read(result, job_ticks(ledger, since_ns, until_ns, opts) if _one_job(opts) else [],
                     rp.ledger_measured_seconds(ledger, result, opts.host) if plot else {})
    finally:
        ledger.close()


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
    With nothing to fetch (the static table) it says so and touches no ledger.
    """
    from wattledger.carbon import make_provider
    from wattledger.carbon.sync import nothing_to_sync, sync

    cfg = load_config(config_path, Overrides(state_dir=state_dir))
    now_ns = time.time_ns()
    since_ns = _when(since, now_ns, "--since")
    until_ns = _when(until, now_ns, "--until")
    try:
        provider = make_provider(cfg.carbon)
        skipped = nothing_to_sync(provider)
        if skipped:
            click.echo(f"carbon sync: nothing to do for provider {provider.name}: {skipped}")
            return
        ledger = _open_ledger(cfg, write=True)
        try:
            result = sync(cfg, ledger, since_ns=since_ns, until_ns=until_ns, now_ns=now_ns, provider=provider)
        finally:
            ledger.close()
    except (CarbonProviderError, StorageError) as e:
        raise click.ClickException(str(e)) from None
    span = (f"{iso(result.first_ns)} .. {iso(result.last_ns)}" if result.first_ns is not None
            and result.last_ns is not None else "none in the window")
    click.echo(f"carbon sync: {result.written} wl_carbon points for zone {result.zone} from {result.provider} "
               f"({'/'.join(result.kinds) or 'no data'}), {span}; asked {iso(result.since_ns)} .. "
               f"{iso(result.until_ns)}")
