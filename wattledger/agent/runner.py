"""``wattledger run``: one command measured by the agent's own tick loop, and its figures.

The agent (built by ``agent.factory`` on a temporary ledger, no carbon sync)
ticks at the start, every ``interval_s`` while the command runs, and once
more when it exits: the command is waited for without being reaped, so its
``/proc`` entry (a zombie) still holds its final CPU time for that last read.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wattledger.agent.loop import Agent, TickResult, sum_job_energy
from wattledger.carbon.footprint import co2e_g
from wattledger.model.points import WL_NODE, Point
from wattledger.model.units import J_PER_KWH

ESTIMATED = "model"


@dataclass
class Measured:
    """What the agent saw while one command ran."""

    exit_code: int
    duration_s: float
    points: list[Point] = field(default_factory=list)


def measure(agent: Agent, cmd: Sequence[str], env: dict[str, str], interval_s: float) -> Measured:
    """Run ``cmd`` with ``env``, ticking the agent around it. Raises OSError when it cannot start."""
    points: list[Point] = []

    def keep(result: TickResult) -> None:
        points.extend(result.points)

    agent.on_tick = keep
    agent.commit(agent.tick())  # baseline
    started = time.monotonic()
    child = subprocess.Popen(list(cmd), env=env)
    old_int = signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
    try:
        _tick_until_exit(agent, child.pid, started, interval_s)
        agent.commit(agent.tick())  # final: the zombie's last CPU time
        duration_s = time.monotonic() - started
        rc = child.wait()
    finally:
        signal.signal(signal.SIGINT, old_int)
    return Measured(rc, duration_s, points)


def _tick_until_exit(agent: Agent, pid: int, started: float, interval_s: float) -> None:
    next_at = started + interval_s
    while True:
        # Wait for the child's exit without reaping it (WNOWAIT).
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None and info.si_pid == pid:
            return
        if time.monotonic() >= next_at:
            agent.commit(agent.tick())
            next_at += interval_s
        time.sleep(min(0.05, max(0.0, next_at - time.monotonic())))


def summary(m: Measured, *, job: str, user: str, cmd: Sequence[str], pue: float, g_per_kwh: float,
            intensity_source: str) -> dict[str, Any]:
    """The run's figures: energy per component, facility energy, CO2e, and where each came from.

    With no energy source at all the energy figures are None: never 0 J as if it were measured.
    """
    by_component = sum_job_energy(m.points, job, user)
    energy_j = math.fsum(by_component.values())
    node_sources: dict[str, set[str]] = {}  # component -> the sources its wl_node rows came from
    for p in m.points:
        if p.measurement == WL_NODE:
            node_sources.setdefault(p.tags["component"], set()).add(p.tags["source"])
    sources = sorted(set().union(*node_sources.values()))
    measured = bool(sources)
    return {
        "job": job, "user": user, "command": list(cmd), "exit_code": m.exit_code,
        "duration_s": round(m.duration_s, 3),
        "energy_j": energy_j if measured else None,
        "energy_kwh": energy_j / J_PER_KWH if measured else None,
        "energy_by_component_j": by_component,
        "pue": pue,
        "facility_energy_j": energy_j * pue if measured else None,
        "carbon_g_per_kwh": g_per_kwh,
        "carbon_source": intensity_source,
        "co2e_g": co2e_g(energy_j, pue, g_per_kwh) if measured else None,
        "source": ",".join(sources) or "none",
        "source_by_component": {c: ",".join(sorted(s)) for c, s in sorted(node_sources.items())},
        "estimated": ESTIMATED in sources,
    }


def summary_text(r: dict[str, Any]) -> str:
    lines = [
        f"wattledger: job {r['job']} ({r['user']}) ran {r['duration_s']:.1f} s, exit code {r['exit_code']}",
        f"  energy        {r['energy_j']:.1f} J = {r['energy_kwh']:.6f} kWh   "
        + "  ".join(f"{k} {v:.1f} J" for k, v in sorted(r["energy_by_component_j"].items())),
        f"  x PUE {r['pue']:<6}  {r['facility_energy_j']:.1f} J",
        f"  CO2e          {r['co2e_g']:.3f} g at {r['carbon_g_per_kwh']} g/kWh ({r['carbon_source']})",
    ]
    by_component = r["source_by_component"]
    measured = sorted(c for c, src in by_component.items() if ESTIMATED not in src.split(","))
    estimated = sorted(c for c, src in by_component.items() if ESTIMATED in src.split(","))
    parts = [f"{c} {by_component[c]}" for c in measured]
    if estimated:
        parts.append(f"{', '.join(estimated)} model ESTIMATE (no energy counter for them here; "
                     "see `wattledger doctor`)")
    lines.append("  source        " + "; ".join(parts))
    return "\n".join(lines)
