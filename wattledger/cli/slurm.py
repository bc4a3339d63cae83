"""``wattledger slurm``: the Slurm Epilog (a job's energy and CO2e at job end) and one job's summary."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from wattledger.cli.options import config_option, state_dir_option
from wattledger.config import Config, ConfigError, Overrides, load


@click.group()
def slurm() -> None:
    """Slurm jobs: the summary each job gets at its end, and the same on demand.

    \b
    slurm.conf (on every compute node; docs/slurm.md has the details):
      Epilog=/etc/wattledger/slurm-epilog.sh     (deploy/slurm/epilog.sh)
    """


def _ledger(cfg: Config) -> Any:
    from wattledger.store.errors import StorageError
    from wattledger.store.ledger import LEDGER_FILE, Ledger

    path = cfg.state_dir / LEDGER_FILE
    if not path.exists():
        raise click.ClickException(f"no ledger at {path}: is the agent running here? (--state-dir DIR)")
    try:
        return Ledger(path, readonly=True)
    except StorageError as e:
        raise click.ClickException(str(e)) from None


@slurm.command("epilog")
@config_option
@state_dir_option
def epilog(config_path: str | None, state_dir: str | None) -> None:
    """Run as Slurm's Epilog: sum the job that ended and append it to the job's output file.

    Reads SLURM_JOB_ID, SLURM_JOB_UID/GID, SLURM_JOB_WORK_DIR and
    SLURM_JOB_STDOUT from the Epilog's environment; waits for the agent's
    next ticks ([slurm] epilog_ticks, at most epilog_timeout_s); writes as
    the job's user. Always exits 0 (Slurm drains a node whose Epilog fails);
    what went wrong is one line on stderr, which slurmd logs.
    """
    started_ns = time.time_ns()
    try:
        _epilog(config_path, state_dir, started_ns)
    except Exception as e:  # noqa: BLE001 - an Epilog must never fail the node; the reason goes to slurmd's log
        job = os.environ.get("SLURM_JOB_ID", "?")
        click.echo(f"wattledger slurm epilog: job {job}: {getattr(e, 'message', None) or e}", err=True)


def _epilog(config_path: str | None, state_dir: str | None, started_ns: int) -> None:
    from wattledger.report.epilog import epilog as run_epilog

    try:
        cfg = load(Path(config_path) if config_path else None, overrides=Overrides(state_dir=state_dir))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    ledger = _ledger(cfg)
    try:
        path, summary = run_epilog(cfg, ledger, os.environ, started_ns=started_ns)
    finally:
        ledger.close()
    click.echo(f"wattledger slurm epilog: job {summary.job_id}: {summary.energy_j:.1f} J, "
               f"{summary.g_co2e:.3g} gCO2e; summary appended to {path}", err=True)


@slurm.command("summary")
@click.argument("job_id")
@config_option
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the text.")
def summary(job_id: str, config_path: str | None, state_dir: str | None, as_json: bool) -> None:
    """Print the energy and CO2e of Slurm job JOB_ID on this node, as its Epilog writes it."""
    from wattledger.cli.options import load_config
    from wattledger.report.epilog import summarise, summary_text
    from wattledger.report.model import ReportError

    if not job_id.isdigit():
        raise click.BadParameter(f"a Slurm job id is a number (42, not slurm-42), got {job_id!r}",
                                 param_hint="JOB_ID")
    cfg = load_config(config_path, Overrides(state_dir=state_dir))
    ledger = _ledger(cfg)
    from wattledger.store.errors import StorageError

    try:
        found = summarise(ledger, cfg, job_id, time.time_ns())
    except (ReportError, StorageError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        ledger.close()
    click.echo(json.dumps(found.to_dict(), indent=2) if as_json else summary_text(found).rstrip("\n"))
