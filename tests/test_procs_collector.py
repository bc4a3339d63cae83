"""The procs collector over a fixture procfs (and cgroup v2) tree: identity, hot/cold
reading, short-lived children, cgroup ground truth, _system and its carry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.procfs.fakeproc import FakeCgroup, FakeProc
from wattledger.model.activity import ProcSample
from wattledger.model.jobs import AGENT_JOB, SYSTEM_JOB, JobKey, untagged
from wattledger.accounting.cpu import CpuDrivers
from wattledger.collectors.procs import (
    ProcCollector,
    parse_cpu_stat_usec,
    parse_loadavg_tasks,
    parse_proc_stat,
    parse_real_uid,
    parse_stat,
)

SEC = 1_000_000_000
AGENT_PID = 999
ROOT = "root"


@dataclass
class Tick:
    """A read and the CPU drivers the agent makes of it (``_system``'s residual and carry included)."""

    sample: ProcSample
    driver_s: dict[JobKey, float]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sample, name)


class World:
    """A fake host plus a collector over it, ticking one second at a time."""

    def __init__(self, tmp_path: Path, cgroups: bool = False, **kw: object) -> None:
        self.proc = FakeProc(tmp_path / "proc")
        self.cg = FakeCgroup(tmp_path / "cgroup") if cgroups else None
        self.proc.spawn(1, 0, "init")
        self.proc.spawn(2, 0, "kthreadd")
        self.proc.spawn(AGENT_PID, 1, "wattledger")
        self.now = 0
        self.c = ProcCollector(procfs_root=self.proc.root, agent_pid=AGENT_PID,
                               cgroup_root=self.cg.root if self.cg else tmp_path / "no-cgroup", **kw)  # type: ignore[arg-type]
        self.drivers = CpuDrivers()

    def tick(self, seconds: int = 1, want_pids: tuple[int, ...] = ()) -> Tick:
        if self.now:
            self.proc.elapse(100 * seconds)
        self.now += seconds * SEC
        s = self.c.read(self.now, want_pids)
        return Tick(s, {} if s.baseline else self.drivers.drivers(s.busy_s, s.charged_s, s.capacity_s))

    def ticks(self, n: int) -> list[Tick]:
        return [self.tick() for _ in range(n)]


def job(tag: str, user: str = ROOT) -> JobKey:
    return JobKey(tag, user)


def total(samples: list[Tick], key: JobKey) -> float:
    return sum(s.driver_s.get(key, 0.0) for s in samples)


# -- parsers -----------------------------------------------------------------------
def test_parse_stat_survives_hostile_command_names() -> None:
    line = "4242 (a) b (c) 0 ) R 17 " + " ".join(["0"] * 9) + " 30 12 5 6 0 0 0 0 777 0 0\n"
    s = parse_stat(line)
    assert (s.ppid, s.cpu_ticks, s.child_ticks, s.start_ticks) == (17, 42, 11, 777)
    assert s.comm == "a) b (c) 0 "


