"""This machine's own OS booted in ``systemd-nspawn``, for tests that need a real systemd.

FIELD-NOTES, "systemd for real": ``systemd-nspawn -D / --volatile=yes -b``
boots the host's ``/usr`` read-only over an empty tmpfs root, so nothing the
test does inside reaches the host. In this sandbox it needs
``--register=no --keep-unit``, and ``systemd.firstboot=off`` on the kernel
command line or the first-boot wizard waits for a key. We also pass:

* ``systemd.unit=basic.target``: the empty ``/etc`` gets the distribution's
  presets, which enable every installed service (a database, a scheduler...);
  they would start inside and share the host's network. The test starts
  what it needs by hand.
* ``--tmpfs=/usr/local``: ``/usr`` is read-only, and deploy/install.sh
  writes ``/usr/local/bin`` and ``/usr/local/lib/{sysusers,tmpfiles}.d``.

Commands run inside with ``nsenter`` into the container's namespaces, with a
clean environment (the host's ``PIP_*`` and ``WATTLEDGER_*`` stay out).
Every step has a timeout; ``close`` powers the container off (and kills
nspawn if it does not go).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psutil

CLEAN_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
             "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"]


class CannotBoot(RuntimeError):
    """nspawn cannot run here (not root, no namespaces...): the reason, for a skip."""


def why_not() -> str | None:
    """Why no container can be booted here, or None."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    if shutil.which("systemd-nspawn") is None:
        return None  # installable: scripts/test.sh installs systemd-container (the test fails, saying so)
    if not Path("/usr/lib/systemd/systemd").exists() and not Path("/lib/systemd/systemd").exists():
        return "no systemd on this machine to boot"
    return None


class Container:
    def __init__(self, log: Path, binds: Sequence[tuple[Path, str]] = (), binds_ro: Sequence[tuple[Path, str]] = ()):
        self.name = f"wl-{uuid.uuid4().hex[:10]}"
        self.log = log
        args = ["systemd-nspawn", "-D", "/", "--volatile=yes", "--tmpfs=/usr/local:mode=0755", "--register=no",
                "--keep-unit", "-M", self.name, "--quiet"]
        args += [f"--bind={src}:{dst}" for src, dst in binds]
        args += [f"--bind-ro={src}:{dst}" for src, dst in binds_ro]
        args += ["-b", "systemd.firstboot=off", "systemd.unit=basic.target"]
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT)
        self.init_pid: int | None = None

    def boot(self, timeout_s: float = 60.0) -> float:
        """Wait until the container's systemd is up; the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout_s
        while self.init_pid is None:
            if self.proc.poll() is not None:
                raise CannotBoot(f"systemd-nspawn exited with {self.proc.returncode}: {self.output()[-600:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the container's systemd did not start in {timeout_s} s: {self.output()[-600:]}")
            kids = [p for p in psutil.Process(self.proc.pid).children(recursive=True) if _named(p, "systemd")]
            self.init_pid = kids[0].pid if kids else None
            time.sleep(0.05)
        while True:
            state = self.run("systemctl", "is-system-running", check=False, timeout_s=10).stdout.strip()
            if state in ("running", "degraded"):
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise AssertionError(f"the container did not finish booting in {timeout_s} s (state {state!r})")
            time.sleep(0.1)

    def run(self, *cmd: str, check: bool = True, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A command inside the container, as root, with a clean environment."""
        assert self.init_pid is not None, "boot() first"
        full = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "--", *CLEAN_ENV, *cmd]
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def sh(self, script: str, check: bool = True, timeout_s: float = 60.0) -> str:
        return self.run("/bin/sh", "-c", script, check=check, timeout_s=timeout_s).stdout

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def close(self, timeout_s: float = 30.0) -> int | None:
        """Power the container off; nspawn's exit status (None when it had to be killed)."""
        try:
            if self.proc.poll() is None and self.init_pid is not None:
                self.run("systemctl", "poweroff", "--no-block", check=False, timeout_s=10)
            return self.proc.wait(timeout=timeout_s)
        except (subprocess.TimeoutExpired, AssertionError):
            self.proc.terminate()  # nspawn powers the container off on SIGTERM
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
            return None
        finally:
            self._log_file.close()


def _named(proc: psutil.Process, name: str) -> bool:
    """Whether ``proc`` is called ``name``; False for one that exited since it was listed (the container's
    start runs short-lived helpers)."""
    try:
        return bool(proc.name() == name)
    except psutil.NoSuchProcess:
        return False
