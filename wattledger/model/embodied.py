"""Embodied carbon: each device's own footprint (manufacture, transport), and the host's set of them.

A ``Footprint`` is one device's kgCO2e with Boavizta's range (``kg_min`` ..
``kg_max``) and where the figure came from (``source``: the boaviztapi
version, table date, endpoint and request; or the config key that overrode
it). ``HostFootprint`` is every device of one host, the lifetime they are
amortised over and the two policies: where unused capacity goes and what a
device accrues past its end of life (docs/embodied.md).

Devices: each GPU (by UUID; its MIG instances share it by slices), each CPU
socket (``package-N``), and the host's ``dram``, ``storage`` and ``chassis``
(mainboard, power supplies, enclosure, assembly), each with device ``host``.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattledger.model.policies import AfterLife, Unused

GPU, CPU, DRAM, STORAGE, CHASSIS = "gpu", "cpu", "dram", "storage", "chassis"
COMPONENTS = (GPU, CPU, DRAM, STORAGE, CHASSIS)
HOST_PARTS = (CPU, DRAM, STORAGE, CHASSIS)  # charged by the host's CPU capacity (one row per job: device "host")
HOST_DEVICE = "host"
G_PER_KG = 1000.0
SECONDS_PER_YEAR = 365.25 * 86400


@dataclass(frozen=True)
class Footprint:
    """One device's embodied carbon, kgCO2e, Boavizta's range, and the figure's provenance."""

    component: str  # gpu, cpu, dram, storage, chassis
    device: str  # a GPU's UUID, package-N, or host
    kg: float
    kg_min: float | None
    kg_max: float | None
    source: str  # 'boaviztapi 2.5.0 (table 2026-12-01): POST /v1/component/gpu {"name": ...}', or the config key
    what: str = ""  # what it was matched as: "NVIDIA H100 SXM 80GB (NVML: NVIDIA H100 80GB HBM3, 79.6 GiB)"


@dataclass(frozen=True)
class HostFootprint:
    devices: tuple[Footprint, ...]
    lifetime_s: float
    end_ns: int | None = None  # the end of life on the wall clock ([embodied] in_service + lifetime); None: unknown
    after_end: AfterLife = AfterLife.STOP
    unused: Unused = Unused.IDLE
    basis: str = ""  # how the figures were chosen: "detected", "archetype p5.48xlarge"

    def gpu(self, uuid: str) -> Footprint | None:
        return next((d for d in self.devices if d.component == GPU and d.device == uuid), None)

    def host_parts(self) -> tuple[Footprint, ...]:
        return tuple(d for d in self.devices if d.component in HOST_PARTS)

    @property
    def kg(self) -> float:
        return sum(d.kg for d in self.devices)

    def rate_g_per_s(self, device: Footprint) -> float:
        return device.kg * G_PER_KG / self.lifetime_s
