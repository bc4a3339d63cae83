"""The real collector on this machine's /proc: short-lived children, spoofed tags,
and (where a writable cgroup v2 hierarchy exists) a job cgroup's ground truth.

These tests compare what the collector charged with what the processes
measured themselves (the shell's ``times``, each child's ``os.times()``), so a
loaded machine slows them down but does not change the figures much: CPU
time is CPU time whoever else runs.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.other_user import needs_root_and_setpriv, other_python, setpriv
from wattledger.model.jobs import JobKey
from wattledger.collectors.procs import ProcCollector
from wattledger.collectors.procs import cgroup_v2_root
from wattledger.model.activity import ProcSample

ME = pwd.getpwuid(os.getuid()).pw_name
NOBODY_UID = 65534

# ~30 ms of CPU per child: interpreter start-up (~10-15 ms) plus a busy loop to 20 ms.
CHILD = "import time\ne = time.process_time() + 0.02\nwhile time.process_time() < e: pass"
SHELL = """
i=0
while [ $i -lt 200 ]; do
  "$PY" -S -c "$CHILD"
  sleep 0.02
  i=$((i+1))
done
times
"""


def charged(samples: list[ProcSample], key: JobKey) -> float:
    return sum(s.charged_s.get(key, 0.0) for s in samples)


def tick_until_exit(collector: ProcCollector, procs: list[subprocess.Popen], interval_s: float = 1.0
                    ) -> list[ProcSample]:
    """Tick while the processes run; the last tick sees them as zombies (final times),
    before they are reaped into our own cutime."""
    samples = []
    pending = list(procs)
    while pending:
        deadline = time.monotonic() + interval_s
        while pending and time.monotonic() < deadline:
            for p in list(pending):
                info = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is not None and info.si_pid == p.pid:
                    pending.remove(p)
            time.sleep(0.02)
        samples.append(collector.read(time.time_ns()))
    for p in procs:
        p.wait()
    return samples


def parse_times(text: str) -> tuple[float, float]:
    """bash ``times``: "0m0.010s 0m0.004s" (shell) then the same for its children."""
    def seconds(tok: str) -> float:
        m, s = tok.rstrip("s").split("m")
        return 60 * float(m) + float(s)

    lines = [ln.split() for ln in text.strip().splitlines()[-2:]]
    return seconds(lines[0][0]) + seconds(lines[0][1]), seconds(lines[1][0]) + seconds(lines[1][1])


@pytest.mark.slow
def test_a_tagged_shell_s_200_short_children_are_charged_to_its_tag() -> None:
    if shutil.which("bash") is None:
        pytest.skip("needs bash (for its `times` builtin)")
    tag = f"short-lived-{os.getpid()}"
    collector = ProcCollector(procfs_root=Path("/proc"))
    collector.read(time.time_ns())
    env = dict(os.environ, WATTLEDGER_JOB=tag, PY=sys.executable, CHILD=CHILD)
    shell = subprocess.Popen(["bash", "-c", SHELL], env=env, stdout=subprocess.PIPE, text=True)
    samples = tick_until_exit(collector, [shell])
    out = shell.stdout.read() if shell.stdout else ""
    shell_self_s, children_s = parse_times(out)
    assert children_s > 200 * 0.02, out  # the children did run
    got = charged(samples, JobKey(tag, ME))
    # The tag holds the shell's own CPU and its children's: at least 95% of the
    # children's must be there, and nothing may be counted twice.
    assert got - shell_self_s >= 0.95 * children_s, (got, shell_self_s, children_s)
    assert got <= 1.05 * (shell_self_s + children_s) + 0.05, (got, shell_self_s, children_s)


BURN = """
import json, os, sys, time
e = time.process_time() + float(sys.argv[1])
while time.process_time() < e:
    pass
