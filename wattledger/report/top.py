"""``wattledger top``: a live view of the newest tick in a running agent's ledger.

Pure presentation over ledger rows: ``latest_tick`` picks the newest tick's
wl_job rows and turns them into per-job power by component; the CLI polls.
``freshness`` tells a live tick from a stale one: an agent ticks every
``interval_s``, so a newest tick older than two intervals (+ 2 s) means the
agent stopped (or cannot write), and the view says so and since when,
instead of showing the last tick as if it were now. ``_idle`` is shown as
unused capacity.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobPower:
    job: str
    user: str
    power_w: dict[str, float] = field(default_factory=dict)  # per component
    source: set[str] = field(default_factory=set)

    @property
    def total_w(self) -> float:
        return sum(self.power_w.values())


def latest_tick(job_rows: Sequence[Mapping[str, Any]], node_rows: Sequence[Mapping[str, Any]]) -> tuple[int | None, list[JobPower], float]:
    """(tick time, jobs by power descending, host power) of the newest tick in the rows (ledger rows)."""
    if not node_rows:
        return None, [], 0.0
    t = max(int(r["time_ns"]) for r in node_rows)
    interval = {(r["component"], r["device"]): float(r["interval_s"] or 0) for r in node_rows if r["time_ns"] == t}
    host_w = sum(float(r["power_w"] or 0) for r in node_rows if r["time_ns"] == t)
    jobs: dict[tuple[str, str], JobPower] = {}
    for r in job_rows:
        if r["time_ns"] != t:
            continue
        dt = interval.get((r["component"], r["device"])) or 0.0
        if not dt:
            continue
        key = (str(r["job"]), str(r["user"]))
        jp = jobs.setdefault(key, JobPower(*key))
        comp = str(r["component"])
        jp.power_w[comp] = jp.power_w.get(comp, 0.0) + float(r["energy_j"] or 0) / dt
        jp.source.add(str(r["source"]))
    return t, sorted(jobs.values(), key=lambda j: -j.total_w), host_w


def tick_interval_s(node_rows: Sequence[Mapping[str, Any]], t: int) -> float:
    """The longest pool interval of the tick at ``t`` (how often this agent ticks)."""
    return max((float(r["interval_s"] or 0) for r in node_rows if r["time_ns"] == t), default=0.0)


def freshness(t: int, interval_s: float, now_ns: int) -> tuple[bool, float]:
    """(stale, age in seconds) of the newest tick: stale once it is older than 2 intervals + 2 s."""
    age_s = max(0.0, (now_ns - t) / 1e9)
    return age_s > 2 * max(interval_s, 0.05) + 2.0, age_s


def status_line(t: int, interval_s: float, now_ns: int) -> str:
    stale, age_s = freshness(t, interval_s, now_ns)
    at = time.strftime("%H:%M:%S", time.localtime(t / 1e9))
    if stale:
        return (f"STALE: the last tick was {age_s:,.0f} s ago ({at}); the agent seems stopped "
                "(`systemctl status wattledger`). The figures below are from then, not now.")
    return f"live: tick at {at} ({age_s:.1f} s ago, every {interval_s:.3g} s)"


def render(t: int | None, jobs: Sequence[JobPower], host_w: float, components: Sequence[str],
           now_ns: int | None = None, interval_s: float = 0.0) -> str:
    """The tick as a table; with ``now_ns``, a first line that says whether it is live or stale."""
    if t is None:
        return "no ticks in the ledger yet"
    head = f"{'JOB':<28} {'USER':<12} " + " ".join(f"{c.upper() + ' W':>9}" for c in components) + f" {'TOTAL W':>9}"
    lines = [status_line(t, interval_s, now_ns)] if now_ns is not None else []
    lines += [f"host power {host_w:.1f} W", head]
    for j in jobs:
        flag = " (model)" if "model" in j.source else ""
        if j.job == "_idle":
            flag += "  unused capacity"
        lines.append(
            f"{j.job[:28]:<28} {j.user[:12]:<12} "
            + " ".join(f"{j.power_w.get(c, 0.0):>9.2f}" for c in components)
            + f" {j.total_w:>9.2f}{flag}"
        )
    return "\n".join(lines)
