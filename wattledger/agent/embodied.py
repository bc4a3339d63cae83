"""Each tick's embodied carbon: the host's devices' accrual charged by the tick's pools, as ``wl_embodied`` points.

The pools of a tick (``agent.pools``) carry the intervals, drivers and holders
that charged its energy; embodied carbon rides on them
(``accounting.embodied``):

* each GPU pool: its GPU's accrual over the pool's interval (a MIG instance:
  its slices' share, the unallocated slices the rest), to its holders;
* the host's CPU sockets, DRAM, storage and chassis: over the interval of the
  host's first CPU pool (``package-0``, or the model's ``host``), by its CPU
  seconds and vCPU-second capacity;
* a restart's gap pools: to ``_unobserved``.

Points: one ``wl_embodied`` row per (job, GPU pool) with ``embodied_g``, and
one per job for the host's parts (component and device ``host``) with
``embodied_g`` and its ``cpu_g``, ``dram_g``, ``storage_g`` and
``chassis_g`` (one row, not four: the parts share one driver, and each row
is an InfluxDB series per job). Σ jobs + ``_idle`` of each field = the
accrual, per tick.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from wattledger.accounting.embodied import DeviceKey, DeviceUse, accrual_g, charge_tick, parent_shares
from wattledger.agent.pools import PoolInput
from wattledger.model.embodied import GPU, HOST_DEVICE, HOST_PARTS, Footprint, HostFootprint
from wattledger.model.gpu import UNALLOCATED_SUFFIX
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_EMBODIED, Point
from wattledger.model.policies import StaticPolicy

HOST = "host"  # the component of the host parts' rows


@dataclass
class EmbodiedCharger:
    footprint: HostFootprint
    host: str
    unknown_gpus: set[str] = field(default_factory=set)  # GPU pools with no figure (appeared after start)

    def _accrual(self, device: Footprint, interval_s: float, wall_ns: int) -> float:
        f = self.footprint
        return accrual_g(device.kg, f.lifetime_s, interval_s, wall_ns, f.end_ns, f.after_end)

    def gpu_uses(self, inputs: Sequence[PoolInput], wall_ns: int) -> list[DeviceUse]:
        """Each GPU pool's share of its GPU's accrual, with the pool's drivers and holders."""
        by_gpu: dict[str, list[PoolInput]] = {}
        for p in inputs:
            if p.component == GPU:
                by_gpu.setdefault(p.parent or p.device, []).append(p)
        uses = []
        for uuid, pools in sorted(by_gpu.items()):
            device = self.footprint.gpu(uuid)
            if device is None:
                self.unknown_gpus.add(uuid)
                continue
            accrual = self._accrual(device, pools[0].interval_s, wall_ns)
            if pools[0].parent:
                parts = parent_shares(accrual, {p.device: p.share for p in pools}, uuid + UNALLOCATED_SUFFIX)
            else:
                parts = {pools[0].device: accrual}
            uses += [DeviceUse(GPU, p.device, parts.get(p.device, 0.0), p.driver_s, p.holders, p.interval_s,
                               StaticPolicy.OCCUPANCY, p.unobserved) for p in pools]
        return uses

    def host_uses(self, inputs: Sequence[PoolInput], wall_ns: int) -> list[DeviceUse]:
        """The host's parts over the first CPU pool's interval, by its CPU seconds and capacity."""
        cpu = sorted((p for p in inputs if p.component == "cpu"), key=lambda p: p.device)
        if not cpu:
            return []
        p = cpu[0]
        capacity_s = p.capacity_s if p.capacity_s is not None else p.interval_s
        return [DeviceUse(d.component, d.device, self._accrual(d, p.interval_s, wall_ns), p.driver_s, None,
                          capacity_s, StaticPolicy.CAPACITY, p.unobserved) for d in self.footprint.host_parts()]

    def charges(self, inputs: Sequence[PoolInput], wall_ns: int) -> dict[DeviceKey, dict[JobKey, float]]:
        uses = self.gpu_uses(inputs, wall_ns) + self.host_uses(inputs, wall_ns)
        return charge_tick(uses, self.footprint.unused)

    def points(self, inputs: Sequence[PoolInput], wall_ns: int,
               fold: Callable[[JobKey], JobKey] = lambda job: job) -> list[Point]:
        """This tick's wl_embodied points; ``fold`` names the job a charge goes to (the tag cap)."""
        return embodied_points(self.host, self.charges(inputs, wall_ns), wall_ns, fold)


def embodied_points(host: str, charges: Mapping[DeviceKey, Mapping[JobKey, float]], wall_ns: int,
                    fold: Callable[[JobKey], JobKey] = lambda job: job) -> list[Point]:
    """One row per (job, GPU pool) and one per job for the host's parts, with the parts as fields."""
    rows: dict[tuple[JobKey, str, str], dict[str, float]] = {}
    for (component, device), shares in sorted(charges.items()):
        for job, g in shares.items():
            if component == GPU:
                fields = rows.setdefault((fold(job), GPU, device), {"embodied_g": 0.0})
            else:
                fields = rows.setdefault((fold(job), HOST, HOST_DEVICE),
                                         {"embodied_g": 0.0, **{f"{c}_g": 0.0 for c in HOST_PARTS}})
                fields[f"{component}_g"] += g
            fields["embodied_g"] += g
    return [Point(WL_EMBODIED, {"host": host, "job": job.tag, "user": job.user, "project": job.project,
                                "phase": job.phase, "component": component, "device": device}, fields, wall_ns)
            for (job, component, device), fields in sorted(rows.items())]
