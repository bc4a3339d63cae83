"""Additive fields to integer micro-units, with conservation kept exact. Pure.

The ledger stores every additive field (model/points.py ADDITIVE) as an
integer number of micro-units, so that sums over any set of rows are exact
and do not depend on the order or resolution they are taken in. Rounding each
row alone would let the jobs of a pool drift from the pool by up to half a
micro-joule per row and tick; instead, per tick and pool, the jobs' energies
are apportioned (largest remainder) so that they add up to the pool's rounded
energy *exactly*. Every rollup bucket is a sum of ticks, so Σ jobs = node
then holds exactly in every bucket too.

The points themselves are rewritten with the quantized values (as floats,
``micro / 1e6``, which round-trip), so the ledger's rows, the outbox and
InfluxDB all hold the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.store.schema import CONSERVED, MICRO, POOL_TAGS, additive


@dataclass(frozen=True)
class Quantized:
    """A point with its additive fields as floats of whole micro-units, and those integers."""

    point: Point
    micro: dict[str, int | None]  # additive field -> micro-units (None: not given or not finite)


def to_micro(value: float | None) -> int | None:
    if value is None or not math.isfinite(value):
        return None
    return int(round(value * MICRO))


def apportion(target: int, shares: Sequence[float]) -> list[int] | None:
    """Integers within 1 of each share that sum to ``target`` exactly (largest remainder first).

    None when the shares do not add up to the target within rounding (then
    there is nothing to conserve and each share is rounded on its own).
    """
    floors = [math.floor(s) for s in shares]
    short = target - sum(floors)
    if not 0 <= short <= len(shares):
        return None
    order = sorted(range(len(shares)), key=lambda i: (floors[i] - shares[i], -shares[i], i))
    for i in order[:short]:
        floors[i] += 1
    return floors


def _pool(p: Point) -> tuple[object, ...]:
    return (p.time_ns, *(p.tags.get(t, "") for t in POOL_TAGS))


def _conserved(points: Sequence[Point], micro: list[dict[str, int | None]]) -> None:
    """Per tick and pool, make the jobs' CONSERVED micro-units add up to the node's."""
    node_of: dict[tuple[object, ...], int] = {}
    jobs_of: dict[tuple[object, ...], list[int]] = {}
    for i, p in enumerate(points):
        if p.measurement == WL_NODE and micro[i].get(CONSERVED) is not None:
            node_of[_pool(p)] = i
        elif p.measurement == WL_JOB and p.fields.get(CONSERVED) is not None and micro[i].get(CONSERVED) is not None:
            jobs_of.setdefault(_pool(p), []).append(i)
    for pool, jobs in jobs_of.items():
        node = node_of.get(pool)
        if node is None:
            continue
        target = micro[node][CONSERVED]
        assert target is not None
        shares = [float(points[i].fields[CONSERVED]) * MICRO for i in jobs]
        parts = apportion(target, shares)
        if parts is not None:
            for i, part in zip(jobs, parts):
                micro[i][CONSERVED] = part


def quantize(points: Sequence[Point]) -> list[Quantized]:
    """The points with additive fields in whole micro-units, jobs apportioned to their pool's energy."""
    micro = [{f: to_micro(_number(p.fields.get(f))) for f in additive(p.measurement) if f in p.fields}
             for p in points]
    _conserved(points, micro)
    out = []
    for p, m in zip(points, micro):
        if not m:
            out.append(Quantized(p, m))
            continue
        fields = dict(p.fields)
        for f, v in m.items():
            if v is not None:
                fields[f] = v / MICRO
        out.append(Quantized(Point(p.measurement, p.tags, fields, p.time_ns), m))
    return out


def _number(value: object) -> float | None:
    if value is None:
        return None
    return float(value)  # type: ignore[arg-type]
