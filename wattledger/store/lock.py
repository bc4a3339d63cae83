"""One agent per state directory (issue 17, item 1).

Two agents on one ledger would each charge the host's whole energy: the
ledger and InfluxDB would hold it twice. The agent takes an exclusive
``flock`` on ``<state dir>/agent.lock`` for as long as it runs and writes its
PID there; a second agent finds the lock taken and refuses to start, naming
that PID. The kernel drops the lock when the process ends in any way (kill -9
included), so a stale file never blocks a restart. Readers (``report``,
``top``, ``doctor``) never take it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from wattledger.store.files import FILE_MODE, make_state_dir

LOCK_FILE = "agent.lock"


class StateDirBusy(RuntimeError):
    """Another agent holds the state directory; ``str()`` is the one-line message."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir, self.pid = state_dir, pid
        who = f"PID {pid}" if pid else "a process whose PID it did not record"
        super().__init__(
            f"another wattledger agent ({who}) is already using the state directory {state_dir}: two agents "
            "would count the host's energy twice. Stop that one first (systemd: systemctl stop wattledger), "
            "or give this one its own --state-dir")


def holder(state_dir: Path, proc: Path = Path("/proc")) -> int | None:
    """The PID recorded in the lock file if that process still runs, else None (doctor; takes no lock,
    so it can never make a starting agent think the directory is busy)."""
    try:
        text = (Path(state_dir) / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not (proc / text).exists():
        return None
    return int(text)


def _pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class StateDirLock:
    """``with StateDirLock(dir):`` hold the directory for this process (raises StateDirBusy)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        make_state_dir(self.state_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid(fd)
            os.close(fd)
            raise StateDirBusy(self.state_dir, pid) from None
        self._fd = fd
        try:
            os.fchmod(fd, FILE_MODE)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same; only the PID shown to others is missing

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # no PID left behind for doctor to find
            finally:
                os.close(self._fd)  # closing drops the lock; the file stays (a stale file is harmless)
            self._fd = None

    def __enter__(self) -> "StateDirLock":
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
