"""A real one-node Slurm (Debian's slurmctld, slurmd and munge) for integration tests.

FIELD-NOTES, "Slurm on one machine": munged with its own key and socket,
slurmctld and slurmd from a slurm.conf in a temporary directory (their own
ports, state, spool, pid and log files), no slurmdbd. Everything lives under
one directory in /tmp that the jobs' user can traverse (pytest's own tmp is
0700), and every daemon is stopped by the PID it wrote.

The node is named ``wltest<n>`` (not the host's name), so the cgroups that
proctrack/cgroup makes (``freezer/slurm_wltest<n>/...``) are recognisably
this cluster's and are removed at the end.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.daemon import free_port

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")
FREEZER = Path("/sys/fs/cgroup/freezer")


def missing_programs() -> list[str]:
    return [p for p in DAEMONS if shutil.which(p) is None]


def cgroup_v1_freezer() -> bool:
    """proctrack/cgroup with cgroup/v1 needs a writable v1 freezer hierarchy."""
    return (FREEZER / "cgroup.procs").exists() and os.access(FREEZER, os.W_OK)


class SlurmCluster:
    """munged + slurmctld + slurmd on loopback; ``sbatch`` jobs as ``user`` (default: nobody)."""

    def __init__(self, *, proctrack: str = "linuxproc", epilog: Path | None = None, user: str = "nobody",
                 node: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="wl-slurm-", dir="/tmp"))
        self.root.chmod(0o755)
        self.proctrack = proctrack
        self.epilog = epilog
        self.user = pwd.getpwnam(user)
        self.node = node or f"wltest{os.getpid() % 10000}"
        self.work = self.root / "work"  # the jobs' working directory, theirs to write
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._pids: dict[str, int] = {}

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start_munge()
            self._write_config()
            for daemon in ("slurmctld", "slurmd"):
                args = [daemon, "-f", str(self.conf)] + (["-N", self.node] if daemon == "slurmd" else [])
                subprocess.run(args, env=self.env, check=True, timeout=30, capture_output=True)
                self._pids[daemon] = self._wait_pid(self.root / f"{daemon}.pid")
            self._wait_idle()
        except BaseException:
            self.stop()
            raise

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        (munge / "etc").mkdir(parents=True)
        (munge / "run").mkdir()
        (munge / "etc").chmod(0o700)
        for d in (munge, munge / "run"):
            d.chmod(0o755)
        key = munge / "etc" / "munge.key"
        subprocess.run(["mungekey", "-c", "-f", "-k", str(key)], check=True, timeout=30, capture_output=True)
        subprocess.run(["chown", "-R", "munge:munge", str(munge)], check=True, timeout=30)
        self.munge_socket = munge / "run" / "munge.socket.2"
        cmd = ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "munged",
               f"--socket={self.munge_socket}", f"--key-file={key}", f"--log-file={munge / 'etc' / 'munged.log'}",
               f"--pid-file={munge / 'run' / 'munged.pid'}", f"--seed-file={munge / 'etc' / 'munged.seed'}"]
        subprocess.run(cmd, check=True, timeout=30, capture_output=True)
        self._pids["munged"] = self._wait_pid(munge / "run" / "munged.pid")

    def _write_config(self) -> None:
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir()
        self.work.mkdir()
        os.chown(self.work, self.user.pw_uid, self.user.pw_gid)
        lines = [
            "ClusterName=wltest", f"SlurmctldHost={socket.gethostname().split('.')[0]}", "SlurmUser=root",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            f"ProctrackType=proctrack/{self.proctrack}", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "ReturnToService=2", "MinJobAge=600",
            "PrologEpilogTimeout=120",
            f"NodeName={self.node} NodeHostname={socket.gethostname().split('.')[0]} NodeAddr=127.0.0.1 "
            f"CPUs={os.cpu_count() or 1} State=UNKNOWN",
            f"PartitionName=wlpart Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        if self.epilog is not None:
            lines.append(f"Epilog={self.epilog}")
        self.conf.write_text("\n".join(lines) + "\n")
        if self.proctrack == "cgroup":
            (self.root / "cgroup.conf").write_text(
                "CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\nCgroupAutomount=no\n")

    def _wait_pid(self, path: Path, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                return int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.05)
        raise RuntimeError(f"no pid file {path}; logs under {self.root / 'log'}")

    def _wait_idle(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True,
                               timeout=30)
            state = r.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"node not idle after {timeout_s} s (state {state!r}); see {self.root / 'log'}")

    # -- jobs --------------------------------------------------------------------------------
    def sbatch(self, script: str, *args: str) -> str:
        """Submit a batch script as the cluster's user; the job id (an array job's master id)."""
        path = self.root / f"job-{time.monotonic_ns()}.sh"
        path.write_text(script)
        r = subprocess.run(["sbatch", "--parsable", f"--uid={self.user.pw_name}", f"--gid={self.user.pw_gid}",
                            f"--chdir={self.work}", *args, str(path)], env=self.env, capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch failed: {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def job_states(self) -> dict[str, str]:
        """Every job Slurm still knows (MinJobAge keeps finished ones): {id: state}, array tasks as A_a."""
        r = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=self.env, capture_output=True,
                           text=True, timeout=30)
        return dict(line.split() for line in r.stdout.splitlines() if line.strip())

    def job_ids(self, array_id: str) -> dict[str, str]:
        """{display id "A_a": the task's own job id} for an array job."""
        r = subprocess.run(["squeue", "-h", "-t", "all", "-j", array_id, "-o", "%i %A"], env=self.env,
                           capture_output=True, text=True, timeout=30)
        return dict(line.split() for line in r.stdout.splitlines() if line.strip())

    def wait_finished(self, ids: list[str], timeout_s: float = 180.0) -> dict[str, str]:
        """Wait until these jobs (array tasks included) are done and their Epilogs ran; their states."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = {i: s for i, s in self.job_states().items() if re.sub(r"_.*", "", i) in ids}
            if states and all(s not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING") for s in states.values()):
                return states
            time.sleep(0.3)
        raise RuntimeError(f"jobs {ids} not finished after {timeout_s} s: {self.job_states()}")

    def log(self, name: str) -> str:
        try:
            return (self.root / "log" / name).read_text(errors="replace")
        except OSError:
            return ""

    # -- stop --------------------------------------------------------------------------------
    def stop(self) -> None:
        for daemon in ("slurmd", "slurmctld", "munged"):
            pid = self._pids.pop(daemon, None)
            if pid is not None:
                _terminate(pid)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        """proctrack/cgroup leaves freezer/slurm_<node>/ behind: remove it (deepest first), if ours."""
        top = FREEZER / f"slurm_{self.node}"
        if not top.is_dir():
            return
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
            try:
                d.rmdir()
            except OSError:
                pass

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _terminate(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after the timeout; waits until the process is gone (daemons are not our children)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False
