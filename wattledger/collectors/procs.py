"""Per-job CPU time from /proc (and cgroup v2), cheap enough for thousands of processes.

Reading every process every tick costs too much (FIELD-NOTES: psutil needs
~350 ms of CPU per pass over 2,000 processes; a raw ``stat`` pass ~20-50 ms).
Most processes on a server sleep, so the collector reads what can have
changed and uses the kernel's own totals to notice what it did not read:

* ``/proc/stat`` once per tick: the host's busy CPU time (the total that
  processes must explain) and the fork counter. ``/proc/loadavg``: the
  number of tasks. When neither the fork counter nor the task count moved,
  no process was born or died and the directory listing of ``/proc`` is
  skipped.
* A new process (new pid, or a pid whose start time changed: reuse) is read
  in full once: ``stat``, real uid (``status``), ``environ`` (the job tag),
  ``cgroup``. A process whose command name changes (it called exec) is
  identified again: ``env WATTLEDGER_JOB=x cmd`` tags ``cmd``.
* Every tick only *hot* processes are re-read: those whose CPU time (their
  own, or their reaped children's) moved within their last ``patience``
  reads, the agent itself, the parents of processes that vanished (to collect
  the children's CPU) and the orphans of those that vanished (new parent).
  A process that stays unchanged goes *cold* and is not read any more.
* If the CPU time the re-read processes explain falls short of what
  ``/proc/stat`` counted by more than a small threshold, a cold process woke
  up: cold processes are read, most recently active first, until the gap is
  closed. A process found that way stays hot twice as long next time. Every
  ``full_scan_every`` ticks all processes are read as a safety net.
* Children that live shorter than a tick are charged through their parent's
  ``cutime + cstime`` (fields 16-17 of stat), minus what was already charged
  for the children we saw before they exited. Where a job has its own cgroup
  v2 (Slurm ``job_<id>``, a container), the cgroup's ``cpu.stat``
  ``usage_usec`` is the ground truth for that job: per-process charges inside
  it are completed (children the parents never reaped) or scaled down (double
  counting) to match it.
* The sample says how much busy time the host had (``busy_s``) and what the
  processes explain (``charged_s``); the rest, interrupts and unseen
  processes, is ``_system``'s, worked out by ``accounting.cpu`` (with the
  carry that pays back CPU time discovered late).
* The collector keeps no clock: intervals are the energy counters' (made by
  ``accounting.counters``), and its own thresholds use the CPU time the
  kernel counted (``/proc/stat``'s total) instead of elapsed time.

A process is identified by (pid, start time), field 22 of stat. Per-tick work
is proportional to the new, busy and changed processes, not to all of them.
docs/attribution.md describes the scheme and its limits.

Unlike the energy collectors this one returns activity per job since its
previous read, not cumulative counters: identifying processes across ticks
needs the per-pid state that only the collector holds (see
docs/design-notes.md). ``read(read_ns, want_pids)`` also names the jobs of the
pids the caller asks about (NVML's GPU processes), as data.
"""

from __future__ import annotations

import os
import pwd
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wattledger.model.activity import ProcSample
from wattledger.model.jobs import (
    AGENT_JOB,
    DEFAULT_TAG_VARS,
    MAX_TAG_CHARS,
    PHASE_VAR,
    PROJECT_VAR,
    SYSTEM_JOB,
    UNTAGGED,
    JobKey,
    job_cgroup,
    job_for,
    parse_environ,
    sanitise_user,
    untagged,
)
from wattledger.model.readings import ProbeResult, SourceState
from wattledger.model.slurm import (
    DEFAULT_GPU_VARS, INFO_VARS, SCRIPT_CONTEXT_VAR, SlurmJob, is_scheduler_script, job_id_of_tag, slurm_job,
)

SOURCE = "procfs"
ENVIRON_FIX = (
    "reading other users' /proc/<pid>/environ needs CAP_DAC_READ_SEARCH (the file is mode 0400) and "
    "CAP_SYS_PTRACE (the ptrace access check): run the agent as root or as the wattledger service, which "
    "holds both as ambient capabilities; until then other users' processes count as _untagged"
)
KTHREADD = "2"  # parent of every kernel thread
GONE_JOB_TICKS = 2  # how long jobs_by_pid remembers the job of an exited process
INIT = "1"  # reaps orphans
_READ_MAX = 4096  # /proc/<pid>/stat is a few hundred bytes


