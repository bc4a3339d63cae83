"""``wattledger run``: run one command tagged, print its energy and CO2e (no daemon needed)."""

from __future__ import annotations

import json
import logging
import os
import pwd
import sys
import tempfile
import time
from pathlib import Path

import click

from wattledger.agent.factory import build_agent
from wattledger.agent.runner import measure, summary, summary_text
from wattledger.cli.options import Seconds, config_file, config_option, load_config, procfs_option, sysfs_option
from wattledger.config import Config, Overrides
from wattledger.model.jobs import ALLOWED_TAG_CHARS, sanitise_tag
from wattledger.store.ledger import Ledger


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


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@config_option
@click.option("-t", "--tag", help="Job tag [default: $WATTLEDGER_JOB, else run-<command>-<time>].")
@click.option("--interval", "interval_s", type=Seconds(0.05, 3600.0), default=0.5, show_default=True,
              help="Seconds between measurements while the command runs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@sysfs_option
@procfs_option
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run(config_path: str | None, tag: str | None, interval_s: float, as_json: bool, sysfs_root: str | None,
        procfs_root: str | None, cmd: tuple[str, ...]) -> None:
    """Run CMD tagged, measure it while it runs (no daemon needed), print its energy and CO2e.

    Exits with CMD's exit code. Example: wattledger run -t demo -- python3 train.py
    """
    cfg = load_config(config_path, Overrides(sysfs_root=sysfs_root, procfs_root=procfs_root))
    job = _tag(cfg, tag, cmd)
    g_per_kwh, intensity_src = _intensity(cfg)
    with tempfile.TemporaryDirectory(prefix="wattledger-run-") as tmp:
        ledger = Ledger.in_state_dir(Path(tmp))
        try:
            # A source this machine lacks is not news: the figures say ESTIMATE (absent_level DEBUG).
            # A temporary ledger: nothing to bridge after a restart (bridge=False).
            agent = build_agent(cfg, ledger, carbon_sync=False, config_file=config_file(config_path),
                                absent_level=logging.DEBUG, bridge=False)
            measured = measure(agent, cmd, dict(os.environ, WATTLEDGER_JOB=job), interval_s)
        except OSError as e:
            raise click.ClickException(f"cannot start {cmd[0]!r}: {e}") from None
        finally:
            ledger.close()
    result = summary(measured, job=job, user=_current_user(), cmd=cmd, pue=cfg.pue.value, g_per_kwh=g_per_kwh,
                     intensity_source=intensity_src)
    if result["energy_j"] is None:
        click.echo(f"wattledger: job {job}: nothing was measured: no energy source on this host "
                   "(RAPL unreadable and the model estimate off); see `wattledger doctor`", err=True)
    if as_json:
        click.echo(json.dumps(result))
    elif result["energy_j"] is not None:
        click.echo(summary_text(result))
    rc = measured.exit_code
    sys.exit(rc if rc >= 0 else 128 - rc)
