"""A Slurm job's energy and CO2e, summed at job end and written where its user finds it.

Slurm runs ``Epilog`` (slurm.conf) on every node of a job when the job ends,
as root, with the job's id, user, working directory and ``--output`` pattern
in its environment. ``wattledger slurm epilog`` (deploy/slurm/epilog.sh)
then, on each node:

1. asks the agent to settle (``store.jobinfo.request_settle``: its next tick
   reads every process once, so CPU that a cold or zombie process of the
   job used is charged now rather than found at a later scan), then waits
   until the agent has committed ``[slurm] epilog_ticks`` ticks after that
   (the job's processes are gone by then, so its last interval is in the
   ledger), at most ``epilog_timeout_s``;
2. sums the ledger rows of every tag the job's processes carried on this
   node (``slurm-<id>``, and any ``WATTLEDGER_JOB`` tags set inside the job:
   ``store.jobinfo`` ties them to the Slurm id) with the report's own rule
   (hourly energy x PUE x intensity: ``report.ledger``);
3. appends the summary to the job's output file (``slurm-<id>.out`` or the
   ``--output`` pattern, filled in as sbatch does), opened *as the job's
   user* so that root never follows a user's symlink; where that file
   cannot be found, to ``wattledger-slurm-<id>.txt`` in the job's working
   directory (``[slurm] summary_fallback``).

Why the output file: it is where users look when a job ends, it needs no
slurmdbd (``AdminComment`` does, and is set by admins), no mail set-up, and
it works on every node of a multi-node job (each node appends its own
lines). The last line is ``wattledger-summary {json}`` for scripts.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattledger.config import Config
from wattledger.model.points import WL_AGENT
from wattledger.model.slurm import (
    DEFAULT_ARRAY_OUTPUT, DEFAULT_OUTPUT, TAG_PREFIX, SlurmJob, expand_output, output_fields,
)
from wattledger.model.units import J_PER_KWH, NS_PER_S
from wattledger.report.assemble import Options
from wattledger.report.ledger import from_ledger
from wattledger.report.model import Report, ReportError
from wattledger.report.numfmt import num
from wattledger.store.jobinfo import JobFilter, JobInfoStore, JobRecord, request_settle
from wattledger.store.ledger import Ledger
from wattledger.util.timeutil import iso

SUMMARY_MARK = "wattledger-summary"
FALLBACK_NAME = "wattledger-slurm-{job_id}.txt"


class EpilogError(RuntimeError):
    """The Epilog cannot do its part; the message says why (it goes to slurmd's log)."""


@dataclass(frozen=True)
class EpilogJob:
    """What the Epilog's environment says about the job that ended."""

    job_id: str
    user: str
    uid: int
    gid: int
    work_dir: str
    stdout: str  # sbatch's --output pattern ("" when the default was used)
    node: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EpilogJob:
        job_id = env.get("SLURM_JOB_ID", "").strip()
        if not job_id.isdigit():
            raise EpilogError("SLURM_JOB_ID is not set: run this as Slurm's Epilog (slurm.conf Epilog=...)")
        try:
            uid, gid = int(env.get("SLURM_JOB_UID", "")), int(env.get("SLURM_JOB_GID", ""))
        except ValueError:
            raise EpilogError(f"job {job_id}: SLURM_JOB_UID/SLURM_JOB_GID missing from the Epilog's environment") from None
        return cls(job_id, env.get("SLURM_JOB_USER", str(uid)), uid, gid, env.get("SLURM_JOB_WORK_DIR", ""),
                   env.get("SLURM_JOB_STDOUT", ""), env.get("SLURMD_NODENAME", ""))


@dataclass
class Summary:
    """One Slurm job's figures on one host."""

    job_id: str
    host: str
    tags: list[str]
    energy_j: float = 0.0
    energy_j_by_component: dict[str, float] = field(default_factory=dict)
    facility_kwh: float = 0.0
    g_co2e: float = 0.0
    pue: str = ""
    intensity: str = ""
    slurm: SlurmJob | None = None
    first_ns: int | None = None
    last_ns: int | None = None
    complete: bool = True  # the agent committed the ticks waited for
    as_of_ns: int = 0  # when it was summed
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        s = self.slurm
        return {
            "job_id": self.job_id, "host": self.host, "tags": self.tags, "energy_j": self.energy_j,
            "energy_j_by_component": self.energy_j_by_component, "it_kwh": self.energy_j / J_PER_KWH,
            "facility_kwh": self.facility_kwh, "g_co2e": self.g_co2e, "pue": self.pue, "intensity": self.intensity,
            "slurm_id": s.display_id if s else self.job_id, "account": s.account if s else "",
            "partition": s.partition if s else "", "start": iso(self.first_ns) if self.first_ns else None,
            "end": iso(self.last_ns) if self.last_ns else None, "complete": self.complete,
            "as_of": iso(self.as_of_ns) if self.as_of_ns else None, "as_of_ns": self.as_of_ns,
        }


def wait_for_ticks(ledger: Ledger, after_ns: int, ticks: int, timeout_s: float,
                   sleep: Callable[[float], None] = time.sleep) -> bool:
    """True once the agent committed ``ticks`` ticks stamped after ``after_ns``; False at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if len(ledger.rows(WL_AGENT, since_ns=after_ns + 1)) >= ticks:
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(0.2)


def job_records(ledger: Ledger, job_id: str) -> list[JobRecord]:
    store = JobInfoStore(ledger.path, readonly=True)
    try:
        return store.records(JobFilter(job_id=job_id))
    finally:
        store.close()


def summarise(ledger: Ledger, cfg: Config, job_id: str, now_ns: int, host: str = "") -> Summary:
    """The job's energy, facility energy and CO2e in this ledger (every tag tied to the Slurm id)."""
    records = job_records(ledger, job_id)
    tags = sorted({r.tag for r in records} | {TAG_PREFIX + job_id})
    since_ns = min((r.first_ns for r in records), default=now_ns - 7 * 86400 * NS_PER_S) - NS_PER_S
    summary = Summary(job_id, records[0].host if records else host, tags, as_of_ns=now_ns)
    if records:
        summary.slurm = records[0].slurm
        for r in records[1:]:
            summary.slurm = summary.slurm.merged(r.slurm)
        summary.first_ns = min(r.first_ns for r in records)
        summary.last_ns = max(r.last_ns for r in records)
    for tag in tags:  # by user: with the job fixed the rows are the same, without --by job's lifetimes and
        # scheduler reads (whole-table scans of the summaries for a job filter without a host), unused here
        _add(summary, from_ledger(ledger, cfg, since_ns, now_ns + NS_PER_S, Options(by="user", job=tag)))
    return summary


def _add(summary: Summary, report: Report) -> None:
    for row in report.rows:
        summary.energy_j += row.it_j
        summary.facility_kwh += row.facility_kwh
        summary.g_co2e += row.g_co2e
        for component, j in row.it_j_by_component.items():
            summary.energy_j_by_component[component] = summary.energy_j_by_component.get(component, 0.0) + j
        summary.intensity = report.intensity_source(row)
    if report.rows:
        summary.pue = report.pue
        summary.notes.extend(n for n in report.notes() if n not in summary.notes)


def summary_text(s: Summary) -> str:
    """The lines appended to the job's output: for people, then one JSON line for scripts."""
    info = s.slurm
    what = f"Slurm job {info.display_id if info else s.job_id}" + (f" ({info.name})" if info and info.name else "")
    lines = [f"----- wattledger: energy and carbon of {what} on {s.host or 'this node'} -----"]
    if info and (info.account or info.partition):
        lines.append(f"account {info.account or '-'}, partition {info.partition or '-'}")
    if s.first_ns and s.last_ns:
        lines.append(f"ran {iso(s.first_ns)} .. {iso(s.last_ns)} (the agent's ticks that saw it)")
    parts = ", ".join(f"{c} {num(j / J_PER_KWH)} kWh" for c, j in sorted(s.energy_j_by_component.items()))
    lines += [
        f"IT energy:       {num(s.energy_j / J_PER_KWH)} kWh ({s.energy_j:.1f} J{': ' + parts if parts else ''})",
        f"facility energy: {num(s.facility_kwh)} kWh (x PUE {s.pue or '-'})",
        f"CO2e:            {num(s.g_co2e)} g ({s.intensity or 'no energy recorded'})",
    ]
    if s.energy_j == 0:
        lines.append("No energy was recorded for this job on this node (was the agent running? "
                     "`wattledger doctor` says).")
    if not s.complete:
        lines.append("The agent did not commit a tick after the job ended in time: the last seconds may be missing; "
                     f"`wattledger report --job {s.tags[0]}` has the final figure.")
    lines += s.notes
    lines.append(f"More: wattledger report --by job --job {TAG_PREFIX}{s.job_id}"
                 + (f" --since {iso(s.first_ns)}" if s.first_ns else ""))
    lines.append(f"{SUMMARY_MARK} {json.dumps(s.to_dict(), sort_keys=True)}")
    return "\n".join(lines) + "\n"


# -- where the user finds it ----------------------------------------------------------------------


def output_file(job: EpilogJob, slurm: SlurmJob | None) -> Path | None:
    """The job's output file as sbatch named it (None when its pattern names a field we do not know)."""
    info = slurm or SlurmJob(job.job_id)
    pattern = job.stdout or (DEFAULT_ARRAY_OUTPUT if info.array_task_id else DEFAULT_OUTPUT)
    name = expand_output(pattern, output_fields(info, job.user, job.node))
    if name is None:
        return None
    path = Path(name)
    return path if path.is_absolute() or not job.work_dir else Path(job.work_dir) / path


def deliver(job: EpilogJob, text: str, slurm: SlurmJob | None, fallback: bool) -> Path:
    """Append ``text`` to the job's output file as the job's user, else write the fallback file."""
    target = output_file(job, slurm)
    problem = "its --output pattern names a field the Epilog does not know" if target is None else ""
    if target is not None:
        try:
            write_as(job.uid, job.gid, target, text, create=False)
            return target
        except EpilogError as e:
            problem = str(e)
    if not fallback or not job.work_dir:
        raise EpilogError(f"job {job.job_id}: no summary written: {problem} ([slurm] summary_fallback is off "
                          "or the job has no working directory)")
    spare = Path(job.work_dir) / FALLBACK_NAME.format(job_id=job.job_id)
    try:
        write_as(job.uid, job.gid, spare, text, create=True)
    except EpilogError as e:
        raise EpilogError(f"job {job.job_id}: no summary written: {problem}; {e}") from None
    return spare


def write_as(uid: int, gid: int, path: Path, text: str, *, create: bool) -> None:
    """Append (or create, exclusively) a regular file as uid:gid, in a child that drops root first:
    root never opens a path a user controls. EpilogError says why it could not."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, write, report through the pipe, exit
        os.close(read_end)
        os._exit(_child_write(write_end, uid, gid, path, text.encode(), create))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reason = pipe.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise EpilogError(f"cannot write {path} as uid {uid}: {reason or 'the writer failed'}")


def _child_write(pipe: int, uid: int, gid: int, path: Path, data: bytes, create: bool) -> int:
    try:
        if os.getuid() == 0 and uid != 0:
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
        elif os.getuid() != uid:
            raise PermissionError(f"running as uid {os.getuid()}, not root: cannot become uid {uid}")
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
        fd = os.open(path, flags | (os.O_CREAT | os.O_EXCL if create else 0), 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{path} is not a regular file")
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return 0
    except BaseException as e:  # noqa: BLE001 - the child reports every failure to the parent and exits
        os.write(pipe, str(e).encode("utf-8", "replace")[:1000])
        return 1
    finally:
        os.close(pipe)


def epilog(cfg: Config, ledger: Ledger, env: Mapping[str, str], *, started_ns: int,
           sleep: Callable[[float], None] = time.sleep) -> tuple[Path, Summary]:
    """The whole Epilog for one job on this node: wait, sum, write. EpilogError if nothing was written."""
    job = EpilogJob.from_env(env)
    try:
        started_ns = request_settle(ledger.path.parent)
    except OSError:
        pass  # not root: the ticks waited for still charge the job's last interval, only not cold processes
    complete = wait_for_ticks(ledger, started_ns, cfg.slurm.epilog_ticks, cfg.slurm.epilog_timeout_s, sleep)
    try:
        summary = summarise(ledger, cfg, job.job_id, time.time_ns(), job.node)
    except ReportError as e:
        raise EpilogError(f"job {job.job_id}: {e}") from None
    summary.complete = complete
    return deliver(job, summary_text(summary), summary.slurm, cfg.slurm.summary_fallback), summary

