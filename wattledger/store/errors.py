"""Storage faults as one-line messages that say what happened and what to do.

SQLite reports every problem as ``sqlite3.OperationalError`` or
``sqlite3.DatabaseError`` with a terse text; the agent has to tell a full disk
(keep measuring, hold ticks in memory, write them later) from a damaged file
(move it aside, start a fresh one) from a directory it may not write (nothing
it can do: the admin must). ``classify`` names the kind; ``StorageError``
carries it with a message fit for a log line or a CLI error.
"""

from __future__ import annotations

import enum
import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Fault(enum.Enum):
    FULL = "disk full"
    IO = "I/O error"
    CORRUPT = "damaged"
    DENIED = "not writable"
    BUSY = "busy"
    OTHER = "error"

    @property
    def transient(self) -> bool:
        """May clear by itself (space freed, disk back, lock released): keep the data and retry."""
        return self in (Fault.FULL, Fault.IO, Fault.BUSY, Fault.DENIED)


# SQLite primary result codes (sqlite3.h).
_CODES = {13: Fault.FULL, 10: Fault.IO, 11: Fault.CORRUPT, 26: Fault.CORRUPT, 14: Fault.DENIED,
          8: Fault.DENIED, 3: Fault.DENIED, 23: Fault.DENIED, 5: Fault.BUSY, 6: Fault.BUSY}
_TEXTS = (("disk is full", Fault.FULL), ("disk i/o error", Fault.IO), ("malformed", Fault.CORRUPT),
          ("not a database", Fault.CORRUPT), ("unable to open", Fault.DENIED), ("readonly", Fault.DENIED),
          ("read-only", Fault.DENIED), ("locked", Fault.BUSY), ("authoriz", Fault.DENIED))
_ERRNOS = {errno.ENOSPC: Fault.FULL, errno.EDQUOT: Fault.FULL, errno.EIO: Fault.IO, errno.EACCES: Fault.DENIED,
           errno.EPERM: Fault.DENIED, errno.EROFS: Fault.DENIED}

_ADVICE = {
    Fault.FULL: "free space on that file system (or give [ledger] smaller retention); the agent keeps "
                "measuring and writes what it holds when space returns",
    Fault.IO: "check the disk (dmesg, smartctl); the agent keeps measuring and retries",
    Fault.CORRUPT: "the agent moves a damaged ledger aside and starts a fresh one; to recover what is "
                   "readable: sqlite3 FILE .recover | sqlite3 recovered.sqlite3",
    Fault.DENIED: "make the state directory and its files writable by the agent's user (systemd: "
                  "StateDirectory=wattledger does it), or pass --state-dir DIR",
    Fault.BUSY: "another process holds the ledger locked; it is retried",
    Fault.OTHER: "see `wattledger doctor`",
}


def classify(exc: BaseException) -> Fault:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if isinstance(code, int) and (code & 0xFF) in _CODES:
        return _CODES[code & 0xFF]
    if isinstance(exc, OSError) and exc.errno in _ERRNOS:
        return _ERRNOS[exc.errno]
    text = str(exc).lower()
    for needle, fault in _TEXTS:
        if needle in text:
            return fault
    return Fault.OTHER


class StorageError(RuntimeError):
    """A ledger operation failed; ``str()`` is one line: what, where, why, what to do."""

    def __init__(self, fault: Fault, path: Path, action: str, detail: str) -> None:
        self.fault, self.path, self.action, self.detail = fault, path, action, detail
        super().__init__(f"cannot {action} the ledger {path}: {fault.value} ({detail}); "
                         f"{_ADVICE[fault].replace('FILE', str(path))}")


def disk_full(path: Path, below_bytes: int = 1 << 20) -> bool:
    """Is the file system that holds ``path`` (nearly) out of space? SQLite says "disk I/O error" when it
    cannot even grow its shared-memory file; this tells the admin what it really is."""
    for p in (path, *path.parents):
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize < below_bytes
    return False


@contextmanager
def storage_errors(path: Path, action: str) -> Iterator[None]:
    """Turn sqlite3 and OS errors inside the block into one StorageError."""
    try:
        yield
    except StorageError:
        raise
    except (sqlite3.Error, OSError) as e:
        fault = classify(e)
        if fault is Fault.IO and disk_full(path):
            fault = Fault.FULL
        raise StorageError(fault, path, action, str(e).strip().splitlines()[0] if str(e) else
                           type(e).__name__) from e
