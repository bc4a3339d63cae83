"""Embodied-carbon figures per device, from the pinned Boavizta table (``wattledger/data/embodied.json``).

The table is made by ``scripts/embodied_table.py`` from boaviztapi's own
Python API (version and date at its top, the endpoint and request beside
every figure); the agent never imports boaviztapi (docs/embodied.md says
why). This module reads the table and picks a host's figures:

* **detected** (the default): each GPU by its NVML name and memory size
  (``match_gpu``; an unknown GPU gets Boavizta's default GPU at its memory
  size, interpolated), each CPU socket by its ``/proc/cpuinfo`` model name
  among the server CPUs (else Boavizta's default CPU), DRAM per GiB (32 GB
  modules), storage per disk (SSD by capacity, HDD per unit), and the chassis
  (mainboard, two power supplies, enclosure, assembly) of a rack or blade
  server;
* **archetype** (``[embodied] archetype``): a Boavizta server archetype's
  parts, as if this host were that server;

then ``[embodied] device_kg`` overrides any device ("component:device" first,
then "component"). Every ``Footprint`` says where its figure came from.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from wattledger.config import Chassis, EmbodiedSection
from wattledger.model.embodied import (CHASSIS, CPU, DRAM, GPU, HOST_DEVICE, SECONDS_PER_YEAR, STORAGE, Footprint,
                                       HostFootprint)
from wattledger.model.inventory import GpuInfo, HostInventory
from wattledger.model.units import NS_PER_S

TABLE = "embodied.json"


class UnknownArchetype(ValueError):
    """``[embodied] archetype`` names no server archetype of the table."""


@dataclass(frozen=True)
class Table:
    data: Mapping[str, Any]

    @property
    def version(self) -> str:
        return str(self.data["boaviztapi"])

    @property
    def generated(self) -> str:
        return str(self.data["generated"])

    def source(self, entry: Mapping[str, Any], note: str = "") -> str:
        """Where a figure came from: boaviztapi version, table date, the call and its request body."""
        body = json.dumps(entry.get("body", {}), sort_keys=True)
        return f"boaviztapi {self.version} (table {self.generated}): {entry['call']} {body}{note}"

    def archetypes(self) -> list[str]:
        return sorted(self.data["archetypes"])


def load_table() -> Table:
    """The table shipped with the package (~100 KB; read at start, not kept: callers keep what they need)."""
    text = resources.files("wattledger").joinpath("data").joinpath(TABLE).read_text()
    return Table(json.loads(text))


# -- names --------------------------------------------------------------------------------------------------

_GPU_NOISE = {"nvidia", "tesla", "geforce", "amd", "hbm", "hbm2", "hbm2e", "hbm3", "hbm3e"}
_FORMS = {"sxm": "sxm", "sxm2": "sxm", "sxm4": "sxm", "sxm5": "sxm", "pcie": "pcie", "nvl": "nvl"}
_MEMORY = re.compile(r"^\d+(\.\d+)?gb$")


def gpu_tokens(name: str) -> tuple[frozenset[str], str]:
    """(model tokens, form factor) of a GPU name: "NVIDIA A100-SXM4-80GB" -> ({"a100"}, "sxm")."""
    words = re.sub(r"[-_/,()]", " ", name.lower()).split()
    form = next((_FORMS[w] for w in words if w in _FORMS), "")
    model = frozenset(w for w in words if w not in _GPU_NOISE and w not in _FORMS and not _MEMORY.match(w))
    return model, form


def match_gpu(table: Table, name: str, memory_gib: float | None) -> Mapping[str, Any] | None:
    """The table's GPU for an NVML name and memory size, or None.

    Same model words (memory sizes, "NVIDIA", "Tesla", "HBM3" aside); then the
    same form factor where the name gives one (SXM boards carry none in their
    NVML name, so a name without one prefers SXM); then the closest memory.
    """
    model, form = gpu_tokens(name)
    found = [g for g in table.data["gpus"] if gpu_tokens(g["name"])[0] == model]
    if not found:
        return None
    same_form = [g for g in found if gpu_tokens(g["name"])[1] == (form or "sxm")]
    pool = same_form or found
    return min(pool, key=lambda g: (abs(g["vram_gb"] - memory_gib) if memory_gib is not None else 0.0, g["name"]))


def cpu_key(name: str) -> str:
    """A CPU model name without marks, clock and core count: "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.0GHz"
    -> "intel xeon platinum 8480+"."""
    text = re.sub(r"\((r|tm)\)|@.*$|\b\d+-core\b|\bcpu\b|\bprocessor\b", " ", name.lower())
    return " ".join(text.split())


def match_cpu(table: Table, model_name: str) -> Mapping[str, Any] | None:
    """The table's server CPU whose name is the model name, or the longest one it starts with."""
    key = cpu_key(model_name)
    best = None
    for c in table.data["cpus"]:
        k = cpu_key(c["name"])
        if k and (key == k or key.startswith(k + " ")) and (best is None or len(k) > len(cpu_key(best["name"]))):
            best = c
    return best


