"""The command line: parses options, calls into the agent, presents results.

Every option that sets a config key has a WATTLEDGER_<SECTION>_<KEY>
environment twin, read by ``config.load`` (the one reader, one set of rules);
the options themselves are typed ``config.Overrides``. Logs go to stderr;
data (line protocol, reports, JSON) to stdout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from wattledger import __version__
from wattledger.cli.options import (
    Seconds, config_option, load_config, procfs_option, state_dir_option, sysfs_option,
)
from wattledger.config import Config, ConfigError, Overrides, SinkKind, resolve_sink_kind
from wattledger.model.jobs import sanitise_tag
from wattledger.store.ledger import Ledger
from wattledger.agent.doctor import doctor_rows, measuring
from wattledger.agent.factory import build_agent, make_deliverer
from wattledger.agent.loop import sum_job_energy

log = logging.getLogger("wattledger")

J_PER_KWH = 3.6e6


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wattledger")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def main(verbose: bool) -> None:
    """wattledger: measure the energy of a shared server and charge it to tagged jobs.

    \b
    Tag a job:      WATTLEDGER_JOB=my-experiment python train.py
    Measure one:    wattledger run -t my-experiment -- python train.py
    The service:    wattledger agent   (see `wattledger doctor` first)
    Read costs:     wattledger report --by job
    """
    _setup_logging(verbose)


def _with_influx(overrides: Overrides, influx_url: str | None, database: str | None, bucket: str | None,
                 org: str | None, token: str | None) -> Overrides:
    """The --influx-* options added to the overrides. The sink kind follows from the whole config
    (``config.resolve_sink_kind``), as it does for the file and the environment."""
    return dataclasses.replace(overrides, sink_url=influx_url, sink_database=database, sink_bucket=bucket,
                               sink_org=org, sink_token=token)


def _sink_kind(cfg: Config) -> SinkKind:
    try:
        return resolve_sink_kind(cfg.sink)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def _check_zone(cfg: Config) -> None:
    """``agent`` and ``doctor`` refuse an unknown [carbon] zone at once, as ``report`` would later."""
    from wattledger.carbon import check_zone

    try:
        check_zone(cfg.carbon)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def influx_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--influx-url", help="InfluxDB base URL, e.g. http://localhost:8086 [default: [sink] url]."),
        click.option("--influx-database", help="v1 API: database name [default: [sink] database]."),
        click.option("--influx-bucket", help="v2 API: bucket [default: [sink] bucket]."),
        click.option("--influx-org", help="v2 API: organisation [default: [sink] org]."),
        click.option("--influx-token", help="v2 API: token (1.8+: 'user:password'). Prefer WATTLEDGER_SINK_TOKEN: "
                                            "argv is visible to all users."),
    ]):
        f = opt(f)
    return f


def _make_deliverer(cfg: Config, ledger: Ledger) -> Any:
    if not cfg.sink.kind.remote:
        return None
    from wattledger.agent.sinks import make_sink

    try:
        sink = make_sink(cfg.sink)
    except (ConfigError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    if sink is None:
        return None
    return make_deliverer(cfg, ledger, sink)


@main.command()
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
    cfg = load_config(config_path, _with_influx(
        Overrides(interval_s=interval_s, state_dir=state_dir, sysfs_root=sysfs_root, procfs_root=procfs_root,
                  sink_kind=sink),
        influx_url, influx_database, influx_bucket, influx_org, influx_token))
    cfg.sink.kind = _sink_kind(cfg)  # url + database means v1, url + bucket/token v2: one rule, config.py's
    _check_zone(cfg)
    remote = cfg.sink.kind.remote
    try:
        ledger = Ledger.in_state_dir(cfg.state_dir, spool=remote, spool_max_rows=cfg.spool.max_rows)
    except OSError as e:
        raise click.ClickException(f"cannot open the ledger in {cfg.state_dir}: {e}; pass --state-dir DIR "
                                   "or create it writable for this user")
    a = build_agent(cfg, ledger, out=sys.stdout if cfg.sink.kind is SinkKind.STDOUT else None,
                    deliverer=_make_deliverer(cfg, ledger) if remote else None)
    signal.signal(signal.SIGTERM, lambda *_: a.stop())
    signal.signal(signal.SIGINT, lambda *_: a.stop())
    log.info("agent: ledger %s, every %.3g s, sink %s", ledger.path, cfg.agent.interval_s, cfg.sink.kind)
    made = a.run(ticks=ticks)
    log.info("agent: stopped after %d ticks", made)
    ledger.close()


@main.command()
@config_option
@sysfs_option
@procfs_option
@influx_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source.")
def doctor(config_path: str | None, sysfs_root: str | None, procfs_root: str | None, influx_url: str | None,
           influx_database: str | None, influx_bucket: str | None, influx_org: str | None,
           influx_token: str | None, as_json: bool) -> None:
    """Say what can be measured here, what cannot, and what to do about it."""
    cfg = load_config(config_path, _with_influx(Overrides(sysfs_root=sysfs_root, procfs_root=procfs_root),
                                                influx_url, influx_database, influx_bucket, influx_org,
                                                influx_token))
    _check_zone(cfg)
    rows = doctor_rows(cfg)
    if as_json:
        for r in rows:
            click.echo(json.dumps({"source": r.source, "state": r.state.value, "detail": r.detail, "fix": r.fix,
                                   "devices": list(r.devices)}))
    else:
        for r in rows:
            mark = "ok " if r.ok else "!! "
            click.echo(f"{mark}{r.source:<10} {r.state.value:<18} {r.detail}")
            if r.fix and not r.ok:
                click.echo(f"   {'':<10} {'':<18} fix: {r.fix}")
    sys.exit(0 if measuring(rows) else 1)


def _intensity(cfg: Config) -> tuple[float, str]:
    from wattledger.carbon import intensity_now
    from wattledger.carbon.static import UnknownZone

    try:
        return intensity_now(cfg.carbon)
    except UnknownZone as e:
        raise click.UsageError(str(e.args[0])) from None


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
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
    raw_tag = tag or os.environ.get("WATTLEDGER_JOB") or f"run-{Path(cmd[0]).name}-{int(time.time())}"
    clean = sanitise_tag(raw_tag, cfg.jobs.max_tag_chars)
    if not clean:
        raise click.UsageError(f"tag {raw_tag!r} has no usable characters (allowed: A-Z a-z 0-9 . _ : + @ / = -)")
    g_per_kwh, intensity_src = _intensity(cfg)
    with tempfile.TemporaryDirectory(prefix="wattledger-run-") as tmp:
        ledger = Ledger.in_state_dir(Path(tmp))
        collected = []
        a = build_agent(cfg, ledger, carbon_sync=False, on_tick=lambda r: collected.extend(r.points))
        a.commit(a.tick())  # baseline
        env = dict(os.environ, WATTLEDGER_JOB=clean)
        started = time.monotonic()
        try:
            child = subprocess.Popen(list(cmd), env=env)
        except OSError as e:
            raise click.ClickException(f"cannot start {cmd[0]!r}: {e}") from None
        old_int = signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
        next_at = started + interval_s
        while True:
            # Wait for the child's exit without reaping it: its /proc entry (a
            # zombie) keeps its final CPU time for the last measurement.
            info = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None and info.si_pid == child.pid:
                break
            if time.monotonic() >= next_at:
                a.commit(a.tick())
                next_at += interval_s
            time.sleep(min(0.05, max(0.0, next_at - time.monotonic())))
        a.commit(a.tick())  # final: the zombie's last CPU time
        duration_s = time.monotonic() - started
        rc = child.wait()
        signal.signal(signal.SIGINT, old_int)
        ledger.close()
    user = _current_user()
    by_component = sum_job_energy(collected, clean, user)
    energy_j = sum(by_component.values())
    node_sources: dict[str, set[str]] = {}  # component -> the sources its wl_node rows came from
    for p in collected:
        if p.measurement == "wl_node":
            node_sources.setdefault(p.tags["component"], set()).add(p.tags["source"])
    source_by_component = {c: ",".join(sorted(s)) for c, s in sorted(node_sources.items())}
    sources = sorted(set().union(*node_sources.values()))
    pue = cfg.pue.value
    result = {
        "job": clean,
        "user": user,
        "command": list(cmd),
        "exit_code": rc,
        "duration_s": round(duration_s, 3),
        "energy_j": energy_j,
        "energy_kwh": energy_j / J_PER_KWH,
        "energy_by_component_j": by_component,
        "pue": pue,
        "facility_energy_j": energy_j * pue,
        "carbon_g_per_kwh": g_per_kwh,
        "carbon_source": intensity_src,
        "co2e_g": energy_j / J_PER_KWH * pue * g_per_kwh,
        "source": ",".join(sources) or "none",
        "source_by_component": source_by_component,
        "estimated": "model" in sources,
    }
    if not sources:
        # No energy source at all: say so, never print 0 J as if it were measured.
        for key in ("energy_j", "energy_kwh", "facility_energy_j", "co2e_g"):
            result[key] = None
        click.echo(f"wattledger: job {clean}: nothing was measured: no energy source on this host "
                   "(RAPL unreadable and the model estimate off); see `wattledger doctor`", err=True)
        if as_json:
            click.echo(json.dumps(result))
    elif as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(_run_text(result), err=False)
    sys.exit(rc if rc >= 0 else 128 - rc)


def _current_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _run_text(r: dict[str, Any]) -> str:
    lines = [
        f"wattledger: job {r['job']} ({r['user']}) ran {r['duration_s']:.1f} s, exit code {r['exit_code']}",
        f"  energy        {r['energy_j']:.1f} J = {r['energy_kwh']:.6f} kWh   "
        + "  ".join(f"{k} {v:.1f} J" for k, v in sorted(r["energy_by_component_j"].items())),
        f"  x PUE {r['pue']:<6}  {r['facility_energy_j']:.1f} J",
        f"  CO2e          {r['co2e_g']:.3f} g at {r['carbon_g_per_kwh']} g/kWh ({r['carbon_source']})",
    ]
    by_component = r["source_by_component"]
    measured = sorted(c for c, src in by_component.items() if "model" not in src.split(","))
    estimated = sorted(c for c, src in by_component.items() if "model" in src.split(","))
    parts = [f"{c} {by_component[c]}" for c in measured]
    if estimated:
        parts.append(f"{', '.join(estimated)} model ESTIMATE (no energy counter for them here; "
                     "see `wattledger doctor`)")
    lines.append("  source        " + "; ".join(parts))
    return "\n".join(lines)


@main.command()
@config_option
@state_dir_option
@click.option("--interval", "interval_s", type=Seconds(0.05, 3600.0), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print the newest tick once and exit.")
def top(config_path: str | None, state_dir: str | None, interval_s: float, once: bool) -> None:
    """Live view: power per job in the newest tick of a running agent's ledger."""
    from wattledger.model.points import WL_JOB, WL_NODE
    from wattledger.report.top import latest_tick, render

    cfg = load_config(config_path, Overrides(state_dir=state_dir))
    path = cfg.state_dir / "ledger.sqlite3"
    if not path.exists():
        raise click.ClickException(f"no ledger at {path}: start `wattledger agent` (or pass --state-dir)")
    ledger = Ledger(path, readonly=True)
    while True:
        since = time.time_ns() - int(max(60.0, 3 * cfg.agent.interval_s) * 1e9)
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


from wattledger.cli.report import carbon, report  # noqa: E402 - commands defined in their own module

main.add_command(report)
main.add_command(carbon)

from wattledger.cli.dashboards import dashboards  # noqa: E402 - commands defined in their own module

main.add_command(dashboards)

if __name__ == "__main__":  # pragma: no cover
    main()
