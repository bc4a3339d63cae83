"""``wattledger agent``: the service in the foreground."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import click

from wattledger.cli.options import (
    check_zone, config_file, config_option, influx_options, load_config, procfs_option, sink_kind,
    state_dir_option, sysfs_option, with_influx,
)
from wattledger.config import Config, ConfigError, Overrides, SinkKind
from wattledger.store.errors import StorageError
from wattledger.store.guard import GuardedLedger
from wattledger.store.ledger import LEDGER_FILE, Ledger
from wattledger.store.lock import StateDirBusy, StateDirLock

if TYPE_CHECKING:  # the agent's modules (sinks: urllib3, influxdb-client) load only when the agent runs
    from wattledger.agent.delivery import Deliverer
    from wattledger.agent.loop import Agent

log = logging.getLogger("wattledger")


def _deliverer(cfg: Config, ledger: Ledger) -> Deliverer | None:
    if not cfg.sink.kind.remote:
        return None
    from wattledger.agent.factory import make_deliverer
    from wattledger.agent.sinks import make_sink
    from wattledger.agent.sinks.routing import routing

    try:
        sink = make_sink(cfg.sink, routing(cfg))
    except (ConfigError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    return None if sink is None else make_deliverer(cfg, ledger, sink)


@click.command()
@config_option
@click.option("--interval", "interval_s", type=float,
              help="Seconds between ticks, 0.05 to 3600 [default: [agent] interval_s, 5].")
@click.option("--ticks", type=int, default=None, help="Stop after N ticks (default: run until SIGTERM).")
@state_dir_option
@sysfs_option
@procfs_option
@click.option("--sink", type=click.Choice([k.value for k in SinkKind]),
              help="stdout: print every tick's points as line protocol (logs stay on stderr) [default: [sink] kind].")
@influx_options
def agent(config_path: str | None, interval_s: float | None, ticks: int | None, state_dir: str | None,
          sysfs_root: str | None, procfs_root: str | None, sink: str | None, influx_url: str | None,
          influx_database: str | None, influx_bucket: str | None, influx_org: str | None,
          influx_token: str | None) -> None:
    """Run the agent: measure every tick, charge jobs, keep the local ledger, deliver to the sink."""
    cfg = load_config(config_path, with_influx(
        Overrides(interval_s=interval_s, state_dir=state_dir, sysfs_root=sysfs_root, procfs_root=procfs_root,
                  sink_kind=sink),
        influx_url, influx_database, influx_bucket, influx_org, influx_token))
    cfg.sink.kind = sink_kind(cfg)  # url + database means v1, url + bucket/token v2: one rule, config.py's
    check_zone(cfg)
    from wattledger.agent.factory import build_agent

    os.umask(0o027)  # state files 0640 and directories 0750 whatever the caller's umask (as the unit's UMask)
    with _state_dir_lock(cfg) as _held:
        ledger = _open_ledger(cfg)
        a = build_agent(cfg, ledger, out=sys.stdout if cfg.sink.kind is SinkKind.STDOUT else None,
                        deliverer=_deliverer(cfg, ledger), config_file=config_file(config_path), exporter=True)
        _start_exporter(a)
        signal.signal(signal.SIGTERM, lambda *_: a.stop())
        signal.signal(signal.SIGINT, lambda *_: a.stop())
        log.info("agent: ledger %s, every %.3g s, sink %s", ledger.path, cfg.agent.interval_s, cfg.sink.kind)
        try:
            made = a.run(ticks=ticks)
        finally:
            ledger.close()
        log.info("agent: stopped after %d ticks", made)


def _start_exporter(a: Agent) -> None:
    """The Prometheus endpoint, when [prometheus] listen is set."""
    if a.exporter is None:
        return
    from wattledger.agent.exporter import ExporterError

    try:
        a.exporter.start()
    except ExporterError as e:
        raise click.ClickException(str(e)) from None


def _state_dir_lock(cfg: Config) -> StateDirLock:
    """This agent's hold on the state directory: a second agent there is refused, naming the first's PID."""
    lock = StateDirLock(cfg.state_dir)
    try:
        lock.acquire()
    except StateDirBusy as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot use the state directory {cfg.state_dir}: {e.strerror or e}; make it "
                                   "writable by this user (systemd: StateDirectory=) or pass --state-dir DIR") from None
    return lock


def _open_ledger(cfg: Config) -> GuardedLedger:
    try:
        return GuardedLedger(cfg.state_dir / LEDGER_FILE, spool=cfg.sink.kind.remote,
                             spool_max_rows=cfg.spool.max_rows, buffer_points=cfg.ledger.buffer_points)
    except StorageError as e:
        raise click.ClickException(str(e)) from None
