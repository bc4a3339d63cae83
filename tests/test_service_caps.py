"""The capability design, tested: the agent's own readers as an unprivileged uid.

The service runs as the unprivileged user `wattledger` with two ambient
capabilities (systemd/wattledger.service). Here the same is done with
``setpriv``: a process switches to an unused uid and keeps (or not) the
capabilities as ambient ones across the exec into Python, which is exactly
what systemd's AmbientCapabilities= does. It then runs the agent's RAPL
collector against a copy of a fixture powercap tree whose ``energy_uj``
files are root-only (0400, as since CVE-2020-8694), and the procs
collector's environ reader against a process of *another* uid that carries a
WATTLEDGER_JOB. Without the capabilities both reads must fail as reported
states (never zeros), and ``doctor`` must say "permission denied" and the fix.

Measured finding (and why the unit needs both capabilities even for the
environ read): /proc/<pid>/environ is mode 0400 owned by the process's user,
so CAP_DAC_READ_SEARCH is needed to pass the file mode check and
CAP_SYS_PTRACE to pass the ptrace access check; either alone is denied.

Needs root (to switch uids); CI and the dev machines run the suite as root.
The code the unprivileged process runs is a copy of the package and its
dependencies in a world-readable temp dir, run by this venv's base
interpreter (tests/other_user.py), so the test also works when the checkout
itself is in a directory other users cannot enter (a private clone).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.other_user import Staged, setpriv, world_dir
from wattledger.collectors.procs import ENVIRON_FIX
from wattledger.collectors.rapl import PERMISSION_FIX, RaplCollector

REPO = Path(__file__).resolve().parent.parent
FIXTURE_SYSFS = REPO / "tests" / "fixtures" / "sysfs-intel-2s"
AGENT_UID = 64123  # the stand-in for the `wattledger` service user
JOB_UID = 64124  # another user running a tagged job
CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
BOTH = ("dac_read_search", "sys_ptrace")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching uids needs root and setpriv (util-linux); CI runs the suite as root",
)


@dataclass(frozen=True)
class Stage:
    root: Path
    lib: Path  # holds a copy of the wattledger package
    sysfs: Path  # fixture powercap tree, energy_uj root-only
    python: str  # an interpreter the unprivileged uid can run (lib holds the dependencies doctor needs)


@pytest.fixture(scope="module")
def stage(other_user_code: Staged) -> Iterator[Stage]:
    """The fixture sysfs tree with root-only energy_uj; the code from ``other_user_code`` (conftest.py)."""
    root = world_dir("wl-caps-")
    try:
        sysfs = root / "sysfs"
        shutil.copytree(FIXTURE_SYSFS, sysfs, symlinks=True)
        for dirpath, dirnames, filenames in os.walk(root):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    os.chown(path, 0, 0)
                    path.chmod(0o400 if name == "energy_uj" else 0o444)
        yield Stage(root, other_user_code.lib, sysfs, other_user_code.python)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def job_process() -> Iterator[tuple[int, str]]:
    """A process of another uid whose environment names a job."""
    tag = f"caps-test-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([*setpriv(JOB_UID), "env", "-i", f"WATTLEDGER_JOB={tag}", "sleep", "300"],
                            cwd="/")
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until setpriv and env have exec'd into sleep as JOB_UID
            try:
                comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
                uid = os.stat(f"/proc/{proc.pid}").st_uid
            except OSError:
                comm, uid = "", -1
            if comm == "sleep" and uid == JOB_UID:
                break
            assert time.monotonic() < deadline, "the job process did not start"
            time.sleep(0.02)
        yield proc.pid, tag
    finally:
        proc.kill()
        proc.wait()


SNIPPET = """
import json, os, sys
sys.path.insert(0, {lib!r})
from pathlib import Path
import wattledger.collectors.rapl as rapl_mod
from wattledger.collectors.procs import ProcCollector

status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
out = {{"uid": os.getuid(), "module": rapl_mod.__file__,
        "cap_eff": int(status["CapEff"], 16), "cap_amb": int(status["CapAmb"], 16)}}
