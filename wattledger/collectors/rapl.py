"""RAPL energy through powercap sysfs (Intel ``intel-rapl``, and AMD, which the
same driver exposes since Linux ~5.11).

Discovery (once, ``discover``) is separate from reading (every tick, ``read``).
Zones are matched by their ``name`` file, never by index:

* ``package-N`` / ``package-N-die-M`` -> component ``cpu``, device = name
* a ``dram`` sub-zone                  -> component ``dram``, device = parent name
* ``core``, ``uncore`` sub-zones       -> not pools: they are inside the package
  figure and adding them would count that energy twice
* ``psys`` (platform)                  -> not a pool: it contains package and
  DRAM; reported by ``doctor`` only
* ``intel-rapl-mmio:*`` zones duplicate the MSR package zone: skipped

``energy_uj`` wraps at ``max_energy_range_uj`` (the counter runs 0..max, so the
wrap modulus is max + 1); the tracker in ``agent.counters`` corrects it.
Since CVE-2020-8694 ``energy_uj`` is readable by root only: that is a reported
state (permission denied) with its fix, never a zero.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from wattledger.model.readings import EnergyCounter, EnergySample, ProbeResult, SourceState

SOURCE = "rapl"
PERMISSION_FIX = (
    "energy_uj is root-only since CVE-2020-8694: run the agent as root, or as the "
    "wattledger service, which holds CAP_DAC_READ_SEARCH as an ambient capability "
    "(systemd/wattledger.service)"
)
_ZONE_PREFIXES = ("intel-rapl:", "amd-rapl:")


@dataclass(frozen=True)
class RaplZone:
    path: Path
    name: str
    component: str
    device: str
    wrap_uj: int | None


def _read_text(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read().decode().strip()


def classify(zone_id: str, name: str, parent_name: str | None) -> tuple[str, str] | None:
    """(component, device) of a zone, or None when it must not be a pool."""
    if parent_name is None:
        if name.startswith("package-"):
            return ("cpu", name)
        return None  # psys and unknown top-level zones
    if name == "dram":
        return ("dram", parent_name)
    return None  # core, uncore: already inside the package


def discover(sysfs_root: Path) -> tuple[list[RaplZone], list[str]]:
    """Pool zones under ``<sysfs_root>/class/powercap``, and names of zones not used as pools."""
    base = Path(sysfs_root) / "class" / "powercap"
    entries = sorted(os.listdir(base)) if base.is_dir() else []
    names: dict[str, str] = {}
    for entry in entries:
        if entry.startswith(_ZONE_PREFIXES):
            try:
                names[entry] = _read_text(base / entry / "name")
            except OSError:
                continue
    zones: list[RaplZone] = []
    skipped: list[str] = []
    for zone_id, name in names.items():
        parts = zone_id.split(":")
        parent = names.get(":".join(parts[:2])) if len(parts) > 2 else None
        kind = classify(zone_id, name, parent)
        if kind is None:
            skipped.append(name if parent is None else f"{parent}/{name}")
            continue
        wrap_uj = None
        try:
            wrap_uj = int(_read_text(base / zone_id / "max_energy_range_uj")) + 1
        except (OSError, ValueError):
            pass
        zones.append(RaplZone(base / zone_id, name, kind[0], kind[1], wrap_uj))
    return zones, skipped


class RaplCollector:
    name = SOURCE

    def __init__(self, sysfs_root: str | Path = "/sys") -> None:
        self.sysfs_root = Path(sysfs_root)
        self.zones, self.skipped = discover(self.sysfs_root)

    def probe(self) -> ProbeResult:
        if not self.zones:
            return ProbeResult(
                SOURCE,
                SourceState.MISSING,
                f"no RAPL package zones under {self.sysfs_root}/class/powercap",
                "normal on VMs and non-x86 hosts (the model estimate is used instead); on bare metal "
                "load the intel_rapl_msr module (modprobe intel_rapl_msr)",
            )
        for zone in self.zones:
            try:
                _read_text(zone.path / "energy_uj")
            except PermissionError:
                return ProbeResult(
                    SOURCE,
                    SourceState.PERMISSION_DENIED,
                    f"cannot read {zone.path / 'energy_uj'}",
                    PERMISSION_FIX,
                    tuple(f"{z.component}:{z.device}" for z in self.zones),
                )
            except OSError as e:
                return ProbeResult(SOURCE, SourceState.ERROR, f"{zone.path / 'energy_uj'}: {e}", "")
        detail = "zones: " + ", ".join(f"{z.component}:{z.device}" for z in self.zones)
        if self.skipped:
            detail += " (not pools: " + ", ".join(self.skipped) + ")"
        return ProbeResult(
            SOURCE, SourceState.FOUND, detail, devices=tuple(f"{z.component}:{z.device}" for z in self.zones)
        )

    def read(self, read_ns: int) -> EnergySample:
        counters: list[EnergyCounter] = []
        failures: list[ProbeResult] = []
        for zone in self.zones:
            try:
                value = int(_read_text(zone.path / "energy_uj"))
            except PermissionError:
                failures.append(
                    ProbeResult(SOURCE, SourceState.PERMISSION_DENIED, f"{zone.name}: energy_uj", PERMISSION_FIX)
                )
                continue
            except (OSError, ValueError) as e:
                state = SourceState.MISSING if getattr(e, "errno", None) == errno.ENOENT else SourceState.ERROR
                failures.append(ProbeResult(SOURCE, state, f"{zone.name}: {e}"))
                continue
            counters.append(EnergyCounter(zone.component, zone.device, SOURCE, value, zone.wrap_uj))
        return EnergySample(read_ns, tuple(counters), tuple(failures))