def test_host_parsers() -> None:
    text = "cpu  10 2 30 400 5 6 7 8 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\nprocesses 123\n"
    h = parse_proc_stat(text)
    assert (h.busy_ticks, h.task_ticks, h.ncpu, h.forks) == (10 + 2 + 30 + 6 + 7, 42, 2, 123)
    assert parse_loadavg_tasks("0.10 0.20 0.30 2/345 6789\n") == 345
    assert parse_loadavg_tasks("garbage") is None
    assert parse_real_uid(b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\n") == 1000
    assert parse_cpu_stat_usec("usage_usec 1234\nuser_usec 1000\n") == 1234


# -- identity ------------------------------------------------------------------------
def test_first_read_is_a_baseline_then_new_processes_are_charged_from_birth(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(10, 1, "old", env={"WATTLEDGER_JOB": "old"}, utime=500)
    first = w.tick()
    assert first.baseline and first.driver_s == {}
    w.proc.spawn(11, 1, "train", env={"WATTLEDGER_JOB": "resnet", "WATTLEDGER_PROJECT": "vision"}, utime=40)
    s = w.tick()
    assert s.driver_s[JobKey("resnet", ROOT, "vision", "")] == pytest.approx(0.40)
    assert job("old") not in s.driver_s  # its 5 s were before our baseline


def test_tag_sources_inheritance_and_kernel_threads(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.tick()
    w.proc.spawn(20, 1, "sbatch", env={"SLURM_JOB_ID": "4242"}, utime=1)
    w.proc.spawn(21, 20, "python", env={}, utime=10)  # cleared its environment: inherits
    w.proc.spawn(22, 20, "helper", uid=65534, env={}, utime=10)  # another user: never inherits
    w.proc.spawn(23, 1, "ctr", cgroup="/system.slice/docker-" + "ab" * 32 + ".scope", utime=10)
    w.proc.spawn(24, 2, "kworker/0:1", utime=7)
    s = w.tick()
    assert s.driver_s[job("slurm-4242")] == pytest.approx(0.11)
    nobody = w.c._user(65534)
    assert s.driver_s[untagged(nobody)] == pytest.approx(0.10)
    assert s.driver_s[job("container-" + "ab" * 6)] == pytest.approx(0.10)
    assert s.driver_s[SYSTEM_JOB] == pytest.approx(0.07)
    assert JobKey("slurm-4242", ROOT) in s.holders and SYSTEM_JOB not in s.holders


def test_the_agent_charges_itself(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.tick()
    w.proc.burn(AGENT_PID, utime=2)
    s = w.tick()
    assert s.driver_s[AGENT_JOB] == pytest.approx(0.02)
    assert AGENT_JOB not in s.holders


def test_exec_with_a_new_environment_is_identified_again(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(30, 1, "bash", env={"WATTLEDGER_JOB": "outer"})
    w.tick()
    w.proc.exec_(30, "python", {"WATTLEDGER_JOB": "inner"})
    w.proc.burn(30, utime=50)
    s = w.tick()
    assert s.driver_s == {job("inner"): pytest.approx(0.5)}
    assert job("outer") not in s.holders


def test_pid_reuse_is_a_new_process(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(40, 1, "a", env={"WATTLEDGER_JOB": "a"})
    w.tick()
    w.proc.reap(40)
    w.proc.spawn(40, 1, "b", env={"WATTLEDGER_JOB": "b"}, utime=30, start=w.proc.uptime_ticks + 5)
    s = w.tick()
    assert s.driver_s.get(job("b")) == pytest.approx(0.30)
    assert job("a") not in s.driver_s


def test_unreadable_environ_is_counted(tmp_path: Path) -> None:
    if os.getuid() == 0:
        pytest.skip("root reads any file: a chmod cannot make environ unreadable")
    w = World(tmp_path)
    w.proc.spawn(50, 1, "secret", env={"WATTLEDGER_JOB": "x"}, utime=10)
    w.proc.set_environ_mode(50, 0)
    w.tick()
    assert w.c.environ_denied_pids == {50}


# -- hot / cold ------------------------------------------------------------------------
def test_idle_processes_go_cold_and_are_not_read(tmp_path: Path) -> None:
    w = World(tmp_path, full_scan_every=1000)
    for pid in range(100, 300):
        w.proc.spawn(pid, 1, "sleep")
    samples = w.ticks(6)
    assert samples[0].processes_read >= 203
    assert samples[-1].processes_read <= 2  # the agent (and nothing else)
    assert not samples[-1].listed  # nothing born, nothing died: /proc not even listed
    w.proc.spawn(300, 1, "new")
    s = w.tick()
    assert s.listed and s.processes_read <= 3


def test_a_cold_process_that_wakes_up_is_found_and_stays_hot_longer(tmp_path: Path) -> None:
    w = World(tmp_path, full_scan_every=1000)
    for pid in range(100, 300):
        w.proc.spawn(pid, 1, "sleep")
    w.proc.spawn(150_000, 1, "batch", env={"WATTLEDGER_JOB": "wakes"})
    w.ticks(6)
    assert "150000" in w.c._cold
    w.proc.burn(150_000, utime=60)
    s = w.tick()
    assert s.cold_scan
    assert s.driver_s[job("wakes")] == pytest.approx(0.60)
    assert SYSTEM_JOB not in s.driver_s
    assert w.c._procs["150000"].patience == 6  # found cold once: twice as patient


def test_small_cold_activity_goes_to_system_then_is_paid_back(tmp_path: Path) -> None:
    """Below the gap threshold a cold process is not looked for; its time counts as
    _system until the next full scan finds it, and _system pays it back (no double count)."""
    w = World(tmp_path, full_scan_every=10)
    w.proc.spawn(60, 1, "cron", env={"WATTLEDGER_JOB": "cron"})
    samples = [w.tick() for _ in range(5)]
    for _ in range(4):
        w.proc.burn(60, utime=2)  # 20 ms a second: under the 40 ms threshold
        samples.append(w.tick())
    assert total(samples, job("cron")) == 0 and total(samples, SYSTEM_JOB) == pytest.approx(0.08)
    w.proc.host_busy(system=30)  # kernel time in the next ticks
    samples += w.ticks(3)  # tick 10 is a full scan: the cron job is found
    assert total(samples, job("cron")) == pytest.approx(0.08)
    # _system got 0.08 standing in for cron, then paid it back out of the kernel's 0.30
    assert total(samples, SYSTEM_JOB) == pytest.approx(0.30)


# -- short-lived children ---------------------------------------------------------------
def test_children_shorter_than_a_tick_are_charged_through_the_parent(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(70, 1, "bash", env={"WATTLEDGER_JOB": "make"})
    samples = [w.tick()]
    for _ in range(5):
        for _ in range(20):
            w.proc.short_lived_child(70, utime=3)  # 20 children of 30 ms a second
        samples.append(w.tick())
    assert total(samples, job("make")) == pytest.approx(3.0)
    assert total(samples, SYSTEM_JOB) == 0


def test_seen_children_are_not_charged_twice_when_reaped(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(80, 1, "bash", env={"WATTLEDGER_JOB": "j"})
    samples = [w.tick()]
    w.proc.spawn(81, 80, "cc", env={"WATTLEDGER_JOB": "j"}, utime=50)
    samples.append(w.tick())
    w.proc.burn(81, utime=30)
    w.proc.reap(81)  # 30 more ticks after our last read, then reaped: parent cutime += 80
    samples.append(w.tick())
    assert total(samples, job("j")) == pytest.approx(0.80)
    assert total(samples, SYSTEM_JOB) == 0


def test_a_subtree_that_exits_together_folds_into_the_live_ancestor(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(90, 1, "login", env={})  # root's _untagged
    w.proc.spawn(91, 90, "sh", env={"WATTLEDGER_JOB": "job"})
    w.proc.spawn(92, 91, "worker", env={"WATTLEDGER_JOB": "job"})
    samples = [w.tick()]
    w.proc.burn(91, utime=10)
    w.proc.burn(92, utime=40)
    samples.append(w.tick())
    w.proc.burn(92, utime=20)  # its last second, unseen
    w.proc.reap(92)
    w.proc.reap(91)  # the login shell's cutime grows by 10 + 60
    samples.append(w.tick())
    assert total(samples, job("job")) == pytest.approx(0.70)
    assert total(samples, untagged(ROOT)) == 0  # the tail went to the tagged children, not the shell
    assert total(samples, SYSTEM_JOB) == 0


def test_a_tagged_parent_keeps_its_own_short_lived_children(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(95, 1, "bash", env={"WATTLEDGER_JOB": "a"})
    w.proc.spawn(96, 95, "x", env={"WATTLEDGER_JOB": "b"})
    samples = [w.tick()]
    w.proc.burn(96, utime=10)
    samples.append(w.tick())
    w.proc.short_lived_child(95, utime=25)
    samples.append(w.tick())
    assert total(samples, job("a")) == pytest.approx(0.25)
    assert total(samples, job("b")) == pytest.approx(0.10)


def test_orphans_learn_their_new_parent(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(100, 1, "daemonize", env={"WATTLEDGER_JOB": "d"})
    w.proc.spawn(101, 100, "daemon", env={"WATTLEDGER_JOB": "d"})
    w.tick()
    w.proc.reap(100)  # 101 is re-parented to init
    w.tick()
    assert w.c._procs["101"].ppid == "1"


def test_unexplained_busy_time_is_system(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.tick()
    w.proc.host_busy(system=12, irq=3)
    s = w.tick()
    assert s.driver_s == {SYSTEM_JOB: pytest.approx(0.15)}
    assert s.busy_s == pytest.approx(0.15)


# -- cgroup v2 ground truth ----------------------------------------------------------------
SLURM = "/system.slice/slurmstepd.scope/job_77"


def test_job_cgroup_catches_children_the_parent_never_reaped(tmp_path: Path) -> None:
    w = World(tmp_path, cgroups=True)
    w.cg.add(SLURM, 1_000_000)  # type: ignore[union-attr]
    w.proc.spawn(200, 1, "slurmstepd", cgroup=SLURM + "/step_0/slurm")
    w.proc.spawn(201, 200, "python", uid=65534, env={"SLURM_JOB_ID": "77"}, cgroup=SLURM + "/step_0/user/task_0")
    samples = [w.tick()]
    w.proc.burn(201, utime=30)
    w.cg.use(SLURM, 30 + 45)  # type: ignore[union-attr]  # + 45 ticks of children reaped with SIGCHLD ignored
    w.proc.host_busy(user=45)
    s = w.tick()
    samples.append(s)
    nobody = w.c._user(65534)
    assert s.driver_s[JobKey("slurm-77", nobody)] == pytest.approx(0.75)
    assert SYSTEM_JOB not in s.driver_s
    assert s.cgroups_read == 1


def test_job_cgroup_scales_down_late_charges_it_already_covered(tmp_path: Path) -> None:
    """A cold process in a job cgroup uses a little CPU: the cgroup charges it to the job
    at once; when a later full scan finds it, the late per-process charge is not added twice."""
    w = World(tmp_path, cgroups=True, full_scan_every=10)
    w.cg.add(SLURM)  # type: ignore[union-attr]
    w.proc.spawn(210, 1, "sh", env={"SLURM_JOB_ID": "77"}, cgroup=SLURM)
    samples = w.ticks(5)
    assert "210" in w.c._cold
    for _ in range(4):
        w.proc.burn(210, utime=2)  # under the gap threshold: not looked for
        w.cg.use(SLURM, 2)  # type: ignore[union-attr]
        samples.append(w.tick())
    assert total(samples, job("slurm-77")) == pytest.approx(0.08)
    samples.append(w.tick())  # tick 10: full scan finds 8 ticks of late CPU
    assert total(samples, job("slurm-77")) == pytest.approx(0.08)
    assert total(samples, SYSTEM_JOB) == pytest.approx(0.0, abs=1e-9)


def test_a_finished_job_cgroup_is_read_once_more(tmp_path: Path) -> None:
    w = World(tmp_path, cgroups=True)
    w.cg.add(SLURM)  # type: ignore[union-attr]
    w.proc.spawn(220, 1, "sh", env={"SLURM_JOB_ID": "77"}, cgroup=SLURM)
    w.tick()
    w.cg.use(SLURM, 20)  # type: ignore[union-attr]  # its last 200 ms, then it is gone
    w.proc.host_busy(user=20)
    w.proc.reap(220, into_parent=False)
    s = w.tick()
    assert s.driver_s.get(job("slurm-77")) == pytest.approx(0.20)
    w.cg.remove(SLURM)  # type: ignore[union-attr]
    s = w.tick()
    assert s.cgroups_read == 0


def test_processes_outside_job_cgroups_are_untouched(tmp_path: Path) -> None:
    w = World(tmp_path, cgroups=True)
    w.proc.spawn(230, 1, "x", env={"WATTLEDGER_JOB": "plain"}, cgroup="/user.slice/user-0.slice/session-1.scope")
    w.tick()
    w.proc.burn(230, utime=33)
    s = w.tick()
    assert s.driver_s == {job("plain"): pytest.approx(0.33)}
    assert s.cgroups_read == 0


def test_cgroups_off(tmp_path: Path) -> None:
    w = World(tmp_path, cgroups=True, use_cgroups=False)
    w.cg.add(SLURM)  # type: ignore[union-attr]
    w.proc.spawn(240, 1, "x", cgroup=SLURM, utime=0)
    w.tick()
    w.proc.burn(240, utime=10)
    s = w.tick()
    assert s.driver_s == {untagged(ROOT): pytest.approx(0.10)}


# -- the sum ----------------------------------------------------------------------------
def test_drivers_add_up_to_host_busy_time(tmp_path: Path) -> None:
    """Over a run with births, deaths, short-lived children and kernel time, the drivers
    sum to the busy time /proc/stat counted."""
    w = World(tmp_path, full_scan_every=7)
    for pid in range(300, 340):
        w.proc.spawn(pid, 1, "sleep", env={"WATTLEDGER_JOB": f"t{pid % 3}"})
    samples = [w.tick()]
    busy0 = w.proc.user + w.proc.system + w.proc.irq
    for i in range(30):
        w.proc.burn(300 + i % 40, utime=3 + i % 5)
        if i % 4 == 0:
            w.proc.short_lived_child(300 + (i * 7) % 40, utime=9)
        if i % 6 == 0:
            w.proc.spawn(1000 + i, 300, "kid", env={"WATTLEDGER_JOB": "kid"}, utime=4)
        if i % 6 == 3:
            w.proc.reap(1000 + i - 3)
        w.proc.host_busy(system=i % 2, irq=1)
        samples.append(w.tick())
    busy = w.proc.user + w.proc.system + w.proc.irq - busy0
    charged = sum(sum(s.driver_s.values()) for s in samples)
    assert charged == pytest.approx(busy / 100, abs=0.02)


def test_jobs_by_pid_remembers_a_process_that_just_exited(tmp_path: Path) -> None:
    """NVML reports a finished job's last utilisation samples after the procs collector buried it."""
    w = World(tmp_path)
    w.proc.spawn(70, 1, "python", env={"WATTLEDGER_JOB": "trainer"})
    assert w.tick(want_pids=(70,)).jobs_by_pid[70] == job("trainer")
    w.proc.reap(70)
    assert w.tick(want_pids=(70,)).jobs_by_pid[70] == job("trainer")  # gone from /proc, still known
    w.ticks(2)
    assert w.tick(want_pids=(70,)).jobs_by_pid[70].tag == "_untagged"  # forgotten after a few ticks
