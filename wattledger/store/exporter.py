"""The agent's export of the ledger's rollups into the outbox, a bounded piece per tick (store/export.py).

``RollupExporter.step()`` runs after each tick's compaction (``Agent.commit``) when
the sink is a fleet's tiered InfluxDB (``[influx] layout = "tiered"``): in
one transaction it spools the minute and hour buckets folded since the last
step (at most ``max_buckets`` of each), those a late tick changed, and moves
the ``exported:`` watermarks. A kill -9 therefore loses or doubles nothing:
the spooling and the mark move together, and a bucket sent twice overwrites
itself in InfluxDB.

On a ledger that never exported, the marks start at the folded marks: the
history before is not sent (``wattledger resend --since ...``
sends it, docs/fleet.md).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from wattledger.model.points import Point
from wattledger.store import export, spool
from wattledger.store.errors import StorageError
from wattledger.store.ledger import Ledger
from wattledger.store.schema import Level


@dataclass
class ExportStep:
    points: int = 0
    buckets: int = 0
    resent: int = 0  # buckets sent again after a late tick changed them


class RollupExporter:
    def __init__(self, ledger: Ledger, *, max_buckets: int = 60) -> None:
        self.ledger = ledger
        self.max_buckets = max_buckets
        self.points = 0  # spooled since start, for benchmarks

    def step(self) -> ExportStep:
        """Spool what is final and not yet spooled (bounded); cheap when nothing is."""
        try:
            with self.ledger._tx("export") as db:
                done = ExportStep()
                for level in export.TIER_OF:
                    self._level(db, level, done)
                dropped = spool.enforce_bound(db, self.ledger.spool_max_rows) if done.points else None
        except StorageError as e:  # a full disk, a damaged file: the ledger says it once (or raises)
            self.ledger.on_fault(e)
            return ExportStep()
        if dropped is not None:
            self.ledger.overflow_dropped(dropped)
        self.points += done.points
        return done

    def _level(self, db: sqlite3.Connection, level: Level, done: ExportStep) -> None:
        ready = export.ready(db, level)
        changed = export.dirty(db, level, self.max_buckets)
        marks = [export.exported(db, m, level) for m in export.EXPORTED]
        if not changed and None not in marks and min(m for m in marks if m is not None) >= ready:
            return  # most ticks: nothing folded since the last step
        points: list[Point] = export.points_at(db, level, changed) if changed else []
        export.clear_dirty(db, level, changed)
        done.resent += len(changed)
        for m in export.EXPORTED:
            mark = export.exported(db, m, level)
            if mark is None:
                export.set_exported(db, m, level, ready)
        start = export.next_bucket(db, level, min(export.exported(db, m, level) or 0 for m in export.EXPORTED))
        if start < ready:
            end = min(ready, level.floor(start) + self.max_buckets * level.size_ns)
            points += export.points_between(db, level, start, end)
            for m in export.EXPORTED:
                export.set_exported(db, m, level, end)
            done.buckets += (end - level.floor(start)) // level.size_ns
        if points:
            spool.put(db, points)
            done.points += len(points)
