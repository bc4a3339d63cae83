"""The NVML reader and GPU accounting together: the GPU pools the agent makes of each read.

Tests of per-pool figures (SM-busy seconds, intervals, MIG shares, bridged
failures) read through this, as the agent's tick does: ``NvmlCollector.read``
then ``GpuPools.update``.
"""

from __future__ import annotations

from typing import Any

from wattledger.accounting.gpu import GpuPools
from wattledger.collectors.nvml import NvmlCollector
from wattledger.model.gpu import GpuPoolSample
from wattledger.model.readings import ProbeResult


class PoolReader:
    def __init__(self, nvml: Any = None) -> None:
        self.collector = NvmlCollector(nvml)
        self.pools = GpuPools()

    def read(self, read_ns: int) -> GpuPoolSample:
        return self.pools.update(self.collector.read(read_ns))

    def probe(self) -> ProbeResult:
        return self.collector.probe()

    def device_probes(self) -> tuple[ProbeResult, ...]:
        return self.collector.device_probes()

    def close(self) -> None:
        self.collector.close()

    @property
    def bridge_gap_s(self) -> float:
        return self.pools.bridge_gap_s

    @bridge_gap_s.setter
    def bridge_gap_s(self, value: float) -> None:
        self.pools.bridge_gap_s = value

    @property
    def reprobe_every(self) -> int:
        return self.collector.reprobe_every

    @reprobe_every.setter
    def reprobe_every(self, value: int) -> None:
        self.collector.reprobe_every = value
