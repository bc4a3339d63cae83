"""``wattledger top``: the newest tick of a running agent's ledger, refreshed."""

from __future__ import annotations

import time
from pathlib import Path

import click

from wattledger.cli.options import Seconds, config_option, load_config, state_dir_option
from wattledger.config import Overrides
from wattledger.model.points import WL_JOB, WL_NODE
from wattledger.model.units import NS_PER_S
from wattledger.report.top import latest_tick, render, tick_interval_s
from wattledger.store.errors import StorageError
from wattledger.store.ledger import LEDGER_FILE, Ledger


@click.command()
@config_option
@state_dir_option
@click.option("--interval", "interval_s", type=Seconds(0.05, 3600.0), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print the newest tick once and exit.")
def top(config_path: str | None, state_dir: str | None, interval_s: float, once: bool) -> None:
    """Live view: power per job in the newest tick of a running agent's ledger.

    The first line says whether that tick is live or stale (the agent stopped: how long ago
    its last tick was); _idle is the unused capacity.
    """
    cfg = load_config(config_path, Overrides(state_dir=state_dir))
    path = cfg.state_dir / LEDGER_FILE
    if not path.exists():
        raise click.ClickException(f"no ledger at {path}: start `wattledger agent` (or pass --state-dir)")
    try:
        _loop(Ledger(path, readonly=True), max(60.0, 3 * cfg.agent.interval_s), interval_s, once)
    except StorageError as e:  # a damaged or unreadable ledger: one line, no traceback
        raise click.ClickException(str(e)) from None


def _loop(ledger: Ledger, window_s: float, interval_s: float, once: bool) -> None:
    while True:
        text = _view(ledger, ledger.path, window_s)
        if once:
            click.echo(text)
            return
        click.clear()
        click.echo(time.strftime("%H:%M:%S ") + text)
        time.sleep(interval_s)


def _view(ledger: Ledger, path: Path, window_s: float) -> str:
    """The newest tick within ``window_s``, said to be live or stale; else how old the newest one is."""
    now_ns = time.time_ns()
    since = now_ns - int(window_s * NS_PER_S)
    nodes = ledger.rows(WL_NODE, since_ns=since)
    t, jobs, host_w = latest_tick(ledger.rows(WL_JOB, since_ns=since), nodes)
    if t is not None:
        comps = sorted({str(r["component"]) for r in nodes})
        return render(t, jobs, host_w, comps, now_ns, tick_interval_s(nodes, t))
    newest = ledger.latest_time(WL_NODE)
    if newest is None:
        return f"no ticks in {path} yet: start the agent (`systemctl start wattledger`, or `wattledger agent`)"
    return (f"STALE: no tick in the last {window_s:.0f} s; the newest in {path} is "
            f"{(now_ns - newest) / NS_PER_S:,.0f} s old ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(newest / 1e9))}): "
            "the agent is not running (`systemctl status wattledger`)")
