"""``wattledger top``: the newest tick of a running agent's ledger, refreshed."""

from __future__ import annotations

import time

import click

from wattledger.cli.options import Seconds, config_option, load_config, state_dir_option
from wattledger.config import Overrides
from wattledger.model.points import WL_JOB, WL_NODE
from wattledger.model.units import NS_PER_S
from wattledger.report.top import latest_tick, render
from wattledger.store.errors import StorageError
from wattledger.store.ledger import LEDGER_FILE, Ledger


@click.command()
@config_option
@state_dir_option
@click.option("--interval", "interval_s", type=Seconds(0.05, 3600.0), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print the newest tick once and exit.")
def top(config_path: str | None, state_dir: str | None, interval_s: float, once: bool) -> None:
    """Live view: power per job in the newest tick of a running agent's ledger."""
    cfg = load_config(config_path, Overrides(state_dir=state_dir))
    path = cfg.state_dir / LEDGER_FILE
    if not path.exists():
        raise click.ClickException(f"no ledger at {path}: start `wattledger agent` (or pass --state-dir)")
    try:
        _loop(Ledger(path, readonly=True), cfg.agent.interval_s, interval_s, once)
    except StorageError as e:  # a damaged or unreadable ledger: one line, no traceback
        raise click.ClickException(str(e)) from None


def _loop(ledger: Ledger, agent_interval_s: float, interval_s: float, once: bool) -> None:
    path = ledger.path
    while True:
        since = time.time_ns() - int(max(60.0, 3 * agent_interval_s) * NS_PER_S)
        nodes = ledger.rows(WL_NODE, since_ns=since)
        t, jobs, host_w = latest_tick(ledger.rows(WL_JOB, since_ns=since), nodes)
        comps = sorted({str(r["component"]) for r in nodes})
        text = render(t, jobs, host_w, comps) if t else (
            f"no tick in the last minute in {path}: is `wattledger agent` running?")
        if once:
            click.echo(text)
            return
        click.clear()
        click.echo(time.strftime("%H:%M:%S ") + text)
        time.sleep(interval_s)
