"""The service agent as ``wattledger run`` sees it: is it running, and what did it write for a tag.

When the service (``wattledger agent``, systemd) is running and its ledger
is readable, a run's figures are the service's own ``wl_job`` rows for the
run's tag: one truth, not two. "Running" means its ledger holds a tick no
older than three of its intervals (+ 2 s).

A command shorter than the service's tick would be gone before the service
read ``/proc``, and its CPU would land in the reaping parent's ``cutime``
(``wattledger run``: an untagged process). So in that mode the command runs
under a *holder*: a small tagged process (``HOLDER``, run with the job's
environment) that starts the command, reaps it, and stays alive until
the service's first tick after the exit has been written. The service
then sees the holder, tagged, with the command's CPU in its ``cutime``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattledger.model.points import SCHEMA, WL_AGENT, WL_JOB, WL_NODE, Point
from wattledger.model.units import NS_PER_S
from wattledger.store.errors import StorageError
from wattledger.store.ledger import LEDGER_FILE, Ledger

RECENT_S = 600.0  # how far back to look for the service's newest tick

# The holder: starts argv[3:], forwards signals to it, reaps it, writes its wait status to fd argv[1],
# then waits on fd argv[2] until released. Started with -I -S: a few ms of CPU.
HOLDER = r"""
import os, signal, sys
status_w, release_r = int(sys.argv[1]), int(sys.argv[2])
pid = os.fork()
if pid == 0:
    os.close(status_w); os.close(release_r)
    try:
        os.execvp(sys.argv[3], sys.argv[3:])
    except OSError as e:
        os.write(2, ("wattledger run: cannot start %r: %s\n" % (sys.argv[3], e.strerror)).encode())
        os._exit(127 if isinstance(e, FileNotFoundError) else 126)
def forward(n, _):
    try:
        os.kill(pid, n)
    except ProcessLookupError:
        pass
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, forward)
_, status = os.waitpid(pid, 0)
os.write(status_w, str(status).encode()); os.close(status_w)
os.read(release_r, 1)
"""


@dataclass(frozen=True)
class Service:
    """A running service agent's ledger."""

    path: Path
    interval_s: float
    last_tick_ns: int


def find_service(state_dir: Path, now_ns: int) -> tuple[Service | None, str]:
    """(the running service, "") or (None, why it is not used: "" when there is no service ledger at all)."""
    path = Path(state_dir) / LEDGER_FILE
    try:
        if not path.exists():
            return None, ""
        ledger = Ledger(path, readonly=True)
    except (OSError, sqlite3.Error, StorageError) as e:
        return None, (f"the service's ledger {path} is not readable by you ({e}): measuring here instead "
                      "(ask for the service's group to read it)")
    try:
        nodes = ledger.rows(WL_NODE, since_ns=now_ns - int(RECENT_S * NS_PER_S))
    except (sqlite3.Error, StorageError) as e:
        return None, f"the service's ledger {path} cannot be read ({e}): measuring here instead"
    finally:
        ledger.close()
    if not nodes:
        return None, f"the service's ledger {path} has no tick in the last {RECENT_S:.0f} s: measuring here instead"
    last = max(int(r["time_ns"]) for r in nodes)
    interval_s = max(float(r["interval_s"] or 0.0) for r in nodes if int(r["time_ns"]) == last) or 5.0
    age_s = (now_ns - last) / NS_PER_S
    if age_s > 3 * interval_s + 2:
        return None, (f"the service's last tick in {path} is {age_s:.0f} s old (is it stopped? "
                      "`systemctl status wattledger`): measuring here instead")
    return Service(path, interval_s, last), ""


@dataclass
class Held:
    """A command started under the holder."""

    proc: subprocess.Popen[bytes]
    status_r: int
    release_w: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_status(self) -> int:
        """The command's wait status (blocks until it exits)."""
        data = b""
        while chunk := os.read(self.status_r, 64):
            data += chunk
        os.close(self.status_r)
        return int(data) if data.strip() else 127 << 8

    def release(self) -> None:
        """Let the holder exit (the caller reaps it)."""
        os.close(self.release_w)


def start_held(cmd: Sequence[str], env: dict[str, str]) -> Held:
    """Start ``cmd`` under the holder (see the module's doc)."""
    status_r, status_w = os.pipe()
    release_r, release_w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", HOLDER, str(status_w), str(release_r), *cmd],
                                env=env, pass_fds=(status_w, release_r))
    finally:
        os.close(status_w)
        os.close(release_r)
    return Held(proc, status_r, release_w)


def wait_for_tick(service: Service, after_ns: int, timeout_s: float) -> int | None:
    """The time of the service's first tick at or after ``after_ns`` (None if none came within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ledger = Ledger(service.path, readonly=True)
        try:
            rows = ledger.rows(WL_AGENT, since_ns=after_ns)
        finally:
            ledger.close()
        if rows:
            return min(int(r["time_ns"]) for r in rows)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def service_points(service: Service, tag: str, user: str, since_ns: int, until_ns: int) -> list[Point] | None:
    """The service's wl_job rows of (tag, user) and the wl_node rows of the same ticks, in (since, until];
    None when the service's ledger no longer keeps every tick of that span (a run longer than its
    ``[ledger] raw_days``: compaction folded the oldest into rollups)."""
    ledger = Ledger(service.path, readonly=True)
    try:
        if ledger.raw_kept_ns() > since_ns + 1:
            return None
        jobs = [r for r in ledger.rows(WL_JOB, since_ns=since_ns + 1, until_ns=until_ns + 1)
                if r["job"] == tag and r["user"] == user]
        ticks = {int(r["time_ns"]) for r in jobs}
        nodes = [r for r in ledger.rows(WL_NODE, since_ns=since_ns + 1, until_ns=until_ns + 1)
                 if int(r["time_ns"]) in ticks]
    finally:
        ledger.close()
    return [_point(WL_NODE, r) for r in nodes] + [_point(WL_JOB, r) for r in jobs]


def _point(measurement: str, row: dict[str, Any]) -> Point:
    tags, fields = SCHEMA[measurement]
    return Point(measurement, {t: str(row[t] or "") for t in tags},
                 {f: float(row[f]) for f in fields if row.get(f) is not None}, int(str(row["time_ns"])))

