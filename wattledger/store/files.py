"""The state directory's files: who may read them, and how the ledger file is opened.

Job, user and project names are not for every local user, so whatever the
umask: the state directory is created 0750 and the ledger 0640 (SQLite gives
its ``-wal`` and ``-shm`` files the ledger's mode). Members of the agent's
group (``wattledger`` under systemd, docs/install.md) can read; nobody else.
A ledger file found more open than 0640 is narrowed to it.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

DIR_MODE = 0o750
FILE_MODE = 0o640


def make_state_dir(path: Path) -> None:
    """Create the directory (and missing parents) 0750 whatever the umask; an existing one is left as it is."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` 0640 if missing; narrow an existing one we own to at most 0640."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        st = path.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~FILE_MODE:
            os.chmod(path, stat.S_IMODE(st.st_mode) & FILE_MODE)
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def connect_writable(path: Path) -> sqlite3.Connection:
    """The ledger for writing: WAL, incremental vacuum (for a new file), the file 0640."""
    make_state_dir(path.parent)
    new = not path.exists() or path.stat().st_size == 0
    private_file(path)
    db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    if new:
        # Must come before the first table: lets compaction give freed pages back to the file system.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            private_file(side)
    return db


def connect_readonly(path: Path) -> sqlite3.Connection:
    """For readers (report, top, doctor) who may not write the state dir: members of the service's group.

    No schema, no PRAGMA writes. While the agent runs, the -wal and -shm files
    exist and a read-only connection uses them. When it stopped cleanly they
    are gone, and a read-only connection could not create the -shm: with no
    -wal there is no writer, so the file is opened as immutable.
    """
    immutable = "" if Path(f"{path}-wal").exists() else "&immutable=1"
    db = sqlite3.connect(f"file:{path}?mode=ro{immutable}", uri=True, timeout=30, isolation_level=None,
                         check_same_thread=False)
    db.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    return db
