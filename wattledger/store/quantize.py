"""Additive fields to integers of a small unit, with conservation kept exact. Pure.

The ledger stores every additive field (model/points.py ADDITIVE) as an
integer number of micro-units (nano-grams for grams: store/schema.py
``scale``), so that sums over any set of rows are exact and do not depend on
the order or resolution they are taken in. Rounding each row alone would let
the jobs of a pool drift from the pool by up to half a micro-joule per row and
tick; instead, per tick and pool, the jobs' energies are apportioned (largest
remainder) so that they add up to the pool's rounded energy *exactly*. Every
rollup bucket is a sum of ticks, so Σ jobs = node then holds exactly in every
bucket too.

The points themselves are rewritten with the quantized values (as floats,
``ints / 1e6``, which round-trip), so the ledger's rows, the outbox, InfluxDB,
stdout and Prometheus all hold the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from operator import itemgetter

from wattledger.model.points import SCHEMA, WL_JOB, WL_NODE, Point
from wattledger.store.schema import CONSERVED, POOL_TAGS, additive, scale


class Quantized:
    """A point, its SCHEMA tags in order (``tags``), and its additive fields as the ledger's integers
    (``ints``, in ``scale(field)`` per unit; None for a value that is not finite). ``as_point`` is the point
    with those values as floats."""

    __slots__ = ("point", "tags", "ints")

    def __init__(self, point: Point, tags: tuple[str, ...], ints: dict[str, int | None]) -> None:
        self.point, self.tags, self.ints = point, tags, ints

    def as_point(self) -> Point:
        if not self.ints:
            return self.point
        fields = dict(self.point.fields)
        for f, v in self.ints.items():
            if v is not None:
                fields[f] = v / scale(f)
        return Point(self.point.measurement, self.point.tags, fields, self.point.time_ns)


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


def pool_index(measurement: str) -> tuple[int, ...]:
    """Where the pool's tags (POOL_TAGS) sit in a measurement's SCHEMA tags."""
    return _spec(measurement)[2]


@lru_cache(maxsize=None)
def _spec(measurement: str) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...], tuple[int, ...]]:
    """A measurement's SCHEMA tags, its additive fields with their scales, where its pool's tags are."""
    tags = SCHEMA[measurement][0] if measurement in SCHEMA else ()
    pool = tuple(tags.index(t) for t in POOL_TAGS) if all(t in tags for t in POOL_TAGS) else ()
    return tags, tuple((f, scale(f)) for f in additive(measurement)), pool


def _conserve(items: Sequence[Quantized]) -> None:
    """Per tick and pool, make the jobs' CONSERVED integers add up to the node's."""
    nodes: dict[tuple[object, ...], int] = {}
    jobs: dict[tuple[object, ...], list[Quantized]] = {}
    for q in items:
        m = q.point.measurement
        if (m != WL_NODE and m != WL_JOB) or q.ints.get(CONSERVED) is None:
            continue
        key: tuple[object, ...] = (q.point.time_ns, itemgetter(*_spec(m)[2])(q.tags))
        if m == WL_NODE:
            nodes[key] = q.ints[CONSERVED]  # type: ignore[assignment]
        else:
            jobs.setdefault(key, []).append(q)
    for pool, group in jobs.items():
        target = nodes.get(pool)
        if target is None:
            continue
        parts = apportion(target, [float(q.point.fields[CONSERVED]) * scale(CONSERVED) for q in group])
        if parts is not None:
            for q, part in zip(group, parts):
                q.ints[CONSERVED] = part


def quantize(points: Sequence[Point]) -> list[Quantized]:
    """The points with additive fields in whole integers of their scale, jobs apportioned to their pool's energy."""
    out = []
    isfinite = math.isfinite
    for p in points:
        names, fields_add, _ = _spec(p.measurement)
        tags = p.tags
        fields = p.fields
        ints: dict[str, int | None] = {}
        for f, per_unit in fields_add:
            v = fields.get(f)
            if v is not None:
                ints[f] = round(v * per_unit) if isfinite(v) else None
        out.append(Quantized(p, tuple([tags.get(t) or "" for t in names]), ints))
    _conserve(out)
    return out