def interpolate(points: Sequence[Mapping[str, Any]], x_key: str, x: float) -> tuple[float, float, float]:
    """(kg, min, max) at ``x`` by straight lines between the table's points (extended past the ends)."""
    pts = sorted(points, key=lambda p: p[x_key])
    lo, hi = pts[0], pts[1]
    for a, b in zip(pts, pts[1:]):
        lo, hi = a, b
        if x <= b[x_key]:
            break
    t = (x - lo[x_key]) / (hi[x_key] - lo[x_key])
    kg, low, high = (max(0.0, lo[k] + t * (hi[k] - lo[k])) for k in ("kg", "min", "max"))
    return kg, low, high


# -- one device each ----------------------------------------------------------------------------------------


def gpu_footprint(table: Table, gpu: GpuInfo) -> Footprint:
    seen = f"NVML: {gpu.name}" + (f", {gpu.memory_gib:.1f} GiB" if gpu.memory_gib is not None else "")
    entry = match_gpu(table, gpu.name, gpu.memory_gib)
    if entry is not None:
        return Footprint(GPU, gpu.uuid, entry["kg"], entry["min"], entry["max"], table.source(entry),
                         f"{entry['name']} ({seen})")
    vram = gpu.memory_gib if gpu.memory_gib is not None else 80.0
    kg, lo, hi = interpolate(table.data["gpu_generic"], "vram_gb", vram)
    calls = ", ".join(str(p["body"]["vram"]) for p in table.data["gpu_generic"])
    src = (f"boaviztapi {table.version} (table {table.generated}): POST /v1/component/gpu "
           f"{{\"vram\": V}} for V in {calls} GB, interpolated at {vram:.1f}")
    return Footprint(GPU, gpu.uuid, kg, lo, hi, src, f"not in the table: Boavizta's default GPU ({seen})")


def cpu_footprints(table: Table, model_name: str, sockets: int) -> list[Footprint]:
    entry = match_cpu(table, model_name) if model_name else None
    what = f"{entry['name']} (cpuinfo: {model_name})" if entry is not None else \
        f"not in the table: Boavizta's default CPU (cpuinfo: {model_name or 'no model name'})"
    entry = entry or table.data["cpu_default"]
    return [Footprint(CPU, f"package-{i}", entry["kg"], entry["min"], entry["max"], table.source(entry), what)
            for i in range(max(1, sockets))]


def dram_footprint(table: Table, gib: float, how: str) -> Footprint:
    d = table.data["dram"]
    per = {k: d[k] / d["module_gb"] for k in ("kg", "min", "max")}
    note = f", / {d['module_gb']:g} GiB per module, x {gib:.1f} GiB"
    return Footprint(DRAM, HOST_DEVICE, per["kg"] * gib, per["min"] * gib, per["max"] * gib,
                     table.source(d, note), f"{gib:.1f} GiB ({how}), {per['kg']:.3g} kg/GiB")


def storage_footprint(table: Table, inv: HostInventory) -> Footprint:
    s = table.data["storage"]
    kg = lo = hi = 0.0
    names = []
    for disk in inv.disks:
        if disk.rotational:
            k, a, b = s["hdd"]["kg"], s["hdd"]["min"], s["hdd"]["max"]
        else:
            k, a, b = interpolate(s["ssd"], "capacity_gb", disk.size_bytes / 1e9)
        kg, lo, hi = kg + k, lo + a, hi + b
        names.append(f"{disk.name} {disk.size_bytes / 1e12:.2f} TB {'HDD' if disk.rotational else 'SSD'}")
    src = (f"boaviztapi {table.version} (table {table.generated}): POST /v1/component/ssd {{\"capacity\": GB}} "
           "interpolated by capacity; POST /v1/component/hdd {} per unit")
    return Footprint(STORAGE, HOST_DEVICE, kg, lo, hi, src, ", ".join(names) or "no disk found")


def chassis_footprint(table: Table, kind: Chassis) -> Footprint:
    c = table.data["chassis"][kind.value]
    parts = ", ".join(f"{name} {p['kg']:g}" for name, p in c["parts"].items())
    return Footprint(CHASSIS, HOST_DEVICE, c["kg"], c["min"], c["max"], table.source(c),
                     f"{kind.value} server: {parts} kg")


