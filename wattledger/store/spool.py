"""The outbox: points waiting for a remote sink, bounded by whole ticks.

Every write (one tick of the agent, one carbon sync) is one *tick* in the
outbox: its rows share a ``tick`` number. When the outbox holds more than
``[spool] max_rows``, the oldest whole ticks are dropped, so InfluxDB never
gets half a tick (a ``wl_node`` without its ``wl_job`` rows). Drops are
counted (``meta`` ``dropped``, ``wl_agent.dropped``) and each overflow episode
is logged twice: when it starts, and when it ends with how many ticks and
points went, their time range, and the ``wattledger resend`` command that
replays them from the ledger.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from wattledger.model.points import Point
from wattledger.model.tiers import RAW
from wattledger.util.timeutil import iso

log = logging.getLogger("wattledger.spool")


def bump(db: sqlite3.Connection, key: str, n: int) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?", (key, str(n), n))


def put(db: sqlite3.Connection, points: Sequence[Point]) -> None:
    """Spool one write's points as one tick."""
    bump(db, "outbox_ticks", 1)
    (tick,) = db.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'outbox_ticks'").fetchone()
    db.executemany(
        "INSERT INTO outbox (measurement, tags, fields, time_ns, tick, tier) VALUES (?, ?, ?, ?, ?, ?)",
        [(p.measurement, json.dumps(dict(p.tags), sort_keys=True), json.dumps(dict(p.fields)), p.time_ns, tick,
          None if p.tier == RAW else p.tier) for p in points])
    bump(db, "outbox_rows", len(points))


@dataclass(frozen=True)
class Dropped:
    ticks: int
    points: int
    first_ns: int
    last_ns: int


def enforce_bound(db: sqlite3.Connection, max_rows: int) -> Dropped | None:
    """Drop the oldest whole ticks until at most ``max_rows`` rows wait; what was dropped (None: nothing)."""
    (count,) = db.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'outbox_rows'").fetchone()
    excess = count - max_rows
    if excess <= 0:
        return None
    # The row that must go last, then every row of its tick: whole ticks only (ids grow with ticks).
    (last_id, last_tick) = db.execute("SELECT id, tick FROM outbox ORDER BY id LIMIT 1 OFFSET ?",
                                      (excess - 1,)).fetchone()
    after = db.execute("SELECT id FROM outbox WHERE id > ? AND tick IS NOT ? ORDER BY id LIMIT 1",
                       (last_id, last_tick)).fetchone()
    bound = after[0] if after else last_id + 1
    points, ticks, first_ns, last_ns = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT IFNULL(tick, -time_ns)), MIN(time_ns), MAX(time_ns) FROM outbox "
        "WHERE id < ?", (bound,)).fetchone()
    db.execute("DELETE FROM outbox WHERE id < ?", (bound,))
    bump(db, "dropped", points)
    bump(db, "dropped_ticks", ticks)
    bump(db, "outbox_rows", -points)
    return Dropped(ticks, points, first_ns, last_ns)


class OverflowLog:
    """One overflow episode: logged when it starts and when it ends, with its counts and range."""

    def __init__(self, path: object, max_rows: int) -> None:
        self.path, self.max_rows = path, max_rows
        self.ticks = self.points = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    @property
    def active(self) -> bool:
        return self.first_ns is not None

    def dropped(self, d: Dropped) -> None:
        if not self.active:
            log.warning("spool full: more than %d points wait for the sink; dropping the oldest whole ticks "
                        "(counted in wl_agent.dropped; they stay in the ledger, and the end of this episode "
                        "will say how to resend them). Raise [spool] max_rows or fix the sink.", self.max_rows)
        self.ticks += d.ticks
        self.points += d.points
        self.first_ns = d.first_ns if self.first_ns is None else min(self.first_ns, d.first_ns)
        self.last_ns = d.last_ns if self.last_ns is None else max(self.last_ns, d.last_ns)

    def calm(self) -> None:
        """A write that dropped nothing: the episode (if any) is over."""
        if self.first_ns is None or self.last_ns is None:
            return
        until = self.last_ns + 1
        log.warning("spool overflow over: %d tick(s), %d point(s) from %s to %s were dropped from the spool and "
                    "not delivered; they are still in the ledger while its raw ticks are kept. Replay them with: "
                    "wattledger resend --since %s --until %s", self.ticks, self.points, iso(self.first_ns),
                    iso(self.last_ns), iso_us(self.first_ns), iso_us(until, up=True))
        self.ticks = self.points = 0
        self.first_ns = self.last_ns = None


def iso_us(t_ns: int, up: bool = False) -> str:
    """ISO-8601 with microseconds (rounded down, or ``up``), so a resend range holds the whole dropped one."""
    us = -((-t_ns) // 1000) if up else t_ns // 1000
    seconds, frac = divmod(us, 1_000_000)
    return iso(seconds * 1_000_000_000)[:-1] + f".{frac:06d}Z"
