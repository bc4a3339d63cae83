"""``wattledger doctor``: what can be measured here, and what to do about what cannot."""

from __future__ import annotations

import json
import sys

import click

from wattledger.cli.options import (
    check_zone, config_file, config_option, influx_options, load_config, procfs_option, state_dir_option,
    sysfs_option, with_influx,
)
from wattledger.config import Overrides
from wattledger.model.readings import ProbeResult
from wattledger.util.redact import redact_text


@click.command()
@config_option
@state_dir_option
@sysfs_option
@procfs_option
@influx_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source.")
def doctor(config_path: str | None, state_dir: str | None, sysfs_root: str | None, procfs_root: str | None,
           influx_url: str | None, influx_database: str | None, influx_bucket: str | None, influx_org: str | None,
           influx_token: str | None, as_json: bool) -> None:
    """Say what can be measured here, what cannot, and what to do about it; and how the local ledger is
    (size, retention, how far back it goes, its expected size, losses, damaged files moved aside)."""
    cfg = load_config(config_path, with_influx(Overrides(state_dir=state_dir, sysfs_root=sysfs_root,
                                                         procfs_root=procfs_root),
                                               influx_url, influx_database, influx_bucket, influx_org,
                                               influx_token))
    check_zone(cfg)
    from wattledger.agent.doctor import doctor_rows, measuring  # the agent's modules: only when doctor runs

    rows = doctor_rows(cfg, config_file(config_path))
    for r in rows:
        click.echo(redact_text(_json(r) if as_json else _text(r)))  # belt and braces: rows redact their URLs
    sys.exit(0 if measuring(rows) else 1)


def _json(r: ProbeResult) -> str:
    return json.dumps({"source": r.source, "state": r.state.value, "detail": r.detail, "fix": r.fix,
                       "devices": list(r.devices)})


def _text(r: ProbeResult) -> str:
    mark = "ok " if r.ok else "!! "
    detail = r.detail.replace("\n", "\n" + " " * 33)  # a row of several lines (embodied: one per device)
    line = f"{mark}{r.source:<10} {r.state.value:<18} {detail}"
    if r.fix and not r.ok:
        line += f"\n   {'':<10} {'':<18} fix: {r.fix}"
    return line
