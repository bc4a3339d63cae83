"""The per-user runs file: one JSON object per ``wattledger run``, appended (JSON lines).

``wattledger run`` keeps no ledger of its own (its measurement uses a
temporary one), so each run appends its figures here: what ran, when, its
energy per component and where each figure came from, the machine, the
versions and the carbon intensity used. ``wattledger report`` reads the same
file and shows the runs beside the service's ledger, marked as run records.

Where: ``runs.jsonl`` in the user's data directory as platformdirs names it
(``$XDG_DATA_HOME/wattledger``, by default ``~/.local/share/wattledger`` on
Linux), created mode 0700: a user's runs are their own. ``--runs-file``
chooses another.

Each line is written with one ``write`` on a file opened for appending, so
two runs that finish together do not interleave. A line that does not parse
(a disk that filled up mid-line) is skipped and counted, never guessed at.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

RUNS_FILE = "runs.jsonl"
RECORD_KIND = "wattledger-run"
RECORD_VERSION = 1


def default_runs_path() -> Path:
    """``runs.jsonl`` in this user's data directory (XDG_DATA_HOME on Linux)."""
    return Path(platformdirs.user_data_dir("wattledger", appauthor=False)) / RUNS_FILE


def append_run(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record as one line (creating the directory, mode 0700, and the file, mode 0600)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = json.dumps({"kind": RECORD_KIND, "version": RECORD_VERSION, **record}, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@dataclass
class Runs:
    """The records of one runs file, and how many of its lines could not be read."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    unreadable_lines: int = 0


def read_runs(path: Path) -> Runs:
    """Every record of the file (none if it does not exist); OSError if it exists but cannot be read."""
    runs = Runs(Path(path))
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return runs
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            runs.unreadable_lines += 1
            continue
        if isinstance(record, dict) and record.get("kind") == RECORD_KIND:
            runs.records.append(record)
        else:
            runs.unreadable_lines += 1
    return runs