# -- pure parsers ---------------------------------------------------------------
@dataclass(frozen=True)
class StatFields:
    ppid: int
    cpu_ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime (reaped children)
    start_ticks: int
    comm: str = ""


# Fields of /proc/<pid>/stat after the command name: field n (man 5 proc) is rest[n - 3].
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME, _START = 4 - 3, 14 - 3, 15 - 3, 16 - 3, 17 - 3, 22 - 3


def _split_stat(data: bytes) -> tuple[bytes, list[bytes]]:
    """(comm, [field 3, field 4, ..., field 22, rest]). comm may hold spaces and ')'."""
    close = data.rindex(b")")
    return data[data.index(b"(") + 1 : close], data[close + 2 :].split(None, 20)


def _numbers(rest: list[bytes]) -> tuple[str, int, int, int]:
    """(ppid, utime + stime, cutime + cstime, start time) from the split fields."""
    return (rest[_PPID].decode(), int(rest[_UTIME]) + int(rest[_STIME]), int(rest[_CUTIME]) + int(rest[_CSTIME]),
            int(rest[_START]))


def parse_stat(text: str | bytes) -> StatFields:
    """Parse /proc/<pid>/stat."""
    data = text.encode() if isinstance(text, str) else text
    comm, rest = _split_stat(data)
    ppid, cpu, child, start = _numbers(rest)
    return StatFields(ppid=int(ppid), cpu_ticks=cpu, child_ticks=child, start_ticks=start,
                      comm=comm.decode("utf-8", "replace"))


@dataclass(frozen=True)
class HostCpu:
    busy_ticks: int  # user + nice + system + irq + softirq
    ncpu: int
    task_ticks: int = 0  # user + nice + system: what processes' utime/stime can explain
    forks: int | None = None  # "processes": tasks created since boot
    total_ticks: int = 0  # every state (idle and iowait included): the CPU time that passed, all CPUs


def parse_proc_stat(text: str) -> HostCpu:
    """Busy = user + nice + system + irq + softirq (guest is inside user; steal is not ours)."""
    busy = task = total = 0
    ncpu = 0
    forks: int | None = None
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            task = v[0] + v[1] + v[2]
            busy = task + (v[5] if len(v) > 5 else 0) + (v[6] if len(v) > 6 else 0)
            total = sum(v[:8])  # guest and guest_nice (9, 10) are already inside user and nice
        elif line.startswith("cpu"):
            ncpu += 1
        elif line.startswith("processes "):
            forks = int(line.split()[1])
    return HostCpu(busy, max(ncpu, 1), task, forks, total)


def parse_loadavg_tasks(text: str) -> int | None:
    """The total task count from /proc/loadavg ("0.00 0.01 0.05 1/123 4567")."""
    try:
        return int(text.split()[3].split("/")[1])
    except (IndexError, ValueError):
        return None


def parse_real_uid(status: bytes) -> int | None:
    """The real uid from /proc/<pid>/status ("Uid:\\treal\\teffective\\tsaved\\tfs")."""
    start = status.find(b"\nUid:")
    if start < 0:
        return None
    return int(status[start + 5 :].split(None, 1)[0])


def parse_cpu_stat_usec(text: str) -> int | None:
    """usage_usec from a cgroup v2 cpu.stat."""
    for line in text.splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1])
    return None


