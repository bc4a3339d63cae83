"""report/top open the service's ledger read-only: a group member without write access can read it,
whether the agent is running (WAL files present) or stopped (they were removed on close)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wattledger.store.ledger import Ledger
from wattledger.model.points import Point

NODE = Point("wl_node", {"host": "h", "component": "cpu", "device": "package-0", "source": "rapl"},
             {"energy_j": 5.0, "power_w": 1.0, "interval_s": 5.0}, 1)

READ = (
    "import sys; sys.path.insert(0, %r)\n"
    "from wattledger.store.ledger import Ledger\n"
    "print(len(Ledger(%r, readonly=True).rows('wl_node')))\n"
)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
@pytest.mark.parametrize("agent_running", [False, True])
def test_group_member_reads_ledger_without_write_access(tmp_path: Path, agent_running: bool) -> None:
    state = tmp_path / "state"
    writer = Ledger.in_state_dir(state)
    writer.append([NODE])
    if not agent_running:
        writer.close()  # the last connection checkpoints and removes -wal and -shm
    for p in [tmp_path, *tmp_path.parents]:
        if p != Path("/"):
            p.chmod(p.stat().st_mode | 0o711)
    for f in [state, *state.iterdir()]:
        os.chown(f, 0, 65534)
        f.chmod(0o750 if f.is_dir() else 0o640)  # service user rw, group r
    code = READ % (str(Path(__file__).parents[1]), str(state / "ledger.sqlite3"))
    r = subprocess.run(["setpriv", "--reuid=65533", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    if agent_running:
        writer.close()
