"""The ledger's own ``job_tick`` series, made from each write's points. Pure.

``report --job`` says, beside a job's energy, how long it was charged (the
length of the ticks it was charged in), the host's energy in those ticks (its
share of the host, and ``_idle``'s: the unused capacity beside it), and the
GPU time it held. Those are sums over *the job's ticks*, which rollups of
``wl_job`` and ``wl_node`` cannot give once raw ticks are pruned: a minute
bucket does not say in which of its ticks a job ran. So, as each tick is
written, one ``job_tick`` row per (host, job, user, project) charged in it is
written too, with

* ``active_s``: the tick's length (the longest pool interval on that host);
* ``host_j``: every pool's energy on that host in the tick;
* ``unused_j``: ``_idle``'s energy in it;
* ``gpu_held_s``: the interval of each GPU pool the job was charged on.

All are integer micro-units taken from the tick's quantized points, so they
roll up exactly like the rest (store/schema.py ``DERIVED``), and the first
tick's start and the last tick's end ride along as MIN/MAX (``EXTREMA``).

A job charged under two projects in one tick has one row per project; read
without a project filter, that tick counts once per project (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from wattledger.model.jobs import IDLE
from wattledger.model.points import SCHEMA, WL_JOB, WL_NODE, Point
from wattledger.store.quantize import Quantized
from wattledger.store.schema import JOB_TICK, tags_of

_NODE = {t: i for i, t in enumerate(SCHEMA[WL_NODE][0])}
_JOB = {t: i for i, t in enumerate(SCHEMA[WL_JOB][0])}
_KEY = tuple(_JOB[t] for t in tags_of(JOB_TICK)[1:])  # job, user, project (host is the tick's)


@dataclass
class _Tick:
    """One (time, host): its pools' intervals and energy, _idle's energy, the jobs charged and their GPUs."""

    interval_us: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (component, device, source)
    energy_uj: int = 0
    idle_uj: int = 0
    jobs: dict[tuple[str, ...], set[tuple[str, str, str]]] = field(default_factory=dict)


def _collect(items: Sequence[Quantized]) -> dict[tuple[int, str], _Tick]:
    ticks: dict[tuple[int, str], _Tick] = {}
    for q in items:
        m = q.point.measurement
        if m == WL_NODE:
            t = ticks.setdefault((q.point.time_ns, q.tags[_NODE["host"]]), _Tick())
            pool = (q.tags[_NODE["component"]], q.tags[_NODE["device"]], q.tags[_NODE["source"]])
            t.interval_us[pool] = q.ints.get("interval_s") or 0
            t.energy_uj += q.ints.get("energy_j") or 0
        elif m == WL_JOB:
            t = ticks.setdefault((q.point.time_ns, q.tags[_JOB["host"]]), _Tick())
            key = tuple(q.tags[i] for i in _KEY)
            gpus = t.jobs.setdefault(key, set())
            if q.tags[_JOB["component"]] == "gpu":
                gpus.add((q.tags[_JOB["component"]], q.tags[_JOB["device"]], q.tags[_JOB["source"]]))
            if q.tags[_JOB["job"]] == IDLE:
                t.idle_uj += q.ints.get("energy_j") or 0
    return ticks


def derive(items: Sequence[Quantized]) -> list[Quantized]:
    """The ``job_tick`` rows of these points (whole ticks: every wl_node and wl_job point of each tick)."""
    out = []
    for (time_ns, host), t in _collect(items).items():
        if not t.interval_us:
            continue  # no pool on that host in this write: nothing to measure the jobs against
        active_us = max(t.interval_us.values())
        for key, gpus in t.jobs.items():
            ints: dict[str, int | None] = {
                "active_s": active_us, "host_j": t.energy_uj, "unused_j": t.idle_uj,
                "gpu_held_s": sum(t.interval_us.get(g, 0) for g in gpus)}
            tags = (host, *key)
            point = Point(JOB_TICK, dict(zip(tags_of(JOB_TICK), tags)), {}, time_ns)
            out.append(Quantized(point, tags, ints))
    return out