def cgroup_v2_root(cgroup_root: Path) -> Path | None:
    """The cgroup v2 hierarchy under cgroup_root: itself (unified), ``unified/`` (hybrid) or None."""
    for candidate in (cgroup_root, cgroup_root / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


def _slurm_of(env: dict[str, str], job: JobKey, gpu_vars: tuple[str, ...]) -> SlurmJob | None:
    """The Slurm job of a tagged process: from its environment, else from a ``slurm-<id>`` tag (its cgroup).
    A reserved job (``_untagged``...) is never a Slurm job, whatever the environment says."""
    if job.reserved:
        return None
    found = slurm_job(env, gpu_vars)
    if found is None:
        job_id = job_id_of_tag(job.tag)
        found = SlurmJob(job_id) if job_id is not None else None
    return found


# -- per-process state ------------------------------------------------------------
@dataclass(slots=True)
class _Proc:
    start: int
    ppid: str
    comm: bytes
    uid: int
    job: JobKey
    cpu: float  # utime + stime at the last read (clock ticks; fractional for pinned processes)
    child: int  # cutime + cstime at the last read
    cg: str | None  # the job cgroup (v2 path) it sits in, if any
    env_denied: bool = False
    idle_reads: int = 0  # consecutive reads without any CPU change
    patience: int = 3  # idle reads before it goes cold
    cg_claim: JobKey | None = None  # the job its cgroup belongs to, as this process sees it
    slurm: SlurmJob | None = None  # the Slurm job its environment (or its cgroup) names


@dataclass
class _Tick:
    """What one read accumulates, in clock ticks: charges, buried children, processes to re-read."""

    first: bool
    seen: dict[str, float]  # CPU already charged for buried children, per live ancestor
    must_read: set[str]
    charged: dict[JobKey, float] = field(default_factory=dict)
    cg_charged: dict[str, dict[JobKey, float]] = field(default_factory=dict)
    gone_kids: dict[str, list[_Proc]] = field(default_factory=dict)
    reads: int = 0

    def charge(self, job: JobKey, ticks: float, cg: str | None) -> None:
        if ticks > 0:
            self.charged[job] = self.charged.get(job, 0.0) + ticks
            if cg is not None:
                per_job = self.cg_charged.setdefault(cg, {})
                per_job[job] = per_job.get(job, 0.0) + ticks

    def explained(self) -> float:
        return sum(self.charged.values())


@dataclass
class ProcCollector:
    procfs_root: Path = Path("/proc")
    tag_vars: tuple[str, ...] = DEFAULT_TAG_VARS
    max_tag_chars: int = MAX_TAG_CHARS
    agent_pid: int = field(default_factory=os.getpid)
    hot_after_idle_reads: int = 3  # a process stays hot this many unchanged reads (at first)
    max_patience: int = 64  # ... and at most this many, for processes that keep waking up
    full_scan_every: int = 60
    # Unexplained task time that starts a cold scan: max(min_gap_ticks, 2% of busy + 0.5% of capacity).
    min_gap_ticks: int = 4
    cgroup_root: Path | None = Path("/sys/fs/cgroup")  # None: no cgroup ground truth
    use_cgroups: bool = True  # False: neither cgroup tags nor cgroup CPU ([jobs] use_cgroups)
    gpu_vars: tuple[str, ...] = DEFAULT_GPU_VARS  # where Slurm names a job's GPUs ([slurm] gpu_vars)
    name: str = SOURCE

    def __post_init__(self) -> None:
        self.procfs_root = Path(self.procfs_root)
        self._root = str(self.procfs_root)
        self.clk_tck = os.sysconf("SC_CLK_TCK")
        self._agent = str(self.agent_pid)
        self._cg_root = None
        if self.use_cgroups and self.cgroup_root is not None:
            self._cg_root = cgroup_v2_root(Path(self.cgroup_root))
        self._procs: dict[str, _Proc] = {}
        self._hot: set[str] = set()
        self._cold: dict[str, None] = {}  # ordered: the most recently cooled last
        self._kids: dict[str, set[str]] = {}
        self._holders: Counter[JobKey] = Counter()
        self._cg_members: Counter[str] = Counter()
        self._cg_owner: dict[str, JobKey] = {}
        self._cg_last: dict[str, int] = {}  # cgroup -> usage_usec at the last read
        self._users: dict[int, str] = {}
        self.environ_denied_pids: set[int] = set()  # live processes whose tags we cannot see
        self._last_host: HostCpu | None = None
        self._seen_carry: dict[str, float] = {}  # charged CPU of buried children, for parents not yet re-read
        # pid -> (job, tick it was buried): GPU samples of a process that exited during the
        # interval arrive after its burial; jobs_by_pid still knows whose it was.
        self._gone_jobs: dict[str, tuple[JobKey, int]] = {}
        self._last_listing: tuple[int | None, int | None] = (None, None)  # (forks, tasks)
        self._ticks = 0
        self._wanted_env = frozenset(self.tag_vars) | {PROJECT_VAR, PHASE_VAR, SCRIPT_CONTEXT_VAR, *INFO_VARS,
                                                       *self.gpu_vars}
        self._slurm: dict[JobKey, SlurmJob] = {}  # jobs with a live process that Slurm launched
        self._scan_requested = False
        self._pinned: dict[str, JobKey] = {}

    def request_full_scan(self) -> None:
        """Read every process at the next read (a Slurm job ended: settle what its processes used)."""
        self._scan_requested = True

    def pin(self, pid: int, job: JobKey) -> None:
        """The caller started ``pid`` for ``job`` (``wattledger run``): it is that job's, however it is
        first seen (a command shorter than a tick is first seen as a zombie, with no environment
        left to read), and its own CPU time is read in nanoseconds (``/proc/<pid>/schedstat``)
        instead of clock ticks, so a 0.1 s command is not off by a tick."""
        self._pinned[str(pid)] = job

    # -- small readers -------------------------------------------------------
    def _read(self, *parts: str | int) -> bytes:
        with open(os.path.join(self._root, *map(str, parts)), "rb") as f:
            return f.read()

    def _read_stat(self, pid: str) -> bytes:
        fd = os.open(f"{self._root}/{pid}/stat", os.O_RDONLY)
        try:
            return os.read(fd, _READ_MAX)
        finally:
            os.close(fd)

    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = sanitise_user(pwd.getpwuid(uid).pw_name)
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def _uid(self, pid: str) -> int:
        """The real uid: the user who ran it. The owner of /proc/<pid> is the
        effective uid, and root for non-dumpable processes, which a user could
        use to charge root's job."""
        try:
            uid = parse_real_uid(self._read(pid, "status"))
            if uid is not None:
                return uid
        except (OSError, ValueError):
            pass
        return os.stat(f"{self._root}/{pid}").st_uid

    # -- identity ------------------------------------------------------------
    def _identify(self, pid: str, comm: bytes, ppid: str, start: int, cpu: float, child: int) -> _Proc:
        uid = self._uid(pid)
        user = self._user(uid)
        cg: str | None = None
        claim: JobKey | None = None
        denied = False
        slurm: SlurmJob | None = None
        if pid == self._agent:
            job = AGENT_JOB
        elif pid == KTHREADD or ppid == KTHREADD:
            job = SYSTEM_JOB  # kernel threads: part of "kernel" in _system
        else:
            env: dict[str, str] = {}
            try:
                env = parse_environ(self._read(pid, "environ"), self._wanted_env)
            except PermissionError:
                denied = True
            except OSError:
                pass  # zombies have no environ
            cgroup = ""
            if self.use_cgroups:
                try:
                    cgroup = self._read(pid, "cgroup").decode("utf-8", "replace")
                except OSError:
                    pass
            # Slurm's Prolog/Epilog carry the job's id but are the scheduler's work: their user's _untagged.
            job = untagged(user) if is_scheduler_script(env) else job_for(user, env, cgroup, self.tag_vars,
                                                                            self.max_tag_chars)
            slurm = _slurm_of(env, job, self.gpu_vars)
            parent = self._procs.get(ppid)
            if job.tag == UNTAGGED and parent is not None and parent.uid == uid and not parent.job.reserved:
                job = parent.job  # children inherit, within the same user only
            job = self._pinned.get(pid, job)
            found = job_cgroup(cgroup) if self._cg_root is not None else None
            if found is not None:
                cg, claim = found[1], job if job.tag == found[0] else JobKey(found[0], user)
        return _Proc(start, ppid, comm, uid, job, cpu, child, cg, denied, 0, self.hot_after_idle_reads, claim, slurm)

    def _adopt(self, pid: str, proc: _Proc) -> None:
        """What identifying a tracked process teaches: tags we cannot see, who owns its job cgroup, its Slurm job."""
        if proc.slurm is not None:
            known = self._slurm.get(proc.job)
            self._slurm[proc.job] = proc.slurm if known is None else known.merged(proc.slurm)
        if proc.env_denied:
            self.environ_denied_pids.add(int(pid))
        if proc.cg is not None and proc.cg_claim is not None:
            owner = self._cg_owner.get(proc.cg)
            if owner is None or (owner.user == "root" and proc.cg_claim.user != "root"):
                self._cg_owner[proc.cg] = proc.cg_claim

    def _join(self, job: JobKey, cg: str | None) -> None:
        """Count a process as a holder of its job (and member of its job cgroup)."""
        self._holders[job] += 1
        if cg is not None:
            self._cg_members[cg] += 1

    def _leave(self, job: JobKey, cg: str | None) -> None:
        """Undo ``_join``; a job or cgroup with no process left is dropped."""
        self._holders[job] -= 1
        if self._holders[job] <= 0:
            del self._holders[job]
            self._slurm.pop(job, None)
        if cg is not None:
            self._cg_members[cg] -= 1
            if self._cg_members[cg] <= 0:
                del self._cg_members[cg]

    def _track(self, pid: str, proc: _Proc) -> None:
        self._adopt(pid, proc)
        self._procs[pid] = proc
        self._hot.add(pid)
        self._kids.setdefault(proc.ppid, set()).add(pid)
        self._join(proc.job, proc.cg)

    def _forget(self, pid: str, proc: _Proc) -> None:
        self._hot.discard(pid)
        self._cold.pop(pid, None)
        kids = self._kids.get(proc.ppid)
        if kids is not None:
            kids.discard(pid)
            if not kids:
                del self._kids[proc.ppid]
        self._leave(proc.job, proc.cg)
        if proc.env_denied:
            self.environ_denied_pids.discard(int(pid))

    def _move(self, proc: _Proc, job: JobKey, cg: str | None) -> None:
        """A process identified again (after exec) belongs to another job or job cgroup."""
        self._leave(proc.job, proc.cg)
        proc.job, proc.cg = job, cg
        self._join(job, cg)

    def _jobs_of(self, pids: Iterable[int]) -> dict[int, JobKey]:
        """The job of each host pid asked about (NVML reports host pids).

        A process that exited in the last ticks keeps its job here: its GPU
        utilisation samples for its last interval are read after this
        collector buried it. A pid it never saw is identified on the spot,
        without tracking it (it is listed, and charged, from the next read).
        """
        out: dict[int, JobKey] = {}
        for pid in pids:
            key = str(pid)
            proc = self._procs.get(key)
            if proc is not None:
                out[pid] = proc.job
            elif key in self._gone_jobs:
                out[pid] = self._gone_jobs[key][0]
            else:
                out[pid] = self._identify_unknown(key)
        return out

    def _identify_unknown(self, pid: str) -> JobKey:
        try:
            comm, rest = _split_stat(self._read_stat(pid))
            ppid, _, _, start = _numbers(rest)
            return self._identify(pid, comm, ppid, start, 0, 0).job
        except (OSError, ValueError, IndexError):
            return untagged("")

    # -- the protocol --------------------------------------------------------
    def probe(self) -> ProbeResult:
        try:
            host = parse_proc_stat(self._read("stat").decode())
        except OSError as e:
            return ProbeResult(SOURCE, SourceState.MISSING, f"cannot read {self.procfs_root}/stat: {e}",
                               "mount procfs or pass --procfs-root")
        pids = [p for p in os.listdir(self.procfs_root) if p.isdigit()]
        denied = 0
        me = os.getuid()
        for p in pids:
            try:
                if os.stat(os.path.join(self.procfs_root, p)).st_uid == me:
                    continue
                self._read(p, "environ")
            except PermissionError:
                denied += 1
            except OSError:
                pass
        cg = f"cgroup v2 CPU ground truth from {self._cg_root}" if self._cg_root else "no cgroup v2 ground truth"
        detail = f"{len(pids)} processes, {host.ncpu} CPUs, {cg}"
        if denied:
            return ProbeResult(
                SOURCE, SourceState.PERMISSION_DENIED,
                f"{detail}; environ of {denied} other users' processes unreadable (their tags are not seen)",
                ENVIRON_FIX,
            )
        return ProbeResult(SOURCE, SourceState.FOUND, detail)

    def _gap_threshold(self, task_ticks: int, capacity_ticks: float) -> float:
        return max(float(self.min_gap_ticks), 0.02 * task_ticks + 0.005 * capacity_ticks)

    def read(self, read_ns: int, want_pids: Iterable[int] = ()) -> ProcSample:
        """CPU activity per job since the previous read; ``read_ns`` (monotonic) only stamps the sample."""
        host = parse_proc_stat(self._read("stat").decode())
        try:
            tasks = parse_loadavg_tasks(self._read("loadavg").decode())
        except OSError:
            tasks = None
        first = self._last_host is None
        busy_ticks, task_ticks, total_ticks = self._host_deltas(host)
        self._ticks += 1
        tick = _Tick(first, self._seen_carry, must_read={self._agent})
        self._seen_carry = {}
        if self._gone_jobs:  # forget exits older than GONE_JOB_TICKS (usually there are none to look at)
            self._gone_jobs = {p: v for p, v in self._gone_jobs.items() if v[1] >= self._ticks - GONE_JOB_TICKS}
        full_scan = tick.first or self._ticks % self.full_scan_every == 0 or self._scan_requested
        self._scan_requested = False
        listed, new_set = self._relist(tick, host, tasks, full_scan)
        self._read_processes(tick, new_set, full_scan)
        cold_scan = self._wake_cold(tick, task_ticks, total_ticks, full_scan)
        cgroups_read = self._reconcile_cgroups(tick.charged, tick.cg_charged)  # the first read is a baseline
        # Credit for children buried this tick whose parent was not read: next time.
        self._seen_carry = {pid: ticks for pid, ticks in tick.seen.items() if pid in self._procs}
        clk = float(self.clk_tck)
        return ProcSample(
            read_ns=read_ns, baseline=tick.first, busy_s=busy_ticks / clk, capacity_s=total_ticks / clk,
            ncpu=host.ncpu, charged_s={} if tick.first else {job: t / clk for job, t in tick.charged.items()},
            holders={job: 1.0 for job in self._holders if job not in (AGENT_JOB, SYSTEM_JOB)},
            jobs_by_pid=self._jobs_of(want_pids), processes_read=tick.reads, full_scan=full_scan,
            environ_denied=len(self.environ_denied_pids), cold_scan=cold_scan, listed=listed,
            cgroups_read=cgroups_read, processes=len(self._procs), slurm=dict(self._slurm),
        )

    def _host_deltas(self, host: HostCpu) -> tuple[int, int, int]:
        """(busy, task, total) clock ticks since the previous read; zeros on the first."""
        last, self._last_host = self._last_host, host
        if last is None:
            return 0, 0, 0
        return (max(0, host.busy_ticks - last.busy_ticks), max(0, host.task_ticks - last.task_ticks),
                max(0, host.total_ticks - last.total_ticks))

    def _relist(self, tick: _Tick, host: HostCpu, tasks: int | None, full_scan: bool) -> tuple[bool, set[str]]:
        """List /proc when something was born or died: bury the gone, return (listed, the new pids)."""
        listing = (host.forks, tasks)
        listed = full_scan or None in listing or listing != self._last_listing
        self._last_listing = listing
        if not listed:
            return False, set()
        live = set(os.listdir(self._root))
        gone_pids = self._procs.keys() - live
        if gone_pids:
            gone = {pid: self._procs.pop(pid) for pid in gone_pids}
            for pid, proc in gone.items():
                self._bury(tick, pid, proc, gone)
        return True, {p for p in live.difference(self._procs) if p.isdigit()}

    def _bury(self, tick: _Tick, pid: str, proc: _Proc, gone: dict[str, _Proc]) -> None:
        """A process vanished: what we charged for it is already in an ancestor's future cutime."""
        self._forget(pid, proc)
        self._gone_jobs[pid] = (proc.job, self._ticks)
        parent, hops = proc.ppid, 0
        while parent in gone and hops < 64:  # the whole subtree exited: fold into the first live ancestor
            parent, hops = gone[parent].ppid, hops + 1
        tick.seen[parent] = tick.seen.get(parent, 0) + proc.cpu + proc.child
        tick.gone_kids.setdefault(parent, []).append(proc)
        if parent in self._procs:
            tick.must_read.add(parent)
        for kid in self._kids.pop(pid, ()):  # orphans: re-read to learn their new parent
            if kid in self._procs:
                tick.must_read.add(kid)

    def _read_processes(self, tick: _Tick, new_set: set[str], full_scan: bool) -> None:
        """The new processes (parents first: children inherit tags), then all (full scan) or the hot ones."""
        for pid in sorted(new_set, key=int):
            self._visit(tick, pid)
        if full_scan:
            for pid in [p for p in self._procs if p not in new_set]:
                self._visit(tick, pid)
                self._warm(pid)
            for pid in list(self._hot):
                self._cool(pid)
            return
        for pid in (self._hot | tick.must_read).difference(new_set):
            self._visit(tick, pid)
            self._warm(pid)
            self._cool(pid)

    def _cool(self, pid: str) -> None:
        proc = self._procs.get(pid)
        if proc is not None and proc.idle_reads >= proc.patience and pid != self._agent:
            self._hot.discard(pid)
            self._cold[pid] = None

    def _warm(self, pid: str) -> None:
        proc = self._procs.get(pid)
        if proc is not None and proc.idle_reads == 0 and pid in self._cold:
            del self._cold[pid]
            self._hot.add(pid)

    def _wake_cold(self, tick: _Tick, task_ticks: int, total_ticks: int, full_scan: bool) -> bool:
        """Cold processes woke up? Read them, most recently cooled first, until /proc/stat's task time is explained."""
        if tick.first or full_scan or not self._cold:
            return False
        threshold = self._gap_threshold(task_ticks, total_ticks)
        if task_ticks - tick.explained() <= threshold:
            return False
        for pid in list(reversed(self._cold)):
            if self._visit(tick, pid) and pid in self._procs:
                proc = self._procs[pid]
                proc.patience = min(self.max_patience, 2 * proc.patience)
                self._cold.pop(pid, None)
                self._hot.add(pid)
                if task_ticks - tick.explained() <= threshold / 2:
                    break
        return True

    def _visit(self, tick: _Tick, pid: str) -> bool:
        """Read one process and charge its CPU since the last read; True if it used any."""
        try:
            comm, rest = _split_stat(self._read_stat(pid))
            ppid, ticks, child, start = _numbers(rest)
        except (OSError, ValueError, IndexError):
            return False  # exited between listing and reading: buried next listing
        cpu = self._exact_ticks(pid, ticks) if pid in self._pinned else ticks
        tick.reads += 1
        proc = self._procs.get(pid)
        if proc is not None and proc.start != start:  # pid reused
            del self._procs[pid]
            self._bury(tick, pid, proc, {})
            proc = None
        if proc is None:
            return self._first_sight(tick, pid, comm, ppid, start, cpu, child)
        self._follow(pid, proc, comm, ppid, start, cpu, child)
        return self._charge_since_last(tick, pid, proc, cpu, child)

    def _exact_ticks(self, pid: str, ticks: int) -> float:
        """A pinned process's own CPU time in (fractional) clock ticks from schedstat's nanoseconds."""
        try:
            ns = int(self._read(pid, "schedstat").split()[0])
        except (OSError, ValueError, IndexError):
            return ticks  # no schedstat (CONFIG_SCHED_INFO off): clock ticks it is
        return ns * self.clk_tck / 1e9

    def _first_sight(self, tick: _Tick, pid: str, comm: bytes, ppid: str, start: int, cpu: float,
                     child: int) -> bool:
        try:
            proc = self._identify(pid, comm, ppid, start, cpu, child)
        except OSError:
            return False
        self._track(pid, proc)
        if not tick.first:
            # Unknown at the last listing: all its CPU (and its reaped
            # children's) was spent since, or was never charged.
            tick.charge(proc.job, cpu + child - tick.seen.pop(pid, 0), proc.cg)
        return cpu + child > 0

    def _follow(self, pid: str, proc: _Proc, comm: bytes, ppid: str, start: int, cpu: float, child: int) -> None:
        """A known process was reparented, or called exec (a new environment may name a new job)."""
        if ppid != proc.ppid:
            kids = self._kids.get(proc.ppid)
            if kids is not None:
                kids.discard(pid)
            self._kids.setdefault(ppid, set()).add(pid)
            proc.ppid = ppid
        if comm == proc.comm or pid == self._agent:
            return
        proc.comm = comm
        try:
            fresh = self._identify(pid, comm, ppid, start, cpu, child)
        except OSError:
            return
        proc.env_denied = proc.env_denied or fresh.env_denied
        if fresh.job != proc.job or fresh.cg != proc.cg:
            self._move(proc, fresh.job, fresh.cg)
        self._adopt(pid, fresh)

    def _charge_since_last(self, tick: _Tick, pid: str, proc: _Proc, cpu: float, child: int) -> bool:
        d_cpu = cpu - proc.cpu
        d_child: float = child - proc.child
        moved = d_cpu > 0 or d_child > 0
        d_child -= tick.seen.pop(pid, 0)
        tick.charge(proc.job, d_cpu, proc.cg)
        if d_child > 0:
            self._charge_reaped(tick, pid, proc, d_child)
        proc.cpu, proc.child = cpu, child
        proc.idle_reads = 0 if moved else proc.idle_reads + 1
        return moved

    def _charge_reaped(self, tick: _Tick, pid: str, proc: _Proc, d_child: float) -> None:
        """CPU of children the process reaped that we did not charge while they lived."""
        tagged = [k for k in tick.gone_kids.get(pid, ()) if not k.job.reserved]
        if pid == INIT:
            # Orphans init reaped: mostly ones we never saw, nobody's job we know (a job cgroup
            # claims its own through cpu.stat). Even when a tagged orphan is among them, init's
            # cutime mixes in everyone else's orphans: giving it all to that job would charge
            # it for strangers (a Slurm job's zombie reaped late did exactly that).
            tick.charge(SYSTEM_JOB, d_child, None)
        elif proc.job.reserved and tagged:
            # A reserved parent (a login shell's _untagged, the agent) reaped
            # tagged children: the tail of their CPU since our last read is theirs.
            weights = [k.cpu + k.child + 1 for k in tagged]
            total = float(sum(weights))
            for k, w in zip(tagged, weights):
                tick.charge(k.job, d_child * w / total, k.cg)
        else:
            tick.charge(proc.job, d_child, proc.cg)

    # -- cgroup v2 ground truth ---------------------------------------------
    def _reconcile_cgroups(self, charged: dict[JobKey, float], cg_charged: dict[str, dict[JobKey, float]]) -> int:
        """Make each job cgroup's charges add up to its cpu.stat usage delta.

        Per-process charges inside the cgroup that fall short of the cgroup's
        usage (children the parents have not reaped, reaped by an ignoring
        parent, or orphaned) are completed on the cgroup's owner job; charges
        that exceed it (late or doubly counted CPU) are scaled down.
        """
        if self._cg_root is None:
            return 0
        reads = 0
        for cg in set(self._cg_members) | set(self._cg_last):
            try:
                with open(f"{self._cg_root}/{cg.lstrip('/')}/cpu.stat") as f:
                    usage = parse_cpu_stat_usec(f.read())
            except OSError:
                usage = None
            reads += 1
            last = self._cg_last.pop(cg, None)
            owner = self._cg_owner.get(cg)
            if cg in self._cg_members and usage is not None:
                self._cg_last[cg] = usage
            else:
                self._cg_owner.pop(cg, None)  # its last processes left: one final read, now forgotten
            if usage is None or last is None or usage < last:
                continue
            truth = (usage - last) * self.clk_tck / 1e6
            per_job = cg_charged.get(cg, {})
            seen_ticks = sum(per_job.values())
            if seen_ticks > truth:
                scale = truth / seen_ticks
                for job, ticks in per_job.items():
                    charged[job] -= ticks * (1.0 - scale)
            elif truth > seen_ticks:
                if owner is not None:
                    charged[owner] = charged.get(owner, 0.0) + truth - seen_ticks
        return reads
