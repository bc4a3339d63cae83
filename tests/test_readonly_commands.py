"""Read-only commands never create or chmod state (issue 19, item 2).

``report``, ``top``, ``doctor`` and ``carbon sync`` with nothing to do (the
static table) leave the state directory exactly as they found it: absent
stays absent (so a later ``report`` still says "no ledger", and the service
user is not locked out of a root-owned file), present stays byte for byte,
mode for mode, owner for owner. Run as root and, where it matters, as an
unprivileged user who may read the state but not write it (setpriv, over a
staged copy of the code: tests/other_user.py).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.other_user import NOBODY, Staged, setpriv, world_dir
from wattledger.model.points import Point
from wattledger.store.ledger import Ledger

CLI = "from wattledger.cli.main import main; main()"

# (command, what its stdout must show) for a state dir with a ledger in it.
READERS: list[tuple[tuple[str, ...], str]] = [
    (("report",), "train"),
    (("report", "--format", "json"), '"co2e_basis"'),
    (("top", "--once"), "no tick in the last"),
    (("doctor",), "procfs"),
    (("carbon", "sync"), "carbon sync: nothing to do"),
]


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int, int]]:
    """Every path under ``root`` (itself too): mode, owner, group, size, mtime."""
    out = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        out[str(p.relative_to(root.parent))] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                                                st.st_mtime_ns)
    return out


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
    return {**env, "WATTLEDGER_AGENT_GPUS": "never", **extra}


def wl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


def write_ledger(state: Path) -> None:
    """A stopped agent's ledger: one tick of a tagged job, closed (no -wal, no -shm)."""
    tags = {"host": "h", "component": "cpu", "device": "package-0", "source": "rapl"}
    t = time.time_ns() - 600 * 10**9  # in the report's default 24 h, older than top's last minute
    ledger = Ledger.in_state_dir(state)
    ledger.append([Point("wl_node", tags, {"energy_j": 50.0, "power_w": 10.0, "interval_s": 5.0}, t),
                   Point("wl_job", {**tags, "job": "train", "user": "ada"}, {"energy_j": 50.0}, t)])
    ledger.close()


@pytest.mark.parametrize("how", ["--state-dir", "WATTLEDGER_AGENT_STATE_DIR"])
def test_an_absent_state_dir_stays_absent(tmp_path: Path, how: str) -> None:
    state = tmp_path / "var-lib-wattledger"
    opts = ("--state-dir", str(state)) if how == "--state-dir" else ()
    env = clean_env(**({"WATTLEDGER_AGENT_STATE_DIR": str(state)} if not opts else {}))
    r = wl("carbon", "sync", "--config", "/dev/null", *opts, env=env)
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr
    for cmd in (("report",), ("top", "--once")):
        r = wl(*cmd, "--config", "/dev/null", *opts, env=env)
        assert r.returncode == 1 and f"no ledger at {state}" in r.stderr, r.stderr
    r = wl("doctor", "--config", "/dev/null", env=env)  # doctor reads [agent] state_dir (idle baselines)
    assert r.returncode == 0, r.stderr
    assert not state.exists()


def test_a_ledger_is_left_as_it_was(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_ledger(state)
    before = snapshot(state)
    for cmd, shows in READERS:
        r = wl(*cmd, "--config", "/dev/null", *(("--state-dir", str(state)) if cmd[0] != "doctor" else ()),
               env=clean_env(WATTLEDGER_AGENT_STATE_DIR=str(state)))
        assert r.returncode == 0 and shows in r.stdout, (cmd, r.stdout, r.stderr)
        assert snapshot(state) == before, cmd


@pytest.fixture
def root_owned_state() -> Iterator[Path]:
    """A state dir the way the service leaves it to a group member: root's, readable, not writable by them."""
    shared = world_dir("wl-readonly-cmds-")
    try:
        state = shared / "state"
        write_ledger(state)
        for p in [state, *state.iterdir()]:
            os.chown(p, 0, 0)
            p.chmod(0o755 if p.is_dir() else 0o644)
        yield state
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_an_unprivileged_reader_changes_nothing(other_user_code: Staged, root_owned_state: Path) -> None:
    state = root_owned_state
    before = snapshot(state)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "WATTLEDGER_AGENT_GPUS": "never",
           "WATTLEDGER_AGENT_STATE_DIR": str(state)}
    for cmd, shows in READERS:
        r = subprocess.run([*setpriv(NOBODY), *other_user_code.argv(CLI), *cmd, "--config", "/dev/null"],
                           capture_output=True, text=True, env=env, cwd="/", timeout=120)
        assert r.returncode == 0 and shows in r.stdout, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        assert snapshot(state) == before, cmd
