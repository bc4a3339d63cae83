"""The cardinality guard: a per-user cap on distinct tag sets per UTC day (issue 17, item 6).

Every distinct (job, project, phase) of a user becomes InfluxDB series (one
per pool it draws from), and InfluxDB refuses new series past its
``max-series-per-database``: one user starting thousands of uniquely tagged
processes could make everybody's new jobs fail to write. So each user may
start ``[jobs] max_tags_per_user_day`` tag sets per UTC day; after that a
new tag set is charged to that user's ``_overflow`` job (``jobs.overflow``),
which is one series set whatever the number of tags. Tag sets admitted
earlier in the day keep their own rows; reserved jobs (``_untagged``,
``_system``, ...) are never counted or folded. The energy is never lost:
folding only renames whose charge it is (``fold`` sums the charges).

The user is told once per day: one WARNING in the agent's log, and
``wattledger doctor`` lists who is over the cap today from the state file
(``tag-budget.json`` in the state dir, written atomically when the set of
tags changes, and read back after a restart so that a restart does not
renew anybody's budget). Pure core; the file is touched only by
``load``/``save`` and ``read_usage``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattledger.accounting.attribution import Charge
from wattledger.model.jobs import JobKey, overflow
from wattledger.model.units import NS_PER_S
from wattledger.util.logonce import LogOnce

log = logging.getLogger("wattledger.tags")

TAGS_FILE = "tag-budget.json"
DAY_NS = 86_400 * NS_PER_S
MAX_FOLDED_KEPT = 1000  # distinct folded tag sets remembered per user (the count says "at least")
_FORMAT = 1

TagSet = tuple[str, str, str]  # (job tag, project, phase)


def utc_day(wall_ns: int) -> int:
    """Days since the epoch, UTC: the guard's budget period."""
    return wall_ns // DAY_NS


@dataclass
class UserTags:
    admitted: set[TagSet] = field(default_factory=set)
    folded: set[TagSet] = field(default_factory=set)


@dataclass(frozen=True)
class OverCap:
    """A user over the cap today, as ``doctor`` reports it."""

    user: str
    admitted: int
    folded: int  # distinct tag sets folded into _overflow (at least: see MAX_FOLDED_KEPT)
    cap: int