# -- the host -----------------------------------------------------------------------------------------------


def detected(table: Table, inv: HostInventory, cfg: EmbodiedSection) -> list[Footprint]:
    """Every device's figure from what this host has; DRAM is left out when its size is neither configured
    nor readable (the inventory's problems say why), not charged as 0 GiB."""
    if cfg.dram_gib:
        dram = [dram_footprint(table, float(cfg.dram_gib), "[embodied] dram_gib")]
    else:
        dram = [] if inv.memory_gib is None else [dram_footprint(table, inv.memory_gib, "MemTotal")]
    return [*(gpu_footprint(table, g) for g in inv.gpus), *cpu_footprints(table, inv.cpu_model, inv.sockets),
            *dram, storage_footprint(table, inv), chassis_footprint(table, cfg.chassis)]


def from_archetype(table: Table, name: str, inv: HostInventory) -> list[Footprint]:
    """Every device's figure from a server archetype's parts: this host is taken to be that server."""
    arch = table.data["archetypes"].get(name)
    if arch is None:
        raise UnknownArchetype(f"[embodied] archetype {name!r} is not in the table; known: "
                               f"{', '.join(table.archetypes())}")
    parts = arch["parts"]

    def part(keys: Sequence[str], per_unit: bool = False) -> tuple[float, float, float, str]:
        found = [parts[k] for k in keys if k in parts]
        units = sum(p["units"] for p in found) if per_unit else 1
        fig = tuple(sum(p[k] for p in found) / max(units, 1) for k in ("kg", "min", "max"))
        src = table.source(arch, f", part {'+'.join(k.upper() for k in keys if k in parts)}"
                                 + (f" / {units:g} units" if per_unit else ""))
        return fig[0], fig[1], fig[2], src

    gpu, cpu = part(["gpu"], True), part(["cpu"], True)
    out = [Footprint(GPU, g.uuid, *gpu, f"{parts.get('gpu', {}).get('name', 'no GPU')} of {name} (NVML: {g.name})")
           for g in inv.gpus]
    sockets = int(parts["cpu"]["units"]) if "cpu" in parts else 1
    out += [Footprint(CPU, f"package-{i}", *cpu, f"{parts.get('cpu', {}).get('name', 'CPU')} of {name}")
            for i in range(sockets)]
    out.append(Footprint(DRAM, HOST_DEVICE, *part(["ram"]), f"RAM of {name}"))
    out.append(Footprint(STORAGE, HOST_DEVICE, *part(["ssd", "hdd"]), f"disks of {name}"))
    out.append(Footprint(CHASSIS, HOST_DEVICE, *part(["motherboard", "power_supply", "case", "assembly"]),
                         f"chassis of {name}"))
    return out


def overridden(devices: Sequence[Footprint], device_kg: Mapping[str, float]) -> list[Footprint]:
    """``[embodied] device_kg``: "component:device" first, then "component"; the range is then unknown."""
    out = []
    for d in devices:
        for key in (f"{d.component}:{d.device}", d.component):
            if key in device_kg:
                d = Footprint(d.component, d.device, device_kg[key], None, None,
                              f"[embodied] device_kg \"{key}\" = {device_kg[key]:g}", d.what)
                break
        out.append(d)
    return out


def end_of_life_ns(cfg: EmbodiedSection) -> int | None:
    """When the host's lifetime ends on the wall clock: in_service + lifetime (None: no in_service date)."""
    if not cfg.in_service:
        return None
    start = dt.datetime.combine(dt.date.fromisoformat(cfg.in_service), dt.time(), dt.timezone.utc)
    return int(start.timestamp()) * NS_PER_S + int(cfg.lifetime_years * SECONDS_PER_YEAR * NS_PER_S)


def host_footprint(cfg: EmbodiedSection, inv: HostInventory, table: Table | None = None) -> HostFootprint:
    """This host's devices and their figures, with the lifetime and policies of ``[embodied]``."""
    table = table or load_table()
    if cfg.archetype:
        devices, basis = from_archetype(table, cfg.archetype, inv), f"archetype {cfg.archetype}"
    else:
        devices, basis = detected(table, inv, cfg), "detected hardware"
    return HostFootprint(tuple(overridden(devices, cfg.device_kg)), cfg.lifetime_years * SECONDS_PER_YEAR,
                         end_of_life_ns(cfg), cfg.after_end_of_life, cfg.unused, basis)
