"""Scheduler jobs beside the ledger: one row per (host, job tag, user) that Slurm launched.

What Slurm's environment says about a job (its id, array ids, name, account,
partition, allocated GPUs: ``model.slurm.SlurmJob``) and when this host's
agent saw it run (the first and last tick with a live process of it). These
are not ``wl_job`` tags on purpose: per-series tags would multiply the
series (cardinality); here they cost one row per job.

The table lives in the ledger's SQLite file (``job_info``), opened through a
connection of its own: the agent writes it after each tick's ledger
transaction (``record``), readers (``report``, the Slurm Epilog) open it read
only. A ledger made before this table existed simply has no scheduler jobs.
The writer opens the file at its first record (a full disk at start does not
stop the agent) and opens it again when the ledger file was replaced (a
damaged ledger moved aside: store/guard.py), so it never writes to the old one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wattledger.model.jobs import JobKey
from wattledger.model.slurm import SCHEDULER, SlurmJob
from wattledger.store.files import connect_readonly, connect_writable

# The Slurm Epilog asks the agent to settle a job that ended (read every process once, so
# CPU a cold or zombie process of the job used is charged before the job is summed) by
# setting this file's mtime in the state dir; the agent looks at it once per tick.
SETTLE_FILE = "settle.request"
TABLE = "job_info"
DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    host TEXT NOT NULL, job TEXT NOT NULL, user TEXT NOT NULL,
    scheduler TEXT NOT NULL, job_id TEXT NOT NULL,
    array_job_id TEXT NOT NULL DEFAULT '', array_task_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '', account TEXT NOT NULL DEFAULT '', partition TEXT NOT NULL DEFAULT '',
    gpus TEXT NOT NULL DEFAULT '',
    first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
    PRIMARY KEY (host, job, user))"""
INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_job_id ON {TABLE}(job_id)"
_COLS = ("host", "job", "user", "scheduler", "job_id", "array_job_id", "array_task_id", "name", "account",
         "partition", "gpus", "first_ns", "last_ns")
# A new row, or: the same job seen again (last_ns moves on) and fields it lacked filled in.
_UPSERT = f"""INSERT INTO {TABLE} ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})
    ON CONFLICT (host, job, user) DO UPDATE SET
      last_ns = max(last_ns, excluded.last_ns), first_ns = min(first_ns, excluded.first_ns),
      job_id = excluded.job_id,
      array_job_id = CASE WHEN array_job_id = '' THEN excluded.array_job_id ELSE array_job_id END,
      array_task_id = CASE WHEN array_task_id = '' THEN excluded.array_task_id ELSE array_task_id END,
      name = CASE WHEN name = '' THEN excluded.name ELSE name END,
      account = CASE WHEN account = '' THEN excluded.account ELSE account END,
      partition = CASE WHEN partition = '' THEN excluded.partition ELSE partition END,
      gpus = CASE WHEN gpus = '' THEN excluded.gpus ELSE gpus END"""


def request_settle(state_dir: Path) -> int:
    """Ask the agent to read every process at its next tick; the wall time after asking (every tick
    stamped later has seen the request). OSError if the state dir is not writable."""
    path = Path(state_dir) / SETTLE_FILE
    path.touch()
    asked_ns = time.time_ns()
    os.utime(path, ns=(asked_ns, asked_ns))
    return time.time_ns()


def settle_requested_ns(state_dir: Path) -> int | None:
    """When a settle was last asked for (the file's mtime), None if never."""
    try:
        return os.stat(Path(state_dir) / SETTLE_FILE).st_mtime_ns
    except OSError:
        return None


@dataclass(frozen=True)
class JobRecord:
    """One scheduler job on one host: what Slurm said about it, and the ticks that saw it run."""

    host: str
    tag: str
    user: str
    slurm: SlurmJob
    first_ns: int  # the first tick (wall clock, interval end) that saw a live process of the job
    last_ns: int  # ... and the last one

    @property
    def key(self) -> tuple[str, str]:
        """(job tag, user): a ``report --by job`` row's key."""
        return self.tag, self.user


@dataclass(frozen=True)
class JobFilter:
    """Which scheduler jobs to read (None: any)."""

    host: str | None = None
    tag: str | None = None
    user: str | None = None
    job_id: str | None = None
    account: str | None = None
    partition: str | None = None
    since_ns: int | None = None  # ran at some time in [since, until)
    until_ns: int | None = None

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        for col, value in (("host", self.host), ("job", self.tag), ("user", self.user), ("job_id", self.job_id),
                           ("account", self.account), ("partition", self.partition)):
            if value is not None:
                clauses.append(f"{col} = ?")
                args.append(value)
        if self.since_ns is not None:
            clauses.append("last_ns >= ?")
            args.append(self.since_ns)
        if self.until_ns is not None:
            clauses.append("first_ns < ?")
            args.append(self.until_ns)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


@dataclass
class JobInfoStore:
    """The ``job_info`` table of one ledger file (``readonly``: for readers who may not write it)."""

    path: Path
    readonly: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None
        if self.readonly:
            self._db = connect_readonly(self.path)

    def _writable(self) -> sqlite3.Connection:
        """The writer's connection: opened at first use, and again when the ledger file was replaced."""
        try:
            inode: int | None = os.stat(self.path).st_ino
        except OSError:
            inode = None
        if self._db is None or inode != self._inode:
            if self._db is not None:
                self._db.close()
                self._db = None
            db = connect_writable(self.path)  # the ledger's own way: 0640, WAL, no fsync a tick
            try:
                db.execute(DDL)
                db.execute(INDEX)
            except BaseException:
                db.close()
                raise
            self._db, self._inode = db, os.stat(self.path).st_ino
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def record(self, host: str, wall_ns: int, jobs: Mapping[JobKey, SlurmJob]) -> None:
        """The jobs with a live process at the tick stamped ``wall_ns``: new rows, or seen again."""
        if not jobs:
            return
        rows = [(host, key.tag, key.user, SCHEDULER, j.job_id, j.array_job_id, j.array_task_id, j.name, j.account,
                 j.partition, ",".join(j.gpus), wall_ns, wall_ns) for key, j in sorted(jobs.items())]
        with self._lock:
            db = self._writable()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_UPSERT, rows)
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def records(self, which: JobFilter = JobFilter()) -> list[JobRecord]:
        """The jobs that match, oldest first (none when the ledger has no ``job_info`` table yet)."""
        where, args = which.where()
        sql = f"SELECT {', '.join(_COLS)} FROM {TABLE}{where} ORDER BY first_ns, host, job, user"
        try:
            with self._lock:
                db = self._db if self.readonly else self._writable()
                assert db is not None
                rows = db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise
        return [_record(dict(zip(_COLS, r))) for r in rows]


def _record(r: Mapping[str, object]) -> JobRecord:
    text = {k: str(v) for k, v in r.items()}
    gpus = tuple(g for g in text["gpus"].split(",") if g)
    slurm = SlurmJob(text["job_id"], text["array_job_id"], text["array_task_id"], text["name"], text["account"],
                     text["partition"], gpus)
    return JobRecord(text["host"], text["job"], text["user"], slurm, int(str(r["first_ns"])), int(str(r["last_ns"])))
