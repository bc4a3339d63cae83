"""A full disk for tests: take every free byte of a (small) file system, and make SQLite need new space."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def fill(where: Path) -> Path:
    """Take every free byte of ``where``'s file system; delete the returned file to give the space back."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def checkpoint(ledger_path: Path) -> None:
    """Fold the WAL into the file and truncate it, so the next write needs new space."""
    db = sqlite3.connect(str(ledger_path), timeout=30)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