t = os.times()
print(json.dumps(t.user + t.system))
"""


def test_two_users_with_one_tag_are_two_jobs() -> None:
    needs_root_and_setpriv()
    as_nobody = setpriv(NOBODY_UID)
    # nobody runs an interpreter it can reach (this venv's is inside the checkout, maybe a private one).
    nobody_python = other_python()
    tag = f"shared-{os.getpid()}"
    collector = ProcCollector(procfs_root=Path("/proc"))
    collector.read(time.time_ns())
    env = dict(os.environ, WATTLEDGER_JOB=tag)
    # Each lives longer than a tick: a process first seen as a zombie has no
    # environment left to read (its tag is lost; docs/attribution.md, limits).
    mine = subprocess.Popen([sys.executable, "-c", BURN, "0.8"], env=env, stdout=subprocess.PIPE, text=True)
    theirs = subprocess.Popen([*as_nobody, nobody_python, "-I", "-c", BURN, "1.0"], env=env, stdout=subprocess.PIPE,
                              text=True, cwd="/")
    samples = tick_until_exit(collector, [mine, theirs], interval_s=0.25)
    cpu_mine = json.loads(mine.stdout.read())  # type: ignore[union-attr]
    cpu_theirs = json.loads(theirs.stdout.read())  # type: ignore[union-attr]
    nobody = collector._user(NOBODY_UID)  # "nobody", or the number where no such user is listed
    jobs = {k for s in samples for k in s.charged_s if k.tag == tag}
    assert jobs == {JobKey(tag, ME), JobKey(tag, nobody)}
    # each user is charged their own CPU, never a share of the other's
    assert charged(samples, JobKey(tag, ME)) == pytest.approx(cpu_mine, abs=0.05)
    assert charged(samples, JobKey(tag, nobody)) == pytest.approx(cpu_theirs, abs=0.05)


# Started the way slurmstepd starts a task: the process moves into the job's
# cgroup, then execs the user's program, which waits a little before working.
INTO_CGROUP = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
IGNORING_PARENT = """
import json, os, signal, sys, time
out, n = sys.argv[1], int(sys.argv[2])
time.sleep(1.5)  # a job's first tick: the agent sees it in its cgroup before the work starts
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel: no cutime
for i in range(n):
    if os.fork() == 0:
        e = time.process_time() + 0.03
        while time.process_time() < e:
            pass
        with open(f"{out}/{i}", "w") as f:
            f.write(str(time.process_time()))  # ns-precise, like cpu.stat (times() counts 10 ms ticks)
        os._exit(0)
    time.sleep(0.05)
deadline = time.monotonic() + 60
while len(os.listdir(out)) < n and time.monotonic() < deadline:  # every child done
    time.sleep(0.05)
time.sleep(0.1)
"""


def test_a_job_cgroup_charges_children_no_parent_reaped(tmp_path: Path) -> None:
    """Children auto-reaped (SIGCHLD ignored) never reach a parent's cutime; the job's
    cgroup v2 cpu.stat still counts them. Needs a writable cgroup v2 hierarchy."""
    root = cgroup_v2_root(Path("/sys/fs/cgroup"))
    if root is None or not os.access(root, os.W_OK):
        pytest.skip("no writable cgroup v2 hierarchy here (the fixture-tree tests cover the logic)")
    job_id = 900_000 + os.getpid() % 100_000
    base = root / f"wattledger-test-{os.getpid()}"
    cg = base / f"job_{job_id}"
    try:
        cg.mkdir(parents=True)
    except OSError as e:
        pytest.skip(f"cannot create a cgroup: {e}")
    out = tmp_path / "cpu"
    out.mkdir()
    try:
        with_cg = ProcCollector(procfs_root=Path("/proc"), cgroup_root=root)
        without = ProcCollector(procfs_root=Path("/proc"), use_cgroups=False)
        env = dict(os.environ, SLURM_JOB_ID=str(job_id))
        now = time.time_ns()
        with_cg.read(now)
        without.read(now)
        parent = subprocess.Popen(["sh", "-c", INTO_CGROUP, "sh", str(cg), sys.executable, "-c", IGNORING_PARENT,
                                   str(out), "40"], env=env)
        a: list[ProcSample] = []
        b: list[ProcSample] = []
        while parent.poll() is None:
            time.sleep(0.5)
            now = time.time_ns()
            a.append(with_cg.read(now))
            b.append(without.read(now))
        now = time.time_ns()
        a.append(with_cg.read(now))
        b.append(without.read(now))
        children_s = sum(float(f.read_text()) for f in out.iterdir())
        assert len(list(out.iterdir())) == 40 and children_s > 40 * 0.025
        key = JobKey(f"slurm-{job_id}", ME)
        assert charged(a, key) >= 0.95 * children_s, (charged(a, key), children_s)
        assert charged(a, key) <= 1.1 * children_s + 0.2
        assert charged(b, key) < 0.9 * children_s  # what per-process reading alone sees
    finally:
        for d in (cg, base):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