class TagGuard:
    """Admits each user's first ``cap`` tag sets of the day; folds the rest into the user's _overflow job."""

    def __init__(self, cap: int, state_dir: Path | None = None) -> None:
        self.cap = cap
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.day: int | None = None
        self.users: dict[str, UserTags] = {}
        self._changed = False
        self._once = LogOnce(log)

    # -- pure core -------------------------------------------------------------
    def job(self, job: JobKey, wall_ns: int) -> JobKey:
        """The job that ``job``'s energy is charged to: itself, or its user's _overflow."""
        if job.reserved or not job.user:
            return job
        self._roll(utc_day(wall_ns))
        tags = self.users.setdefault(job.user, UserTags())
        key = (job.tag, job.project, job.phase)
        if key in tags.admitted:
            return job
        if len(tags.admitted) < self.cap:
            tags.admitted.add(key)
            self._changed = True
            return job
        if key not in tags.folded and len(tags.folded) < MAX_FOLDED_KEPT:
            tags.folded.add(key)
            self._changed = True
        self._once.problem(
            ("over", job.user, self.day),
            "user %s started more than %d distinct tag sets (job, project, phase) today (UTC): from %r on, "
            "new ones are charged to %s's %s job until midnight UTC, so that InfluxDB's series limit stays "
            "out of reach. Raise [jobs] max_tags_per_user_day if that many are legitimate (see `wattledger "
            "doctor`)", logging.WARNING, job.user, self.cap, job.tag, job.user, overflow(job.user).tag)
        return overflow(job.user)

    def fold(self, charges: Mapping[JobKey, Charge], wall_ns: int) -> dict[JobKey, Charge]:
        """The charges with every job over its user's cap renamed to that user's _overflow (summed)."""
        self._roll(utc_day(wall_ns))
        if all(self._admitted(job) for job in charges):  # the usual tick: nothing new, nothing to rename
            return dict(charges)
        out: dict[JobKey, Charge] = {}
        for job in sorted(charges):  # first come, first admitted: in a stable order within a tick
            target = self.job(job, wall_ns)
            c = charges[job]
            if target in out:
                o = out[target]
                c = Charge(o.dynamic_j + c.dynamic_j, o.static_j + c.static_j, o.driver_s + c.driver_s)
            out[target] = c
        return out

    def _admitted(self, job: JobKey) -> bool:
        if job.reserved or not job.user:
            return True
        tags = self.users.get(job.user)
        return tags is not None and (job.tag, job.project, job.phase) in tags.admitted

    def over_cap(self) -> list[OverCap]:
        return [OverCap(user, len(t.admitted), len(t.folded), self.cap)
                for user, t in sorted(self.users.items()) if t.folded]

    def _roll(self, day: int) -> None:
        if day != self.day:
            self.day, self.users, self._changed = day, {}, True
            self._once.cleared_where(lambda k: isinstance(k, tuple) and k[0] == "over")

    def to_json(self) -> dict[str, Any]:
        return {"format": _FORMAT, "day": self.day, "cap": self.cap, "users": {
            user: {"admitted": sorted(t.admitted), "folded": sorted(t.folded)}
            for user, t in sorted(self.users.items())}}

    def load_json(self, data: Mapping[str, Any]) -> None:
        self.day = int(data["day"]) if data.get("day") is not None else None
        self.users = {user: UserTags({_tag_set(x) for x in entry.get("admitted", [])},
                                     {_tag_set(x) for x in entry.get("folded", [])})
                      for user, entry in data.get("users", {}).items()}

    # -- the edges ---------------------------------------------------------------
    @classmethod
    def load(cls, state_dir: Path | None, cap: int) -> "TagGuard":
        me = cls(cap, state_dir)
        data = read_state(state_dir)
        if data is not None:
            try:
                me.load_json(data)
            except (KeyError, TypeError, ValueError) as e:
                log.warning("ignoring %s (%s): today's tag budget starts again", Path(str(state_dir)) / TAGS_FILE, e)
                me.day, me.users = None, {}
        for over in me.over_cap():  # told before the restart: not again today
            me._once.problem(("over", over.user, me.day), "user %s was already over today's tag cap before "
                             "the restart", logging.DEBUG, over.user)
        return me

    def save(self, force: bool = False) -> bool:
        """Write the state atomically when it changed (temp file + rename); False (logged once) on failure."""
        if self.state_dir is None or not (self._changed or force):
            return False
        path = self.state_dir / TAGS_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_json(), sort_keys=True))
            os.replace(tmp, path)
        except OSError as e:
            self._once.problem("save", "cannot save the tag budget to %s: %s; a restart will renew today's "
                               "budgets (make the state dir writable)", logging.WARNING, path, e)
            return False
        self._once.cleared("save")
        self._changed = False
        return True


def _tag_set(x: Any) -> TagSet:
    tag, project, phase = (str(v) for v in x)
    return (tag, project, phase)


def read_state(state_dir: Path | None) -> dict[str, Any] | None:
    if state_dir is None:
        return None
    path = Path(state_dir) / TAGS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s (%s): today's tag budget starts again", path, e)
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        log.warning("ignoring %s: unknown format; today's tag budget starts again", path)
        return None
    return data


def read_usage(state_dir: Path, cap: int, now_wall_ns: int) -> tuple[int, list[OverCap]]:
    """(users seen today, those over the cap) from the agent's saved state, for ``doctor``."""
    guard = TagGuard.load(state_dir, cap)
    if guard.day != utc_day(now_wall_ns):
        return 0, []
    return len(guard.users), guard.over_cap()
