"""Replaying a time range from the ledger to the sink (``wattledger resend``, issue 17 item 7).

After a spool overflow (its log line gives the exact range), a lost
InfluxDB volume or a new server, the ledger's raw rows of a range are read
back as points and written again. Every point carries its own timestamp, so
a point InfluxDB already has is overwritten by the same values: resending is
idempotent and can be repeated or overlapped freely.

Raw ticks can be resent only while the ledger keeps them (``[ledger]
raw_days``), and the result says from when on it could send them. For a
fleet's tiered InfluxDB (``tiers``) the ledger's minute and hour sums of the
range are sent too (docs/fleet.md), as far back as the ledger keeps them. Answers are handled as delivery handles them (docs/delivery.md): a
batch too large is halved, bad points are isolated and skipped (counted),
and a server that is down or refuses our credentials stops the resend with
the time to resume from.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from wattledger.agent.sinks.base import Outcome, Sink, WriteResult
from wattledger.model.points import SCHEMA, Point
from wattledger.model.units import HOUR_NS
from wattledger.store.ledger import Ledger
from wattledger.store.schema import HOUR, MINUTE

RETRIES = 3


@dataclass
class Resent:
    since_ns: int  # where raw ticks were available from (>= the asked since)
    until_ns: int
    points: int = 0  # read from the ledger
    sent: int = 0
    refused: int = 0
    refused_reason: str = ""
    stopped: WriteResult | None = None  # the answer that stopped it (None: finished)
    resume_ns: int | None = None  # where to start again after a stop


def ledger_points(ledger: Ledger, since_ns: int, until_ns: int, chunk_ns: int = HOUR_NS) -> Iterator[list[Point]]:
    """The ledger's raw points of [since, until), every measurement, a chunk of time at a time."""
    for lo in range(since_ns, until_ns, chunk_ns):
        hi = min(until_ns, lo + chunk_ns)
        points = []
        for m, (tags, fields) in SCHEMA.items():
            for r in ledger.rows(m, lo, hi):
                points.append(Point(m, {t: str(r[t]) for t in tags if r.get(t)},
                                    {f: float(r[f]) for f in fields if r.get(f) is not None}, int(r["time_ns"])))
        points.sort(key=lambda p: p.time_ns)
        if points:
            yield points


def rollup_points(ledger: Ledger, since_ns: int, until_ns: int, chunk_ns: int = 24 * HOUR_NS
                  ) -> Iterator[list[Point]]:
    """The ledger's minute and hour buckets that start in [since, until), as tier points, a day at a time."""
    for level in (MINUTE, HOUR):
        for lo in range(level.ceil(since_ns), until_ns, chunk_ns):
            points = ledger.rollup_points(level, lo, min(until_ns, lo + chunk_ns))
            if points:
                yield points


def _write(sink: Sink, points: list[Point], out: Resent, sleep: Callable[[float], None]) -> bool:
    """Send one batch (halving and isolating as needed); False when the sink stopped us."""
    result = sink.write(points)
    for attempt in range(RETRIES):
        if result.outcome is not Outcome.RETRY:
            break
        sleep(min(30.0, result.retry_after_s or 2.0 ** attempt))
        result = sink.write(points)
    if result.ok:
        out.sent += len(points)
        return True
    if result.outcome in (Outcome.TOO_LARGE, Outcome.REJECTED) and len(points) > 1:
        half = len(points) // 2
        return _write(sink, points[:half], out, sleep) and _write(sink, points[half:], out, sleep)
    if result.outcome in (Outcome.TOO_LARGE, Outcome.REJECTED):
        out.refused += 1
        out.refused_reason = out.refused_reason or f"HTTP {result.status}: {result.detail}"
        return True
    out.stopped, out.resume_ns = result, points[0].time_ns
    return False


def resend(ledger: Ledger, sink: Sink, since_ns: int, until_ns: int, *, batch_points: int = 5000,
           raw_kept_ns: int = 0, tiers: bool = False, sleep: Callable[[float], None] = time.sleep) -> Resent:
    """Write the ledger's raw points of [max(since, raw_kept), until) to ``sink`` again (and with ``tiers``
    its minute and hour buckets that start in [since, until))."""
    start = max(since_ns, raw_kept_ns)
    out = Resent(start, until_ns)
    chunks = ledger_points(ledger, start, until_ns)
    if tiers:
        chunks = itertools.chain(chunks, rollup_points(ledger, since_ns, until_ns))
    for points in chunks:
        out.points += len(points)
        for i in range(0, len(points), batch_points):
            if not _write(sink, points[i:i + batch_points], out, sleep):
                return out
    return out
