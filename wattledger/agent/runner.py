"""``wattledger run``: one command measured by the agent's own tick loop, and its figures.

The agent (built by ``agent.factory`` on a temporary ledger, no carbon sync)
reads every counter just before the command starts and again as soon as it
exits, whatever its length, with ticks every ``interval_s`` in between:

* the exit is seen through a pidfd (``waitid(WNOWAIT)`` where there is none)
  without reaping the command, so its ``/proc`` entry (a zombie) still holds
  its final CPU time for that last read;
* the command's pid is pinned to its job in the process reader: a command
  shorter than a tick is first seen as that zombie, whose environment (and
  so its tag) is gone, and its own CPU time is read in nanoseconds
  (``schedstat``) rather than 10 ms clock ticks;
* after the last read the command is reaped with ``wait4``, whose CPU time
  (the command and the children it reaped, as the kernel accounts them) is
  reported beside the energy.

A command that cannot be found exits 127, one that cannot be executed 126
(as a shell does); ``resolve`` checks before anything starts.
"""

from __future__ import annotations

import math
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wattledger.agent.loop import Agent, TickResult, sum_job_energy
from wattledger.agent.service import Held, Service, start_held, wait_for_tick
from wattledger.carbon.footprint import co2e_g
from wattledger.collectors.procs import ProcCollector
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.model.units import J_PER_KWH
from wattledger.util.energyfmt import energy_text, mass_text

ESTIMATED = "model"
NOT_FOUND = 127
NOT_EXECUTABLE = 126


