"""Per-job CPU time from /proc, cheap enough for thousands of processes.

Reading every process every tick costs too much (FIELD-NOTES: ~50 ms of CPU per
pass over 2,000 processes in Python, ~5% of a core at 1 s ticks). So:

* ``/proc/stat`` once per tick gives the host's busy CPU time: the total that
  processes must explain.
* A new process (new pid, or a pid whose start time changed: reuse) is read
  in full once: ``stat``, owner uid, ``environ`` (the job tag), ``cgroup``.
* Every tick we re-read only the processes that can matter: tagged ones, the
  agent itself, *hot* ones (CPU changed recently) and the parents of
  processes that vanished (to collect their children's CPU).
* If the busy time the re-read processes explain falls short of
  ``/proc/stat`` by more than a small threshold, a *cold* process woke up:
  the remaining processes are read in the same tick (a full scan). A full
  scan also runs every ``full_scan_every`` ticks as a safety net.
* Children that live shorter than a tick are charged through their parent's
  ``cutime + cstime`` (fields 16-17 of stat), minus what was already charged
  for the children we did see before they exited.
* Busy time no process explains is charged to ``_system``.

A process is identified by (pid, start time), field 22 of stat. Per-tick work
is proportional to the new, tagged and busy processes, not to all of them.

Unlike the energy collectors this one returns interval activity per job, not
cumulative counters: identifying processes across ticks needs the per-pid
state that only the collector holds (see docs/design-notes.md).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from wattledger.agent.jobs import (
    AGENT_JOB,
    DEFAULT_TAG_VARS,
    MAX_TAG_CHARS,
    PHASE_VAR,
    PROJECT_VAR,
    SYSTEM_JOB,
    UNTAGGED,
    JobKey,
    job_for,
    parse_environ,
)
from wattledger.collectors.base import ProbeResult, SourceState

SOURCE = "procfs"
ENVIRON_FIX = (
    "reading other users' /proc/<pid>/environ needs CAP_SYS_PTRACE: run the agent as root or as the "
    "wattledger service (ambient CAP_SYS_PTRACE); until then other users' processes count as _untagged"
)


@dataclass(frozen=True)
class StatFields:
    ppid: int
    cpu_ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime (reaped children)
    start_ticks: int


def parse_stat(text: str) -> StatFields:
    """Parse /proc/<pid>/stat. The command name (field 2) may hold spaces and ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3].
    return StatFields(
        ppid=int(rest[1]),
        cpu_ticks=int(rest[11]) + int(rest[12]),
        child_ticks=int(rest[13]) + int(rest[14]),
        start_ticks=int(rest[19]),
    )


@dataclass(frozen=True)
class HostCpu:
    busy_ticks: int
    ncpu: int


def parse_proc_stat(text: str) -> HostCpu:
    """Busy = user + nice + system + irq + softirq (guest is inside user; steal is not ours)."""
    busy = 0
    ncpu = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            busy = v[0] + v[1] + v[2] + (v[5] if len(v) > 5 else 0) + (v[6] if len(v) > 6 else 0)
        elif line.startswith("cpu"):
            ncpu += 1
    return HostCpu(busy, max(ncpu, 1))


@dataclass
class _Proc:
    start_ticks: int
    ppid: int
    uid: int
    job: JobKey
    cpu_ticks: int
    child_ticks: int
    idle_reads: int = 0  # consecutive reads without any CPU change


@dataclass(frozen=True)
class ProcSample:
    now_ns: int
    interval_s: float | None  # None on the first read (baseline only)
    busy_s: float  # host busy CPU seconds in the interval (/proc/stat)
    capacity_s: float  # ncpu * interval
    driver_s: dict[JobKey, float]  # CPU seconds per job, _system and _agent included
    holders: dict[JobKey, float]  # jobs with a live process (occupancy policy)
    processes_read: int = 0
    full_scan: bool = False
    environ_denied: int = 0


