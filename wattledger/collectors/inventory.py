"""What hardware the host has, for its embodied footprint: read once at start from /proc and /sys.

* ``/proc/cpuinfo``: the CPU's ``model name`` and the number of sockets
  (distinct ``physical id``);
* ``/proc/meminfo``: ``MemTotal`` (a little under the installed DRAM: the
  kernel keeps some; ``[embodied] dram_gib`` states the installed size);
* ``/sys/block``: whole disks (no partitions, loop, RAM, zram, device-mapper
  or md devices), their size (``size``, 512-byte sectors) and whether they
  spin (``queue/rotational``).

GPUs come from NVML (``collectors.nvml``, ``NvmlCollector.gpu_info``). Both
roots are parameters, as for every reader; what cannot be read is said in
``problems`` and left out, never guessed.
"""

from __future__ import annotations

from pathlib import Path

from wattledger.model.inventory import Disk, GpuInfo, HostInventory

_VIRTUAL = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")


def read_cpuinfo(text: str) -> tuple[str, int]:
    """(model name, sockets) from /proc/cpuinfo's text; ("", 1) when it names neither."""
    model = ""
    sockets: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "physical id":
            sockets.add(value.strip())
    return model, max(1, len(sockets))


def read_memtotal(text: str) -> int | None:
    """MemTotal in bytes from /proc/meminfo's text."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def read_disks(sysfs_root: Path) -> tuple[list[Disk], list[str]]:
    """Whole physical disks under /sys/block, and what could not be read."""
    disks, problems = [], []
    block = sysfs_root / "block"
    try:
        names = sorted(p.name for p in block.iterdir())
    except OSError as e:
        return [], [f"cannot list {block}: {e}"]
    for name in names:
        if name.startswith(_VIRTUAL):
            continue
        try:
            sectors = int((block / name / "size").read_text().strip())
            rotational = (block / name / "queue" / "rotational").read_text().strip() == "1"
        except (OSError, ValueError) as e:
            problems.append(f"cannot read {block / name}: {e}")
            continue
        if sectors > 0:
            disks.append(Disk(name, sectors * 512, rotational))
    return disks, problems


def read_inventory(procfs_root: Path, sysfs_root: Path, gpus: tuple[GpuInfo, ...] = ()) -> HostInventory:
    """The host's CPU, memory and disks (and the GPUs NVML named)."""
    problems = []
    try:
        model, sockets = read_cpuinfo((procfs_root / "cpuinfo").read_text())
    except OSError as e:
        model, sockets = "", 1
        problems.append(f"cannot read {procfs_root / 'cpuinfo'}: {e}")
    try:
        memory = read_memtotal((procfs_root / "meminfo").read_text())
    except OSError as e:
        memory = None
        problems.append(f"cannot read {procfs_root / 'meminfo'}: {e}")
    disks, disk_problems = read_disks(sysfs_root)
    return HostInventory(model, sockets, memory, tuple(disks), gpus, tuple(problems + disk_problems))
