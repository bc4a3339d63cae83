"""``wattledger top``: a live view of the newest tick in a running agent's ledger.

Pure presentation over ledger rows: ``latest_tick`` picks the newest tick's
wl_job rows and turns them into per-job power by component; the CLI polls.
"""

from __future__ import annotations

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


def render(t: int | None, jobs: Sequence[JobPower], host_w: float, components: Sequence[str]) -> str:
    if t is None:
        return "no ticks in the ledger yet"
    head = f"{'JOB':<28} {'USER':<12} " + " ".join(f"{c.upper() + ' W':>9}" for c in components) + f" {'TOTAL W':>9}"
    lines = [f"host power {host_w:.1f} W", head]
    for j in jobs:
        flag = " (model)" if "model" in j.source else ""
        lines.append(
            f"{j.job[:28]:<28} {j.user[:12]:<12} "
            + " ".join(f"{j.power_w.get(c, 0.0):>9.2f}" for c in components)
            + f" {j.total_w:>9.2f}{flag}"
        )
    return "\n".join(lines)
