"""``wattledger agent``: the service in the foreground."""

from __future__ import annotations

import logging
import signal
import sys

import click

from wattledger.agent.delivery import Deliverer
from wattledger.agent.factory import build_agent, make_deliverer
from wattledger.cli.options import (
    check_zone, config_file, config_option, influx_options, load_config, procfs_option, sink_kind,
    state_dir_option, sysfs_option, with_influx,
)
from wattledger.config import Config, ConfigError, Overrides, SinkKind
from wattledger.store.ledger import Ledger

log = logging.getLogger("wattledger")


def _deliverer(cfg: Config, ledger: Ledger) -> Deliverer | None:
    if not cfg.sink.kind.remote:
        return None
    from wattledger.agent.sinks import make_sink

    try:
        sink = make_sink(cfg.sink)
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
    remote = cfg.sink.kind.remote
    try:
        ledger = Ledger.in_state_dir(cfg.state_dir, spool=remote, spool_max_rows=cfg.spool.max_rows)
    except OSError as e:
        raise click.ClickException(f"cannot open the ledger in {cfg.state_dir}: {e}; pass --state-dir DIR "
                                   "or create it writable for this user")
    a = build_agent(cfg, ledger, out=sys.stdout if cfg.sink.kind is SinkKind.STDOUT else None,
                    deliverer=_deliverer(cfg, ledger), config_file=config_file(config_path), exporter=True)
    if a.exporter is not None:
        from wattledger.agent.exporter import ExporterError

        try:
            a.exporter.start()
        except ExporterError as e:
            raise click.ClickException(str(e)) from None
    signal.signal(signal.SIGTERM, lambda *_: a.stop())
    signal.signal(signal.SIGINT, lambda *_: a.stop())
    log.info("agent: ledger %s, every %.3g s, sink %s", ledger.path, cfg.agent.interval_s, cfg.sink.kind)
    made = a.run(ticks=ticks)
    log.info("agent: stopped after %d ticks", made)
    ledger.close()
