"""report/top open the service's ledger read-only: a group member without write access can read it,
whether the agent is running (WAL files present) or stopped (they were removed on close).

The reader runs as another uid (setpriv) over a copy of the code in a world-readable directory and
reads a state dir under /tmp (tests/other_user.py), so it does not matter where the checkout lives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.other_user import Staged, setpriv, world_dir
from wattledger.store.ledger import Ledger
from wattledger.model.points import Point

NODE = Point("wl_node", {"host": "h", "component": "cpu", "device": "package-0", "source": "rapl"},
             {"energy_j": 5.0, "power_w": 1.0, "interval_s": 5.0}, 1)

READ = (
    "from wattledger.store.ledger import Ledger\n"
    "print(len(Ledger(%r, readonly=True).rows('wl_node')))\n"
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every uid can enter, for a state dir only the service's group may read."""
    root = world_dir("wl-readonly-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("agent_running", [False, True])
def test_group_member_reads_ledger_without_write_access(other_user_code: Staged, shared_dir: Path,
                                                        agent_running: bool) -> None:
    state = shared_dir / "state"
    writer = Ledger.in_state_dir(state)
    writer.append([NODE])
    if not agent_running:
        writer.close()  # the last connection checkpoints and removes -wal and -shm
    for f in [state, *state.iterdir()]:
        os.chown(f, 0, 65534)
        f.chmod(0o750 if f.is_dir() else 0o640)  # service user rw, group r
    code = READ % str(state / "ledger.sqlite3")
    r = subprocess.run([*setpriv(65533, 65534), *other_user_code.argv(code)], capture_output=True, text=True,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    if agent_running:
        writer.close()
