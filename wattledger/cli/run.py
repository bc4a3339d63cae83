"""``wattledger run``: run one command tagged, print its energy and CO2e, and keep a record of it."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wattledger.cli.options import (
    Seconds,
    config_file,
    config_option,
    load_config,
    procfs_option,
    state_dir_option,
    sysfs_option,
)
from wattledger.config import Config, Overrides
from wattledger.model.jobs import ALLOWED_TAG_CHARS, PHASE_VAR, PROJECT_VAR, JobKey, sanitise_tag
from wattledger.model.points import WL_NODE, Point
from wattledger.store.ledger import Ledger
from wattledger.util.energyfmt import UNIT_CHOICES

if TYPE_CHECKING:  # the agent's modules load when a command runs, not when any wattledger command starts
    from wattledger.agent.runner import Measured
    from wattledger.agent.service import Service


def _intensity(cfg: Config) -> tuple[float, str]:
    from wattledger.carbon import intensity_now
    from wattledger.carbon.static import UnknownZone

    try:
        return intensity_now(cfg.carbon)
    except UnknownZone as e:
        raise click.UsageError(str(e.args[0])) from None


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _tag(cfg: Config, tag: str | None, cmd: tuple[str, ...]) -> str:
    raw_tag = tag or os.environ.get("WATTLEDGER_JOB") or f"run-{Path(cmd[0]).name}-{int(time.time())}"
    clean = sanitise_tag(raw_tag, cfg.jobs.max_tag_chars)
    if not clean:
        raise click.UsageError(f"tag {raw_tag!r} has no usable characters (allowed: {ALLOWED_TAG_CHARS})")
    return clean


def _say(text: str) -> None:
    click.echo(f"wattledger: {text}", err=True)


def _service(cfg: Config, no_service: bool) -> Service | None:
    from wattledger.agent.service import find_service

    if no_service:
        return None
    service, why = find_service(cfg.state_dir, time.time_ns())
    if why:
        _say(why)
    if service is not None:
        _say(f"the service agent is running (ledger {service.path}, {service.interval_s:.3g} s ticks): the figures "
             "will be the rows it writes for this run's tag (--no-service measures here instead)")
    return service


def _measure(cfg: Config, cmd: tuple[str, ...], env: dict[str, str], interval_s: float, job: JobKey,
             service: Service | None, config_in_use: Path | None) -> Measured:
    """The command measured by an agent on a temporary ledger (with the service's idle baselines, if readable)."""
    from wattledger.agent.factory import build_agent
    from wattledger.agent.runner import measure

    with tempfile.TemporaryDirectory(prefix="wattledger-run-") as tmp:
        try:
            shutil.copy(cfg.state_dir / "idle-baselines.json", Path(tmp) / "idle-baselines.json")
        except OSError:
            pass  # no service state here: configured, model or no idle power
        ledger = Ledger.in_state_dir(Path(tmp))
        try:
            # A source this machine lacks is not news: the figures say ESTIMATE (absent_level DEBUG).
            # A temporary ledger: nothing to bridge after a restart (bridge=False).
            agent = build_agent(cfg, ledger, carbon_sync=False, config_file=config_in_use, absent_level=logging.DEBUG,
                                bridge=False)
            return measure(agent, cmd, env, interval_s, job, service)
        except OSError as e:
            raise click.ClickException(f"cannot start {cmd[0]!r}: {e}") from None
        finally:
            ledger.close()


def _figures_from(measured: Measured, service: Service | None, job: JobKey) -> str:
    """Swap in the service's own rows when it wrote the tick after the exit; say where the figures come from."""
    from wattledger.agent.service import service_points

    if service is None:
        return "run"
    if measured.service_tick_ns is None:
        _say(f"the service wrote no tick within {2 * service.interval_s + 5:.3g} s of the exit: "
             "the figures were measured here")
        return "run"
    points = service_points(service, job.tag, job.user, measured.start_ns, measured.service_tick_ns)
    if points is None:
        _say(f"the service's ledger {service.path} no longer keeps every tick since the command started "
             "([ledger] raw_days): the figures were measured here")
        return "run"
    measured.points = points
    return f"service ledger {service.path}"


def _record(result: dict[str, Any], points: list[Point], cfg: Config, job: JobKey,
            runs_file: str | None) -> Path | None:
    """Append the run to the runs file; its path (None, said, when it cannot be written)."""
    from wattledger.agent.runrecord import run_record
    from wattledger.store.runs import append_run, default_runs_path

    path = Path(runs_file) if runs_file else default_runs_path()
    gpus = sorted({p.tags["device"] for p in points if p.measurement == WL_NODE and p.tags.get("component") == "gpu"})
    try:
        append_run(path, run_record(result, cfg, project=job.project, phase=job.phase, gpus=gpus,
                                    figures_from=result["figures_from"]))
    except OSError as e:
        _say(f"cannot keep the record in {path}: {e} (pass --runs-file PATH, or --no-record)")
        return None
    return path


@click.command(context_settings={"allow_interspersed_args": False})
@config_option
@state_dir_option
@click.option("-t", "--tag", help="Job tag [default: $WATTLEDGER_JOB, else run-<command>-<time>].")
@click.option("--interval", "interval_s", type=Seconds(0.05, 3600.0), default=0.5, show_default=True,
              help="Seconds between readings while the command runs (counters are also read at its start "
                   "and exit, so any length is measured).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--unit", type=click.Choice(UNIT_CHOICES), default="auto", show_default=True,
              help="Energy unit of the text output (auto: J, Wh or kWh by size).")
@click.option("--no-record", is_flag=True, help="Do not append this run to the runs file.")
@click.option("--runs-file", type=click.Path(dir_okay=False),
              help="The runs file [default: runs.jsonl in your data dir, ~/.local/share/wattledger].")
@click.option("--no-service", is_flag=True,
              help="Measure here even when the service agent runs (its ledger is then not used).")
@sysfs_option
@procfs_option
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(config_path: str | None, state_dir: str | None, tag: str | None, interval_s: float, as_json: bool,
        unit: str, no_record: bool, runs_file: str | None, no_service: bool, sysfs_root: str | None,
        procfs_root: str | None, cmd: tuple[str, ...]) -> None:
    """Run CMD tagged, measure its energy while it runs, print it with its CO2e, and record it.

    \b
    The counters are read when CMD starts and when it exits (and every
    --interval between), so a 0.1 s command is measured as well as a day's.
    When the service agent runs here and its ledger is readable, the figures
    are the rows the service wrote for this run's tag. Each run is appended to
    your runs file (path printed; `wattledger report` shows them). Options go
    before CMD; `--` ends them. Exits with CMD's exit code; 127 when CMD is not
    found, 126 when it cannot be executed.

    \b
    Examples:
      wattledger run -t resnet-probe -- python3 train.py --epochs 1
      wattledger run --json -- ./bench.sh > run.json
    """
    from wattledger.agent.runner import CannotStart, resolve, summary

    cfg = load_config(config_path, Overrides(state_dir=state_dir, sysfs_root=sysfs_root, procfs_root=procfs_root))
    user = _current_user()
    job = JobKey(_tag(cfg, tag, cmd), user, sanitise_tag(os.environ.get(PROJECT_VAR)) or "",
                 sanitise_tag(os.environ.get(PHASE_VAR)) or "")
    env = dict(os.environ, WATTLEDGER_JOB=job.tag)
    try:
        resolve(cmd, env)
    except CannotStart as e:
        _say(f"cannot start {e} (exit {e.exit_code})")
        sys.exit(e.exit_code)
    g_per_kwh, intensity_src = _intensity(cfg)
    service = _service(cfg, no_service)
    measured = _measure(cfg, cmd, env, interval_s, job, service, config_file(config_path))
    figures_from = _figures_from(measured, service, job)
    result = summary(measured, job=job.tag, user=user, cmd=cmd, pue=cfg.pue.value, g_per_kwh=g_per_kwh,
                     intensity_source=intensity_src, cpu_tick_s=1.0 / os.sysconf("SC_CLK_TCK"))
    result["figures_from"] = figures_from
    _present(result, measured, cfg, job, as_json=as_json, unit=unit, runs_file=None if no_record else
             (runs_file or ""))
    rc = measured.exit_code
    sys.exit(rc if rc >= 0 else 128 - rc)


def _present(result: dict[str, Any], measured: Measured, cfg: Config, job: JobKey, *, as_json: bool, unit: str,
             runs_file: str | None) -> None:
    """Print the figures and keep the record (``runs_file``: None for none, "" for the default file)."""
    from wattledger.agent.runner import node_sources, summary_text

    if result["energy_j"] is None:
        _say(f"job {job.tag}: nothing was measured: no energy source on this host "
             "(RAPL unreadable and the model estimate off); see `wattledger doctor`")
    path = None
    if runs_file is not None and node_sources(measured.points):
        path = _record(result, measured.points, cfg, job, runs_file or None)
    if as_json:
        click.echo(json.dumps({**result, "record": str(path) if path else None}))
        return
    if result["energy_j"] is not None:
        click.echo(summary_text(result, unit))
        if result["figures_from"] != "run":
            click.echo(f"  figures       from the {result['figures_from']}")
        if path is not None:
            click.echo(f"  record        {path} (`wattledger report` shows it; --no-record skips it)")
