"""What hardware a host has, for its embodied footprint: CPU model and sockets, memory, disks, GPUs.

Read once at start (``collectors.inventory``, ``collectors.nvml``); the
footprint is looked up from it (``carbon.embodied``). Plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU as NVML names it: its model name and memory size."""

    uuid: str
    name: str
    memory_bytes: int | None  # None: NVML would not say
    index: int | None = None

    @property
    def memory_gib(self) -> float | None:
        return None if self.memory_bytes is None else self.memory_bytes / GIB


@dataclass(frozen=True)
class Disk:
    """One whole block device (not a partition, loop, RAM or device-mapper disk)."""

    name: str
    size_bytes: int
    rotational: bool  # a spinning disk (HDD); False: solid state (SSD, NVMe)


@dataclass(frozen=True)
class HostInventory:
    cpu_model: str = ""  # /proc/cpuinfo "model name" ("" when not known: ARM, a VM that hides it)
    sockets: int = 1  # distinct "physical id"s (1 when not known)
    memory_bytes: int | None = None  # /proc/meminfo MemTotal (a little under the installed DRAM)
    disks: tuple[Disk, ...] = ()
    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)
    problems: tuple[str, ...] = ()  # what could not be read, said once by the caller

    @property
    def memory_gib(self) -> float | None:
        return None if self.memory_bytes is None else self.memory_bytes / GIB
