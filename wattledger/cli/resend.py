"""``wattledger resend``: send a time range of the ledger to the sink again."""

from __future__ import annotations

import time

import click

from wattledger.cli.options import config_option, influx_options, load_config, state_dir_option, with_influx
from wattledger.config import ConfigError, Layout, Overrides
from wattledger.store.errors import StorageError
from wattledger.store.ledger import LEDGER_FILE, Ledger
from wattledger.util.timeutil import BadTime, iso, parse_when


def _when(text: str, now_ns: int, name: str) -> int:
    try:
        return parse_when(text, now_ns)
    except BadTime as e:
        raise click.BadParameter(str(e), param_hint=name) from None


@click.command()
@config_option
@state_dir_option
@click.option("--since", required=True, help="Start: ISO-8601 (as the spool-overflow log line gives it) or an "
                                             "age (30m, 2h, 7d).")
@click.option("--until", default="now", show_default=True, help="End (exclusive): ISO-8601, an age, or now.")
@click.option("--dry-run", is_flag=True, help="Only count the points the range holds; send nothing.")
@influx_options
def resend(config_path: str | None, state_dir: str | None, since: str, until: str, dry_run: bool,
           influx_url: str | None, influx_database: str | None, influx_bucket: str | None, influx_org: str | None,
           influx_token: str | None) -> None:
    """Send the ledger's points of a time range to the sink ([sink] or --influx-*) again.

    For ticks the spool dropped while InfluxDB was away (the agent logs the exact
    range and this command when such an episode ends), or to refill a server.
    Points keep their timestamps, so a point the server already has is only
    overwritten with the same values: running it twice is harmless. The agent
    may keep running meanwhile. Raw ticks can be resent while the ledger keeps
    them ([ledger] raw_days); with [influx] layout = "tiered" (the default) the
    ledger's minute and hour sums that start in the range are sent too, as far
    back as it keeps them (docs/fleet.md).

    \b
    Example:
      wattledger resend --since 2024-03-05T10:00:00.000000Z --until 2024-03-05T10:42:13.000001Z
    """
    from wattledger.agent.resend import ledger_points, resend as replay, rollup_points
    from wattledger.agent.sinks import make_sink
    from wattledger.agent.sinks.routing import routing

    cfg = load_config(config_path, with_influx(Overrides(state_dir=state_dir), influx_url, influx_database,
                                               influx_bucket, influx_org, influx_token))
    now_ns = time.time_ns()
    since_ns, until_ns = _when(since, now_ns, "--since"), _when(until, now_ns, "--until")
    if since_ns >= until_ns:
        raise click.BadParameter(f"{since!r} is not before {until!r}", param_hint="--since/--until")
    path = cfg.state_dir / LEDGER_FILE
    if not path.exists():
        raise click.ClickException(f"no ledger at {path}: pass --state-dir DIR (where the agent keeps it)")
    tiers = cfg.influx.layout is Layout.TIERED
    try:
        sink = None if dry_run else make_sink(cfg.sink, routing(cfg))
    except (ConfigError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    if not dry_run and (sink is None or not sink.remote):
        raise click.UsageError("no remote sink configured: give --influx-url with --influx-database (1.x) or "
                               "--influx-bucket/--influx-org/--influx-token (2.x/3.x), or set [sink]")
    try:
        ledger = Ledger(path, readonly=True)
        try:
            kept = ledger.raw_kept_ns()
            if dry_run:
                start = max(since_ns, kept)
                n = sum(len(p) for p in ledger_points(ledger, start, until_ns))
                sums = sum(len(p) for p in rollup_points(ledger, since_ns, until_ns)) if tiers else 0
                click.echo(f"resend: {n} point(s) in the ledger from {iso(start)} to {iso(until_ns)}"
                           + (f", and {sums} minute and hour sum(s) from {iso(since_ns)}" if tiers else ""))
                return
            assert sink is not None
            out = replay(ledger, sink, since_ns, until_ns, batch_points=cfg.sink.batch_points, raw_kept_ns=kept,
                         tiers=tiers)
        finally:
            ledger.close()
    except StorageError as e:
        raise click.ClickException(str(e)) from None
    _report(out, since_ns, sink, tiers)


def _report(out: object, since_ns: int, sink: object, tiers: bool) -> None:
    from wattledger.agent.resend import Resent

    assert isinstance(out, Resent)
    sink_name = str(getattr(sink, "name", "the sink"))
    expired = getattr(getattr(sink, "expired", None), "points", 0)
    if expired:
        click.echo(f"resend: {expired} point(s) older than their tier's retention in InfluxDB ([influx]) were not "
                   "sent: InfluxDB would refuse them", err=True)
    if out.since_ns > since_ns:
        click.echo(f"resend: raw ticks before {iso(out.since_ns)} were compacted into rollups ([ledger] "
                   "raw_days) and cannot be resent point by point; sent from there"
                   + (" (the minute and hour sums before were sent)" if tiers else ""), err=True)
    if out.refused:
        click.echo(f"resend: {out.refused} point(s) refused by {sink_name} as bad data ({out.refused_reason}); "
                   "skipped", err=True)
    if out.stopped is not None:
        assert out.resume_ns is not None
        raise click.ClickException(
            f"{sink_name} stopped the resend ({out.stopped.outcome.value}: {out.stopped.detail}) after {out.sent} "
            f"point(s); fix it (`wattledger doctor` checks the sink), then resume with --since "
            f"{iso(out.resume_ns)}")
    click.echo(f"resend: {out.sent} of {out.points} point(s) sent to {sink_name}, {iso(out.since_ns)} .. "
               f"{iso(out.until_ns)}")
