"""Model-based power where no energy counter exists (VMs, most CI runners).

Every figure from this collector carries ``source=model``: it is an estimate,
not a measurement, and reports say so.

CPU: a linear model per logical CPU, P = n_cpu * idle_w + busy_cpus * (max_w - idle_w),
where busy_cpus is the busy CPU time of the interval (/proc/stat) divided by
its length. Defaults are Cloud Carbon Footprint's published per-vCPU
coefficients for Google Cloud (0.71 W idle, 4.26 W at 100%; CCF
methodology, "Compute" coefficients); configure ``[estimate]`` with figures
for your hardware.

DRAM: a constant 0.392 W per GiB of installed memory (CCF's memory
coefficient). It is all static power.

The model integrates power into cumulative micro-joule counters so that the
rest of the pipeline (counters, attribution, ledger) treats it exactly like
RAPL; the counters start at zero when the collector is created. Across a
restart of the agent (same boot) ``checkpoint``/``resume`` carry the integral
and the last /proc/stat reading over, so the first read after the restart
integrates the model over the gap, from the busy time the kernel counted
meanwhile, as a hardware counter would have counted it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from wattledger.model.readings import EnergyCounter, EnergySample, ProbeResult, SourceState
from wattledger.collectors.procs import parse_proc_stat
from wattledger.model.units import NS_PER_S

SOURCE = "model"
DEVICE = "host"


def mem_total_gib(meminfo_text: str) -> float:
    for line in meminfo_text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1024 * 1024)
    raise ValueError("no MemTotal line in meminfo")


def cpu_power_w(ncpu: int, busy_cpus: float, idle_w_per_vcpu: float, max_w_per_vcpu: float) -> float:
    busy_cpus = min(max(busy_cpus, 0.0), float(ncpu))
    return ncpu * idle_w_per_vcpu + busy_cpus * (max_w_per_vcpu - idle_w_per_vcpu)


class EstimateCollector:
    name = "estimate"

    def __init__(
        self,
        procfs_root: str | Path = "/proc",
        cpu_idle_w_per_vcpu: float = 0.71,
        cpu_max_w_per_vcpu: float = 4.26,
        dram_w_per_gib: float = 0.392,
    ) -> None:
        import os

        self.procfs_root = Path(procfs_root)
        self.idle_w = cpu_idle_w_per_vcpu
        self.max_w = cpu_max_w_per_vcpu
        self.dram_w_per_gib = dram_w_per_gib
        self.clk_tck = os.sysconf("SC_CLK_TCK")
        self._last: tuple[int, int] | None = None  # (read_ns, busy_ticks): the model integrates over its reads
        self._cpu_uj = 0.0
        self._dram_uj = 0.0

    def probe(self) -> ProbeResult:
        try:
            host = parse_proc_stat((self.procfs_root / "stat").read_text())
            gib = mem_total_gib((self.procfs_root / "meminfo").read_text())
        except (OSError, ValueError) as e:
            return ProbeResult(SOURCE, SourceState.ERROR, f"cannot read {self.procfs_root}/stat or meminfo: {e}",
                               "pass --procfs-root pointing at a mounted procfs")
        return ProbeResult(
            SOURCE,
            SourceState.FOUND,
            f"model estimate: {host.ncpu} vCPU x {self.idle_w}-{self.max_w} W, "
            f"{gib:.1f} GiB RAM x {self.dram_w_per_gib} W/GiB (flagged source=model)",
            devices=(f"cpu:{DEVICE}", f"dram:{DEVICE}"),
        )

    def checkpoint(self) -> dict[str, float]:
        """The integral and the last reading, to resume after a restart (same boot: /proc/stat is per boot)."""
        if self._last is None:
            return {}
        return {"read_ns": float(self._last[0]), "busy_ticks": float(self._last[1]), "cpu_uj": self._cpu_uj,
                "dram_uj": self._dram_uj}

    def resume(self, state: Mapping[str, float]) -> None:
        if {"read_ns", "busy_ticks", "cpu_uj", "dram_uj"} <= set(state):
            self._last = (int(state["read_ns"]), int(state["busy_ticks"]))
            self._cpu_uj, self._dram_uj = float(state["cpu_uj"]), float(state["dram_uj"])

    def read(self, read_ns: int) -> EnergySample:
        host = parse_proc_stat((self.procfs_root / "stat").read_text())
        dram_w = mem_total_gib((self.procfs_root / "meminfo").read_text()) * self.dram_w_per_gib
        if self._last is not None and read_ns > self._last[0]:
            interval_s = (read_ns - self._last[0]) / NS_PER_S
            busy_cpus = (host.busy_ticks - self._last[1]) / self.clk_tck / interval_s
            self._cpu_uj += cpu_power_w(host.ncpu, busy_cpus, self.idle_w, self.max_w) * interval_s * 1e6
            self._dram_uj += dram_w * interval_s * 1e6
        self._last = (read_ns, host.busy_ticks)
        return EnergySample(
            read_ns,
            (
                EnergyCounter("cpu", DEVICE, SOURCE, int(self._cpu_uj), None, host.ncpu * self.idle_w),
                EnergyCounter("dram", DEVICE, SOURCE, int(self._dram_uj), None, dram_w),
            ),
        )