class CannotStart(Exception):
    """The command cannot be started; ``exit_code`` is the shell's (127 not found, 126 not executable)."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve(cmd: Sequence[str], env: Mapping[str, str]) -> str:
    """The executable ``cmd[0]`` names (searched in the command's PATH); CannotStart when there is none."""
    name = cmd[0]
    if "/" not in name:
        found = shutil.which(name, path=env.get("PATH", os.defpath))
        if found is None:
            raise CannotStart(NOT_FOUND, f"{name}: command not found (searched PATH)")
        return found
    if not os.path.exists(name):
        raise CannotStart(NOT_FOUND, f"{name}: no such file")
    if os.path.isdir(name) or not os.access(name, os.X_OK):
        raise CannotStart(NOT_EXECUTABLE, f"{name}: not executable" + (" (a directory)" if os.path.isdir(name)
                                                                        else " (chmod +x it?)"))
    return name


@dataclass
class Measured:
    """What the agent saw while one command ran."""

    exit_code: int  # the command's, or -N when a signal N ended it
    duration_s: float
    points: list[Point] = field(default_factory=list)
    cpu_s: float | None = None  # the command's CPU time (and its reaped children's), from wait4
    start_ns: int = 0  # wall clock, just before the command started
    end_ns: int = 0  # wall clock, just after it exited
    service_tick_ns: int | None = None  # the service's first tick after the exit (service mode)


def pin(agent: Agent, pid: int, job: JobKey) -> None:
    """Tell the agent's process reader that ``pid`` is ``job``'s (a reader that cannot be told is left alone)."""
    if isinstance(agent.sources.procs, ProcCollector):
        agent.sources.procs.pin(pid, job)


def measure(agent: Agent, cmd: Sequence[str], env: dict[str, str], interval_s: float, job: JobKey,
            service: Service | None = None) -> Measured:
    """Run ``cmd`` with ``env``, reading every counter at its start and exit and each ``interval_s`` between.

    With a running ``service``, the command runs under the holder (agent/service.py), which stays
    until the service's first tick after the exit is written (``Measured.service_tick_ns``).
    Raises OSError when it cannot start (``resolve`` first, for the shell's exit codes).
    """
    points: list[Point] = []

    def keep(result: TickResult) -> None:
        points.extend(result.points)

    agent.on_tick = keep
    agent.commit(agent.tick())  # the start: every counter, just before the command exists
    start_ns, started = time.time_ns(), time.monotonic()
    run = _Started.under_holder(cmd, env) if service is not None else _Started.direct(cmd, env)
    pin(agent, run.pid, job)
    old = {s: signal.signal(s, run.forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _tick_until(agent, run.exited, started, interval_s)
        agent.commit(agent.tick())  # the exit: every counter, the zombie's last CPU time
        duration_s, end_ns = time.monotonic() - started, time.time_ns()
        status = run.held.wait_status() if run.held is not None else None
        tick_ns = None
        if service is not None and run.held is not None:
            tick_ns = wait_for_tick(service, end_ns, 2 * service.interval_s + 5.0)
            run.held.release()
        _, own_status, usage = os.wait4(run.pid, 0)
    finally:
        run.close()
        for s, handler in old.items():
            signal.signal(s, handler)
    run.proc.returncode = os.waitstatus_to_exitcode(own_status)  # reaped here: Popen must not wait again
    code = os.waitstatus_to_exitcode(status if status is not None else own_status)
    return Measured(code, duration_s, points, usage.ru_utime + usage.ru_stime, start_ns, end_ns, tick_ns)


@dataclass
class _Started:
    """The started command (or its holder), and how to see it exit without reaping it."""

    proc: subprocess.Popen[bytes]
    held: Held | None
    ready_fd: int | None  # readable once it exited: a pidfd, or the holder's status pipe

    @classmethod
    def direct(cls, cmd: Sequence[str], env: dict[str, str]) -> _Started:
        proc = subprocess.Popen(list(cmd), env=env)
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None  # Linux < 5.3 or Python without pidfd_open: poll
        return cls(proc, None, pidfd)

    @classmethod
    def under_holder(cls, cmd: Sequence[str], env: dict[str, str]) -> _Started:
        held = start_held(cmd, env)
        return cls(held.proc, held, held.status_r)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def forward(self, signum: int, _frame: Any) -> None:
        self.proc.send_signal(signum)

    def exited(self, wait_s: float) -> bool:
        """True once the command exited (left a zombie, or its holder reported); waits at most ``wait_s``."""
        if self.ready_fd is not None:
            readable, _, _ = select.select([self.ready_fd], [], [], wait_s)
            if not readable:
                return False
            if self.held is not None:
                return True
        else:
            time.sleep(min(0.01, wait_s))
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None and info.si_pid == self.pid

    def close(self) -> None:
        if self.held is None and self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None


def _tick_until(agent: Agent, done: Callable[[float], bool], started: float, interval_s: float) -> None:
    """Tick every ``interval_s`` until ``done`` (asked with the time left to the next tick) says so."""
    next_at = started + interval_s
    while not done(max(0.0, next_at - time.monotonic())):
        if time.monotonic() >= next_at:
            agent.commit(agent.tick())
            next_at += interval_s
            if next_at < time.monotonic():
                next_at = time.monotonic() + interval_s


# -- the figures ----------------------------------------------------------------------------------


def node_sources(points: Sequence[Point]) -> dict[str, set[str]]:
    """component -> the sources its wl_node rows came from."""
    out: dict[str, set[str]] = {}
    for p in points:
        if p.measurement == WL_NODE:
            out.setdefault(p.tags["component"], set()).add(p.tags["source"])
    return out


def resolution_bounds_j(points: Sequence[Point], tag: str, user: str, cpu_tick_s: float) -> dict[str, float]:
    """Components the job was charged nothing on: the most it can have used unseen, per component.

    A job charged 0 J was below the counters' resolution, not free: on a CPU or
    DRAM pool it used less than one clock tick of CPU time (``cpu_tick_s``) that
    the process reader could see, so it is bounded by the pool's energy per
    ``cpu_tick_s`` of its busiest use; on a GPU, less than the counter's
    update. The bound is the pool's energy x tick / max(tick, all drivers).
    """
    charged = sum_job_energy(points, tag, user)
    drivers: dict[tuple[int, str, str], float] = {}
    for p in points:
        if p.measurement == WL_JOB:
            key = (p.time_ns, p.tags["component"], p.tags["device"])
            drivers[key] = drivers.get(key, 0.0) + float(p.fields.get("driver_s", 0.0))
    bounds: dict[str, float] = {}
    for p in points:
        comp = p.tags.get("component", "")
        if p.measurement != WL_NODE or charged.get(comp, 0.0) > 0:
            continue
        busy = drivers.get((p.time_ns, comp, p.tags["device"]), 0.0)
        bounds[comp] = bounds.get(comp, 0.0) + float(p.fields["energy_j"]) * cpu_tick_s / max(cpu_tick_s, busy)
    return bounds


DILUTION_WARN_PCT = 2.0  # say so from this much
OVERCOUNT_GRACE = 1.05  # CPU seconds up to 5% over the capacity are clock-tick noise


def diluted_j(points: Sequence[Point], tag: str, user: str, ncpu: int) -> float:
    """How much of the job's CPU and DRAM energy other processes' over-counted CPU time may have taken.

    In a tick where the process reader's CPU seconds add up to more than the CPUs had (a process's
    CPU found late, all charged when found: docs/attribution.md), every job's share of that tick
    shrinks by that factor. Returns the job's charge in those ticks x (sum / capacity - 1).
    """
    drivers: dict[tuple[int, str, str], float] = {}
    mine: dict[tuple[int, str, str], float] = {}
    for p in points:
        if p.measurement == WL_JOB and p.tags["component"] in ("cpu", "dram"):
            key = (p.time_ns, p.tags["component"], p.tags["device"])
            drivers[key] = drivers.get(key, 0.0) + float(p.fields.get("driver_s", 0.0))
            if p.tags.get("job") == tag and p.tags.get("user") == user:
                mine[key] = mine.get(key, 0.0) + float(p.fields["energy_j"])
    out = 0.0
    for p in points:
        key = (p.time_ns, p.tags.get("component", ""), p.tags.get("device", ""))
        if p.measurement == WL_NODE and key in mine:
            ratio = drivers[key] / max(1e-9, ncpu * float(p.fields["interval_s"]))
            if ratio > OVERCOUNT_GRACE:
                out += mine[key] * (ratio - 1.0)
    return out


def summary(m: Measured, *, job: str, user: str, cmd: Sequence[str], pue: float, g_per_kwh: float,
            intensity_source: str, cpu_tick_s: float = 0.01, ncpu: int | None = None) -> dict[str, Any]:
    """The run's figures: energy per component, facility energy, CO2e, and where each came from.

    With no energy source at all the energy figures are None: never 0 J as if it were measured.
    """
    by_component = sum_job_energy(m.points, job, user)
    energy_j = math.fsum(by_component.values())
    sources = node_sources(m.points)
    names = sorted(set().union(*sources.values()))
    measured = bool(names)
    below = resolution_bounds_j(m.points, job, user, cpu_tick_s) if measured else {}
    diluted = diluted_j(m.points, job, user, ncpu or os.cpu_count() or 1)
    return {
        "job": job, "user": user, "command": list(cmd), "exit_code": m.exit_code,
        "duration_s": round(m.duration_s, 3), "cpu_s": m.cpu_s, "start_ns": m.start_ns, "end_ns": m.end_ns,
        "energy_j": energy_j if measured else None,
        "energy_kwh": energy_j / J_PER_KWH if measured else None,
        "energy_by_component_j": by_component,
        "below_resolution_j": below,
        "pue": pue,
        "facility_energy_j": energy_j * pue if measured else None,
        "carbon_g_per_kwh": g_per_kwh,
        "carbon_source": intensity_source,
        "co2e_g": co2e_g(energy_j, pue, g_per_kwh) if measured else None,
        "source": ",".join(names) or "none",
        "source_by_component": {c: ",".join(sorted(s)) for c, s in sorted(sources.items())},
        "estimated": ESTIMATED in names,
        "diluted_pct": 100 * diluted / energy_j if energy_j > 0 else 0.0,
    }


def _component_text(r: dict[str, Any], unit: str) -> str:
    parts = [f"{c} {energy_text(v, unit)}" for c, v in sorted(r["energy_by_component_j"].items()) if v > 0]
    parts += [f"{c} < {energy_text(b, unit)}" for c, b in sorted(r["below_resolution_j"].items())]
    return "  ".join(parts)


def summary_text(r: dict[str, Any], unit: str = "auto") -> str:
    """The figures for people; a figure below the counters' resolution reads ``< bound``, never 0."""
    cpu = f", {r['cpu_s']:.3f} s of CPU" if r.get("cpu_s") is not None else ""
    energy_j = r["energy_j"]
    unit = unit if unit != "auto" else ("J" if energy_j < 3600 else "auto")
    if energy_j > 0:
        energy = energy_text(energy_j, unit)
    else:
        bound = sum(r["below_resolution_j"].values())
        energy = (f"< {energy_text(bound, unit)}: below the counters' resolution (under one "
                  "10 ms CPU tick seen; energy counters move in steps)")
    lines = [
        f"wattledger: job {r['job']} ({r['user']}) ran {r['duration_s']:.3g} s{cpu}, exit code {r['exit_code']}",
        f"  energy        {energy}   {_component_text(r, unit)}",
        f"  x PUE {r['pue']:<6}  {energy_text(r['facility_energy_j'], unit)}",
        f"  CO2e          {mass_text(r['co2e_g'])} at {r['carbon_g_per_kwh']} g/kWh ({r['carbon_source']})",
    ]
    by_component = r["source_by_component"]
    measured = sorted(c for c, src in by_component.items() if ESTIMATED not in src.split(","))
    estimated = sorted(c for c, src in by_component.items() if ESTIMATED in src.split(","))
    parts = [f"{c} {by_component[c]}" for c in measured]
    if estimated:
        parts.append(f"{', '.join(estimated)} model ESTIMATE (no energy counter for them here; "
                     "see `wattledger doctor`)")
    lines.append("  source        " + "; ".join(parts))
    if r.get("diluted_pct", 0.0) >= DILUTION_WARN_PCT:
        lines.append(f"  note          may be up to {r['diluted_pct']:.0f}% low: other processes' CPU time found late "
                     "added up to more than the CPUs had in some ticks, which shrinks every job's share of them")
    return "\n".join(lines)