@dataclass
class ProcCollector:
    procfs_root: Path = Path("/proc")
    tag_vars: tuple[str, ...] = DEFAULT_TAG_VARS
    max_tag_chars: int = MAX_TAG_CHARS
    agent_pid: int = field(default_factory=os.getpid)
    hot_after_idle_reads: int = 3  # a process stays hot this many unchanged reads
    full_scan_every: int = 60
    name: str = SOURCE

    def __post_init__(self) -> None:
        self.procfs_root = Path(self.procfs_root)
        self.clk_tck = os.sysconf("SC_CLK_TCK")
        self._procs: dict[int, _Proc] = {}
        self._users: dict[int, str] = {}
        self._last_busy: int | None = None
        self._last_ns: int | None = None
        self._last_uptime_ticks: int | None = None
        self._ticks = 0
        self._wanted_env = frozenset(self.tag_vars) | {PROJECT_VAR, PHASE_VAR}
        self.environ_denied_pids: set[int] = set()

    # -- small readers -------------------------------------------------------
    def _read(self, *parts: str | int) -> bytes:
        with open(os.path.join(self.procfs_root, *map(str, parts)), "rb") as f:
            return f.read()

    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def _uptime_ticks(self) -> int:
        return int(float(self._read("uptime").split()[0]) * self.clk_tck)

    # -- identity ------------------------------------------------------------
    def _identify(self, pid: int, stat: StatFields) -> _Proc:
        uid = os.stat(os.path.join(self.procfs_root, str(pid))).st_uid
        user = self._user(uid)
        if pid == self.agent_pid:
            return _Proc(stat.start_ticks, stat.ppid, uid, AGENT_JOB, stat.cpu_ticks, stat.child_ticks)
        env: dict[str, str] = {}
        try:
            env = parse_environ(self._read(pid, "environ"), self._wanted_env)
        except PermissionError:
            self.environ_denied_pids.add(pid)
        except OSError:
            pass  # kernel threads and zombies have no environ
        cgroup = ""
        try:
            cgroup = self._read(pid, "cgroup").decode("utf-8", "replace")
        except OSError:
            pass
        job = job_for(user, env, cgroup, self.tag_vars, self.max_tag_chars)
        parent = self._procs.get(stat.ppid)
        if job.tag == UNTAGGED and parent is not None and parent.uid == uid and not parent.job.reserved:
            job = parent.job  # children inherit, within the same user only
        return _Proc(stat.start_ticks, stat.ppid, uid, job, stat.cpu_ticks, stat.child_ticks)

    def job_of_pid(self, pid: int) -> JobKey:
        """The job of a host pid (NVML reports host pids); read on demand if new."""
        proc = self._procs.get(pid)
        if proc is None:
            try:
                stat = parse_stat(self._read(pid, "stat").decode())
                proc = self._identify(pid, stat)
            except (OSError, ValueError, IndexError):
                return JobKey(UNTAGGED, "")
        return proc.job

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
        detail = f"{len(pids)} processes, {host.ncpu} CPUs"
        if denied:
            return ProbeResult(
                SOURCE, SourceState.PERMISSION_DENIED,
                f"{detail}; environ of {denied} other users' processes unreadable (their tags are not seen)",
                ENVIRON_FIX,
            )
        return ProbeResult(SOURCE, SourceState.FOUND, detail)

    def read(self, now_ns: int) -> ProcSample:
        host = parse_proc_stat(self._read("stat").decode())
        uptime_ticks = self._uptime_ticks()
        first = self._last_busy is None
        interval_s = None if first else (now_ns - (self._last_ns or now_ns)) / 1e9
        busy_ticks = 0 if first else max(0, host.busy_ticks - (self._last_busy or 0))
        since_ticks = self._last_uptime_ticks
        self._last_busy, self._last_ns, self._last_uptime_ticks = host.busy_ticks, now_ns, uptime_ticks
        self._ticks += 1

        charged: dict[JobKey, int] = {}  # ticks

        def charge(job: JobKey, ticks: int) -> None:
            if ticks > 0:
                charged[job] = charged.get(job, 0) + ticks

        live = {int(p) for p in os.listdir(self.procfs_root) if p.isdigit()}
        known = self._procs

        # Vanished processes: remember what we had already charged for them,
        # per parent, so the parent's cutime only adds what we never saw.
        seen_child_ticks: dict[int, int] = {}
        must_read: set[int] = set()
        for pid in list(known):
            if pid not in live:
                gone = known.pop(pid)
                seen_child_ticks[gone.ppid] = seen_child_ticks.get(gone.ppid, 0) + gone.cpu_ticks + gone.child_ticks
                must_read.add(gone.ppid)

        reads = 0
        full_scan = first or self._ticks % self.full_scan_every == 0

        def visit(pid: int) -> None:
            nonlocal reads
            try:
                stat = parse_stat(self._read(pid, "stat").decode())
            except (OSError, ValueError, IndexError):
                return  # exited between listdir and read
            reads += 1
            proc = known.get(pid)
            if proc is not None and proc.start_ticks != stat.start_ticks:
                proc = None  # pid reused
            if proc is None:
                try:
                    proc = self._identify(pid, stat)
                except OSError:
                    return
                known[pid] = proc
                # A process born in this interval: all its CPU (and its reaped
                # children's) was spent in the interval. Older ones: baseline.
                if since_ticks is not None and stat.start_ticks >= since_ticks:
                    charge(proc.job, stat.cpu_ticks + stat.child_ticks - seen_child_ticks.pop(pid, 0))
                return
            d_cpu = max(0, stat.cpu_ticks - proc.cpu_ticks)
            d_child = max(0, stat.child_ticks - proc.child_ticks - seen_child_ticks.pop(pid, 0))
            charge(proc.job, d_cpu + d_child)
            proc.idle_reads = 0 if (d_cpu or stat.child_ticks != proc.child_ticks) else proc.idle_reads + 1
            proc.cpu_ticks, proc.child_ticks, proc.ppid = stat.cpu_ticks, stat.child_ticks, stat.ppid

        visited: set[int] = set()
        for pid in live:
            proc = known.get(pid)
            if (
                full_scan
                or proc is None
                or pid in must_read
                or not proc.job.reserved
                or proc.job == AGENT_JOB
                or proc.idle_reads < self.hot_after_idle_reads
            ):
                visit(pid)
                visited.add(pid)

        # Cold processes woke up? Compare with the host's busy time.
        if not first and not full_scan:
            explained = sum(charged.values())
            threshold = max(3, int(0.01 * host.ncpu * (interval_s or 0) * self.clk_tck))
            if busy_ticks - explained > threshold:
                full_scan = True
                for pid in live - visited:
                    visit(pid)

        driver_s: dict[JobKey, float] = {}
        if not first:
            explained = sum(charged.values())
            for job, ticks in charged.items():
                driver_s[job] = ticks / self.clk_tck
            unexplained = busy_ticks - explained
            if unexplained > 0:
                driver_s[SYSTEM_JOB] = driver_s.get(SYSTEM_JOB, 0.0) + unexplained / self.clk_tck
        holders = {p.job: 1.0 for p in known.values() if p.job != AGENT_JOB}
        return ProcSample(
            now_ns=now_ns,
            interval_s=interval_s,
            busy_s=busy_ticks / self.clk_tck,
            capacity_s=host.ncpu * (interval_s or 0.0),
            driver_s=driver_s,
            holders=holders,
            processes_read=reads,
            full_scan=full_scan,
            environ_denied=len(self.environ_denied_pids),
        )