r = rapl_mod.RaplCollector(sysfs_root={sysfs!r})
p = r.probe()
out["rapl_probe"] = {{"state": p.state.value, "detail": p.detail, "fix": p.fix}}
s = r.read(1)
out["rapl_counters"] = {{c.component + ":" + c.device: c.counter_uj for c in s.counters}}
out["rapl_failures"] = [[f.state.value, f.fix] for f in s.failures]
pc = ProcCollector(procfs_root=Path("/proc"))
pc.read(1)  # lists and identifies every process
job = pc.read(2, [{pid}]).jobs_by_pid[{pid}]
out["job"] = [job.tag, job.user]
out["environ_denied"] = {pid} in pc.environ_denied_pids
print(json.dumps(out))
"""


def run_readers(stage: Stage, job_pid: int, caps: tuple[str, ...]) -> dict:
    code = SNIPPET.format(lib=str(stage.lib), sysfs=str(stage.sysfs), pid=job_pid)
    r = subprocess.run([*setpriv(AGENT_UID, caps=caps), stage.python, "-I", "-c", code], capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin"}, cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["uid"] == AGENT_UID
    assert out["module"].startswith(str(stage.lib)), "the unprivileged process ran another copy of the code"
    return out


def expected_counters(stage: Stage) -> dict[str, int]:
    """What root reads: the truth the unprivileged reads are compared with."""
    sample = RaplCollector(sysfs_root=stage.sysfs).read(1)
    assert sample.counters and not sample.failures
    return {f"{c.component}:{c.device}": c.counter_uj for c in sample.counters}


def job_owner() -> str:
    try:
        return pwd.getpwuid(JOB_UID).pw_name
    except KeyError:
        return str(JOB_UID)


def test_fixture_is_root_only(stage: Stage) -> None:
    """The test setup itself: energy_uj cannot be read by the uid without capabilities."""
    energy = next(stage.sysfs.rglob("energy_uj"))
    r = subprocess.run([*setpriv(AGENT_UID), "cat", str(energy)], capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_with_both_ambient_capabilities_the_agent_reads_everything(
    stage: Stage, job_process: tuple[int, str]
) -> None:
    pid, tag = job_process
    out = run_readers(stage, pid, BOTH)
    wanted = (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_SYS_PTRACE)
    # Exactly the two capabilities, effective and ambient, inside the Python process.
    assert out["cap_eff"] == wanted and out["cap_amb"] == wanted
    assert out["rapl_probe"]["state"] == "found", out["rapl_probe"]
    assert out["rapl_counters"] == expected_counters(stage)
    assert out["rapl_failures"] == []
    assert out["job"] == [tag, job_owner()]
    assert out["environ_denied"] is False


def test_without_capabilities_reads_fail_as_reported_states(
    stage: Stage, job_process: tuple[int, str]
) -> None:
    pid, tag = job_process
    out = run_readers(stage, pid, ())
    assert out["cap_eff"] == 0
    assert out["rapl_probe"]["state"] == "permission denied"
    assert out["rapl_probe"]["fix"] == PERMISSION_FIX
    # No counter is invented: every zone is a failure with the fix, none a zero.
    assert out["rapl_counters"] == {}
    assert len(out["rapl_failures"]) == len(expected_counters(stage))
    assert all(state == "permission denied" and fix == PERMISSION_FIX for state, fix in out["rapl_failures"])
    # The other user's job tag is not seen: the process counts as untagged, under its user.
    assert out["job"] == ["_untagged", job_owner()]
    assert out["environ_denied"] is True


@pytest.mark.parametrize(
    "caps, rapl_ok, environ_ok",
    [
        (("dac_read_search",), True, False),  # environ: passes the 0400 mode check, fails ptrace
        (("sys_ptrace",), False, False),  # environ: fails the 0400 mode check before ptrace
    ],
)
def test_each_capability_alone(
    stage: Stage, job_process: tuple[int, str], caps: tuple[str, ...], rapl_ok: bool, environ_ok: bool
) -> None:
    pid, tag = job_process
    out = run_readers(stage, pid, caps)
    assert (out["rapl_probe"]["state"] == "found") is rapl_ok
    assert (out["job"][0] == tag) is environ_ok
    assert out["environ_denied"] is (not environ_ok)


def run_doctor(stage: Stage, caps: tuple[str, ...]) -> str:
    config = stage.root / "empty.toml"
    config.write_text("")
    config.chmod(0o444)
    code = f"import sys; sys.path.insert(0, {str(stage.lib)!r}); from wattledger.cli.main import main; main()"
    r = subprocess.run(
        [*setpriv(AGENT_UID, caps=caps), stage.python, "-I", "-c", code, "doctor", "--config", str(config),
         "--sysfs-root", str(stage.sysfs)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/"}, cwd="/", timeout=120,
    )
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr  # 1: nothing measurable, still a report
    return r.stdout


def doctor_line(report: str, source: str) -> list[str]:
    """The line of one source plus its fix line, if any."""
    lines = report.splitlines()
    for i, line in enumerate(lines):
        if line[3:].split(" ", 1)[0] == source:
            following = lines[i + 1 : i + 2]
            return [line] + [f for f in following if f.strip().startswith("fix:")]
    raise AssertionError(f"no {source} line in doctor's report:\n{report}")


def test_doctor_says_why_and_what_to_do_without_capabilities(
    stage: Stage, job_process: tuple[int, str]
) -> None:
    report = run_doctor(stage, ())
    rapl = doctor_line(report, "rapl")
    assert rapl[0].startswith("!! ") and "permission denied" in rapl[0], report
    assert len(rapl) == 2 and PERMISSION_FIX in rapl[1] and "CAP_DAC_READ_SEARCH" in rapl[1]
    procfs = doctor_line(report, "procfs")
    assert procfs[0].startswith("!! ") and "permission denied" in procfs[0], report
    assert len(procfs) == 2 and ENVIRON_FIX in procfs[1]


def environ_unreadable_even_for_root() -> int:
    """Processes whose environ this (root) test cannot read either.

    Normally none. In some sandboxes the supervisor (pid 1) holds capabilities
    outside our bounding set and the kernel refuses even root; the agent can
    never do better than root, so those are not the capabilities' fault.
    """
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == AGENT_UID:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                f.read()
        except PermissionError:
            n += 1
        except OSError:
            pass
    return n


def test_doctor_is_satisfied_with_both_capabilities(stage: Stage, job_process: tuple[int, str]) -> None:
    report = run_doctor(stage, BOTH)
    rapl = doctor_line(report, "rapl")
    assert rapl[0].startswith("ok ") and "found" in rapl[0], report
    procfs = doctor_line(report, "procfs")
    beyond_root = environ_unreadable_even_for_root()
    if beyond_root == 0:
        assert procfs[0].startswith("ok ") and "found" in procfs[0], report
    else:
        m = re.search(r"environ of (\d+) other users' processes unreadable", procfs[0])
        assert m and int(m.group(1)) <= beyond_root, report
