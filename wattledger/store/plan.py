"""Which resolution to read each part of a time range from: the coarsest that covers it exactly. Pure.

A range [since, until) is covered by whole days where they are available
(and where the caller allows them: a report needs one carbon intensity and
PUE for all 24 hours of a day), whole hours, whole minutes, then raw ticks at
the edges. Data at each resolution is complete on one span (``Span``): from
its oldest kept bucket to its ``folded`` mark (raw: from its oldest kept tick
on). Compaction prunes a resolution only below the next coarser one's mark,
so the spans nest and every instant since the oldest day is held somewhere;
the one thing that can be lost is sub-bucket detail at the start of an old
range (a window starting at 10:17 a year ago: only whole hours are left). Then
the plan starts at the next boundary it can cover and says so (``since_ns``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from wattledger.store.schema import Level


@dataclass(frozen=True)
class Span:
    """A level's complete data: buckets in [kept_ns, folded_ns)."""

    level: Level
    kept_ns: int
    folded_ns: int


@dataclass(frozen=True)
class Segment:
    """Read [lo_ns, hi_ns) from ``level`` (None: raw ticks)."""

    level: Level | None
    lo_ns: int
    hi_ns: int


@dataclass(frozen=True)
class Plan:
    segments: list[Segment]
    since_ns: int  # where the covered range starts (> the asked since when old detail is gone)
    until_ns: int  # where it ends (< the asked until when the range ends in old, pruned detail)
    gaps: list[tuple[int, int]]  # holes between segments (none while retentions nest, as config enforces)


Allowed = Mapping[Level, Callable[[int], bool]]  # per level that may refuse buckets: is this bucket usable?


def _runs(level: Level, lo: int, hi: int, allowed: Allowed) -> list[tuple[int, int, bool]]:
    """[lo, hi) (bucket-aligned) as maximal runs of buckets that ``allowed`` accepts or refuses."""
    ok = allowed.get(level)
    if ok is None:
        return [(lo, hi, True)]
    runs: list[tuple[int, int, bool]] = []
    for b in range(lo, hi, level.size_ns):
        good = ok(b)
        if runs and runs[-1][2] == good:
            runs[-1] = (runs[-1][0], b + level.size_ns, good)
        else:
            runs.append((b, b + level.size_ns, good))
    return runs


def _cover(lo: int, hi: int, spans: Sequence[Span], raw_kept_ns: int, ok: Allowed) -> list[Segment]:
    if lo >= hi:
        return []
    if not spans:
        start = max(lo, raw_kept_ns)
        return [Segment(None, start, hi)] if start < hi else []
    span, finer = spans[0], spans[1:]
    a = max(span.level.ceil(lo), span.level.ceil(span.kept_ns))
    b = min(span.level.floor(hi), span.folded_ns)
    if a >= b:
        return _cover(lo, hi, finer, raw_kept_ns, ok)
    out = _cover(lo, a, finer, raw_kept_ns, ok)
    for r_lo, r_hi, good in _runs(span.level, a, b, ok):
        out += [Segment(span.level, r_lo, r_hi)] if good else _cover(r_lo, r_hi, finer, raw_kept_ns, ok)
    return out + _cover(b, hi, finer, raw_kept_ns, ok)


def plan(since_ns: int, until_ns: int, spans: Sequence[Span], raw_kept_ns: int,
         allowed: Allowed | None = None) -> Plan:
    """Segments covering [since, until) coarsest-first; ``spans`` coarsest first (days, hours, minutes).

    ``allowed[level](bucket_ns)`` may refuse a bucket of that level (it is then
    read at the next finer level): a report refuses days whose hours differ in
    intensity. Levels not in ``allowed`` take every bucket.
    """
    segments = _merge(_cover(since_ns, until_ns, spans, raw_kept_ns, allowed or {}))
    if not segments:
        return Plan([], until_ns, until_ns, [])
    gaps = [(a.hi_ns, b.lo_ns) for a, b in zip(segments, segments[1:]) if a.hi_ns < b.lo_ns]
    return Plan(segments, segments[0].lo_ns, segments[-1].hi_ns, gaps)


def _merge(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segments:
        if out and out[-1].level == s.level and out[-1].hi_ns == s.lo_ns:
            out[-1] = Segment(s.level, out[-1].lo_ns, s.hi_ns)
        else:
            out.append(s)
    return out
