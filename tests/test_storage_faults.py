"""Issue 17, items 1, 2, 3 and 11 (and issue 14's full disk): one agent per state dir, a full disk or a
damaged ledger never kills the agent, every storage error is one line, and the state files are private.

Each test failed on the code before these changes: a second agent started and double-counted; a full disk
raised ``sqlite3.OperationalError`` out of ``Ledger.append``; a damaged file raised ``DatabaseError`` with a
traceback; files were created 0644 under a permissive umask.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wattledger.agent.factory import build_agent
from wattledger.agent.loop import Agent
from wattledger.config import Config, Gpus
from wattledger.model.activity import ProcSample
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergyCounter, EnergySample
from wattledger.store.ledger import LEDGER_FILE, Ledger
from tests.full_disk import checkpoint, fill
from tests.other_user import CLEAN_ENV, Staged, setpriv, world_dir
from tests.clocks import FakeClock

T0 = 1_709_596_800 * 10**9
SEC = 10**9
REPO = Path(__file__).resolve().parent.parent


class Power:
    """A counter rising at 40 W."""

    name = "fakecpu"

    def read(self, now_ns: int) -> EnergySample:
        return EnergySample(now_ns, (EnergyCounter("cpu", "package-0", "fake", int((now_ns - T0) / 1e9 * 40e6)),))


class Busy:
    name = "procfs"

    def __init__(self) -> None:
        self.last: int | None = None

    def read(self, read_ns: int, want_pids: object = ()) -> ProcSample:
        dt = None if self.last is None else (read_ns - self.last) / 1e9
        self.last = read_ns
        busy = 2.0 * (dt or 0)
        return ProcSample(read_ns, dt is None, busy, 4 * (dt or 0), 4, {JobKey("j", "u"): busy} if dt else {}, {})


def agent_on(ledger: Ledger, ticks_from: int = 0) -> tuple[Agent, list[Point]]:
    clock = iter(range(T0 + ticks_from * SEC, T0 + 10_000 * SEC, SEC))
    cfg = Config()
    cfg.agent.gpus = Gpus.NEVER
    made: list[Point] = []
    agent = build_agent(cfg, ledger, energy=[Power()], procs=Busy(), clock=FakeClock(lambda: next(clock)), host="h",
                        carbon_sync=False, on_tick=lambda r: made.extend(r.points))
    agent.commit(agent.tick())
    return agent, made


def energy(points: list[Point] | list[dict[str, object]], measurement: str = WL_JOB) -> float:
    total = 0.0
    for p in points:
        if isinstance(p, Point):
            total += float(p.fields["energy_j"]) if p.measurement == measurement else 0.0
        else:
            total += float(p["energy_j"])  # type: ignore[arg-type]
    return total


def cli(*args: str, uid: int | None = None, umask: int | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "wattledger.cli.main", *args]
    if uid is not None:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
    env = dict(os.environ, WATTLEDGER_AGENT_GPUS="never", PYTHONPATH=str(REPO))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The command failed with a one-line message and no traceback; the line."""
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


# -- 1. one agent per state directory ----------------------------------------------------------------


def agent_args(state: Path, *extra: str) -> list[str]:
    return ["agent", "--state-dir", str(state), "--sysfs-root", str(state.parent / "nosys"), "--interval", "0.2",
            *extra]


@pytest.mark.slow
def test_a_second_agent_refuses_the_state_dir_and_names_the_first_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (tmp_path / "nosys").mkdir()
    env = dict(os.environ, WATTLEDGER_AGENT_GPUS="never", PYTHONPATH=str(REPO))
    first = subprocess.Popen([sys.executable, "-m", "wattledger.cli.main", *agent_args(state)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while not (state / LEDGER_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a few ticks
        second = cli(*agent_args(state, "--ticks", "5"), timeout=30)
        line = one_line_error(second)
        assert f"PID {first.pid}" in line and "already using the state directory" in line
        # Readers are not affected while the first agent runs.
        assert cli("report", "--state-dir", str(state), "--since", "1h").returncode == 0
        assert cli("top", "--state-dir", str(state), "--once").returncode == 0
        doc = cli("doctor", "--state-dir", str(state), "--sysfs-root", str(tmp_path / "nosys"))
        assert f"agent PID {first.pid} holds" in doc.stdout, doc.stdout + doc.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    assert first.returncode == 0
    # Once it is gone, the directory is free again (the lock dies with its process, kill -9 included).
    assert cli(*agent_args(state, "--ticks", "2")).returncode == 0


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from wattledger.store.lock import StateDirLock\n"
            "StateDirLock(%r).acquire(); print('held', flush=True); time.sleep(60)\n") % (str(REPO), str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    from wattledger.store.lock import StateDirBusy, StateDirLock, holder as lock_holder

    with pytest.raises(StateDirBusy, match=f"PID {holder.pid}"):
        StateDirLock(tmp_path).acquire()
    assert lock_holder(tmp_path) == holder.pid
    holder.kill()
    holder.wait()
    with StateDirLock(tmp_path):
        pass


# -- 2. a full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB file system: a tmpfs, else a loop-mounted ext4 image; skipped (with the reason) if neither mounts."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    tried = []
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        tried.append(f"tmpfs: {r.stderr.strip()}")
        image = tmp_path / "small.img"
        with open(image, "wb") as f:
            f.truncate(8 << 20)
        mk = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
        r = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True) \
            if mk.returncode == 0 else mk
        if r.returncode != 0:
            tried.append(f"loop: {r.stderr.strip()}")
            pytest.skip("cannot mount a small file system here (" + "; ".join(tried) + ")")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_holds_ticks_in_memory_and_writes_them_when_space_returns(
        small_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    from wattledger.store.guard import GuardedLedger

    state = small_fs / "state"
    ledger = GuardedLedger(state / LEDGER_FILE, buffer_points=10_000)
    agent, made = agent_on(ledger)
    for _ in range(5):
        agent.commit(agent.tick())
    ledger.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = len(ledger.rows(WL_NODE))
    filler = fill(small_fs)
    caplog.set_level(logging.INFO)
    for _ in range(20):
        agent.commit(agent.tick())  # keeps measuring, never raises
    assert ledger.held_points > 0 and len(ledger.rows(WL_NODE)) == before
    said = [r for r in caplog.records if "disk full" in r.getMessage()]
    assert len(said) == 1 and "held in memory" in said[0].getMessage()  # loudly, and once
    assert "\n" not in said[0].getMessage()
    filler.unlink()
    agent.commit(agent.tick())
    assert ledger.held_points == 0
    assert any("writable again" in r.getMessage() for r in caplog.records)
    ledger.close()
    # The ledger opens and reports correctly: every tick made is there, once.
    reader = Ledger(state / LEDGER_FILE, readonly=True)
    assert energy(reader.rows(WL_JOB)) == pytest.approx(energy(made), rel=1e-9)
    assert len(reader.rows(WL_NODE)) == 26
    reader.close()
    from wattledger import report as rp

    again = Ledger(state / LEDGER_FILE)
    r = rp.from_ledger(again, Config(), T0, T0 + 3600 * SEC)
    assert r.total.it_j == pytest.approx(energy(made), rel=1e-9)
    again.close()


def test_what_the_memory_buffer_cannot_hold_is_dropped_oldest_first_and_counted(
        small_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    from wattledger.store.guard import GuardedLedger

    state = small_fs / "state"
    ledger = GuardedLedger(state / LEDGER_FILE, buffer_points=10)
    agent, made = agent_on(ledger)
    ledger.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = fill(small_fs)
    for _ in range(12):
        agent.commit(agent.tick())
    filler.unlink()
    agent.commit(agent.tick())
    counts = ledger.meta()
    lost_points, lost_ticks = int(counts["lost_points"]), int(counts["lost_ticks"])
    assert lost_ticks > 0 and lost_points > 0
    kept_ticks = len({r["time_ns"] for r in ledger.rows(WL_NODE)})
    assert kept_ticks + lost_ticks == 13  # 12 while full, 1 after (the first tick only primes the counters)
    times = sorted({p.time_ns for p in made})
    assert {r["time_ns"] for r in ledger.rows(WL_NODE)} == set(times[lost_ticks:])  # the oldest went
    assert any("could not be kept" in r.getMessage() and str(lost_ticks) in r.getMessage() for r in caplog.records)
    ledger.close()
    from wattledger.agent.doctor import ledger_rows

    cfg = Config()
    cfg.agent.state_dir = str(state)
    assert any(f"{lost_points} point(s)" in r.detail and not r.ok for r in ledger_rows(cfg))


@pytest.mark.slow
def test_the_agent_service_survives_a_full_disk_and_says_so_once(small_fs: Path, tmp_path: Path) -> None:
    """The command as systemd runs it: before, it died with sqlite3.OperationalError after a few ticks."""
    state = small_fs / "state"
    (tmp_path / "nosys").mkdir()
    assert cli(*agent_args(state, "--ticks", "2")).returncode == 0
    checkpoint(state / LEDGER_FILE)
    fill(small_fs)
    r = cli("agent", "--state-dir", str(state), "--sysfs-root", str(tmp_path / "nosys"), "--interval", "0.1",
            "--ticks", "15")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("disk full") == 1, r.stderr  # said once, not once a tick
    assert "could not be written before the agent stopped" in r.stderr


# -- 3. a damaged ledger -------------------------------------------------------------------------------


def spooled_ledger(state: Path, ticks: int = 30) -> int:
    """A ledger with ``ticks`` ticks still waiting in the outbox; the number of points spooled."""
    ledger = Ledger(state / LEDGER_FILE, spool=True)
    agent, made = agent_on(ledger)
    for _ in range(ticks):
        agent.commit(agent.tick())
    n = ledger.spool_counts()["spooled"]
    ledger.close()
    return n


def root_page(path: Path, table: str) -> int:
    db = sqlite3.connect(str(path))
    (page,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    db.close()
    return int(page)


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def garbage_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"this is not a database at all" * 4)


def garbage_mid_file(path: Path) -> None:
    """Garbage over the raw wl_node table's root page: the first write of a tick runs into it."""
    page = root_page(path, "wl_node_raw")
    with open(path, "r+b") as f:
        f.seek((page - 1) * 4096)
        f.write(os.urandom(4096))


@pytest.mark.parametrize("damage", [truncate, garbage_header, garbage_mid_file])
def test_a_damaged_ledger_is_moved_aside_and_a_fresh_one_started(tmp_path: Path, damage: object,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from wattledger.store.guard import GuardedLedger

    state = tmp_path / "state"
    spooled = spooled_ledger(state)
    damage(state / LEDGER_FILE)  # type: ignore[operator]
    caplog.set_level(logging.INFO)
    ledger = GuardedLedger(state / LEDGER_FILE, spool=True)
    agent, made = agent_on(ledger, ticks_from=100)
    for _ in range(3):
        agent.commit(agent.tick())  # never raises
    moved = sorted(state.glob(f"{LEDGER_FILE}.corrupt-*"))
    assert [p for p in moved if not p.name.endswith("-wal")], "the damaged file was not moved aside"
    said = [r for r in caplog.records if "moved it aside" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR and "\n" not in said[0].getMessage()
    # The fresh ledger holds the new ticks, and what could be read of the old outbox.
    new_times = {p.time_ns for p in made if p.measurement == WL_NODE}
    assert new_times <= {r["time_ns"] for r in ledger.rows(WL_NODE)}
    salvaged = ledger.spool_counts()["spooled"] - sum(1 for p in made if p.time_ns in new_times)
    if damage is garbage_mid_file:
        assert salvaged == spooled  # the outbox's pages were intact: every undelivered point is back
    assert f"{salvaged} undelivered" in said[0].getMessage()
    ledger.close()
    assert Ledger(state / LEDGER_FILE, readonly=True).rows(WL_NODE)


def test_slurm_job_details_follow_the_ledger_when_a_damaged_one_is_moved_aside(tmp_path: Path) -> None:
    """store/jobinfo.py writes through a connection of its own: after the ledger was replaced, it writes to
    the fresh file, never to the one moved aside."""
    from wattledger.model.slurm import SlurmJob
    from wattledger.store.errors import Fault, StorageError
    from wattledger.store.guard import GuardedLedger
    from wattledger.store.jobinfo import JobInfoStore

    path = tmp_path / "state" / LEDGER_FILE
    info = JobInfoStore(path)  # opens nothing yet: a full disk at start costs the agent nothing
    assert not path.exists()
    ledger = GuardedLedger(path)
    agent, _ = agent_on(ledger)
    agent.commit(agent.tick())
    info.record("h", T0, {JobKey("slurm-1", "alice"): SlurmJob("1", account="phys")})
    ledger.on_fault(StorageError(Fault.CORRUPT, path, "read", "database disk image is malformed"))
    info.record("h", T0 + SEC, {JobKey("slurm-2", "alice"): SlurmJob("2", account="phys")})
    info.close()
    ledger.close()
    reader = JobInfoStore(path, readonly=True)
    assert [r.tag for r in reader.records()] == ["slurm-2"]
    reader.close()
    (moved,) = [p for p in path.parent.glob(f"{LEDGER_FILE}.corrupt-*") if not p.name.endswith("-wal")]
    old = JobInfoStore(moved, readonly=True)
    assert [r.tag for r in old.records()] == ["slurm-1"]
    old.close()


@pytest.mark.slow
@pytest.mark.parametrize("damage", [truncate, garbage_header, garbage_mid_file])
def test_the_agent_service_starts_over_on_a_damaged_ledger(tmp_path: Path, damage: object) -> None:
    """The command as systemd runs it: before, a traceback and a restart loop."""
    state = tmp_path / "state"
    spooled_ledger(state)
    damage(state / LEDGER_FILE)  # type: ignore[operator]
    (tmp_path / "nosys").mkdir()
    r = cli(*agent_args(state, "--ticks", "3"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("moved it aside") == 1, r.stderr
    assert list(state.glob(f"{LEDGER_FILE}.corrupt-*"))
    assert Ledger(state / LEDGER_FILE, readonly=True).rows(WL_NODE)


@pytest.mark.parametrize("damage", [truncate, garbage_header, garbage_mid_file])
def test_the_cli_says_a_damaged_ledger_in_one_line(tmp_path: Path, damage: object) -> None:
    state = tmp_path / "state"
    spooled_ledger(state, ticks=200)
    damage(state / LEDGER_FILE)  # type: ignore[operator]
    for args in (["report", "--since", "30d"], ["top", "--once"], ["resend", "--since", "30d", "--dry-run"]):
        r = cli(*args, "--state-dir", str(state))
        if r.returncode == 0:  # a reader may not touch the damaged pages at all
            continue
        line = one_line_error(r)
        assert "damaged" in line and str(state / LEDGER_FILE) in line, line


def as_other(staged: Staged, uid: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run as ``uid`` from the staged copy (a private clone's venv is not reachable by that uid)."""
    return subprocess.run([*setpriv(uid), *staged.argv("from wattledger.cli.main import main; main()"), *args],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={**CLEAN_ENV, "WATTLEDGER_AGENT_GPUS": "never"})


def test_an_unwritable_state_dir_is_one_line_for_the_agent_and_the_cli(other_user_code: Staged) -> None:
    root = world_dir("wl-unwritable-")
    try:
        state = root / "state"
        spooled_ledger(state)
        state.chmod(0o755)
        (state / LEDGER_FILE).chmod(0o644)  # readable, but the directory is not the agent user's
        (root / "nosys").mkdir(mode=0o755)
        line = one_line_error(as_other(other_user_code, 65533, *agent_args(state, "--ticks", "2")))
        assert str(state) in line and "writable" in line
        # A reader that can read it still reports; carbon sync (a writer) says it cannot write, in one line.
        # (--no-runs: the runs files live in root's private data dir, not that user's)
        assert as_other(other_user_code, 65533, "report", "--state-dir", str(state), "--since", "30d",
                        "--no-runs").returncode == 0
        series = root / "own_series.csv"  # a provider with something to fetch: the static table has nothing
        series.write_text((REPO / "tests" / "fixtures" / "carbon" / "own_series.csv").read_text())
        series.chmod(0o644)
        config = root / "carbon.toml"
        config.write_text(f'[carbon]\nprovider = "csv"\ncsv_path = "{series}"\nzone = "GB"\n')
        config.chmod(0o644)
        line = one_line_error(as_other(other_user_code, 65533, "carbon", "sync", "--config", str(config),
                                       "--state-dir", str(state)))
        assert str(state) in line
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- 11. private files whatever the umask ----------------------------------------------------------------


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.slow
def test_the_agent_creates_its_state_0640_in_a_0750_dir_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state"
    (tmp_path / "nosys").mkdir()
    (tmp_path / "new").mkdir()
    r = cli(*agent_args(state, "--ticks", "40"), umask=0)
    assert r.returncode == 0, r.stderr
    assert mode(state) == 0o750
    files = [p for p in state.iterdir()]
    assert {p.name for p in files} >= {LEDGER_FILE, "agent.lock", "idle-baselines.json"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o640 for p in files}


def test_the_ledger_and_its_wal_are_0640_even_as_a_library_under_umask_0(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ledger = Ledger(tmp_path / "fresh" / LEDGER_FILE)
        ledger.append([Point(WL_NODE, {"host": "h", "component": "cpu", "device": "0", "source": "x"},
                             {"energy_j": 1.0, "interval_s": 1.0}, T0)])
        assert mode(tmp_path / "fresh") == 0o750
        for name in (LEDGER_FILE, f"{LEDGER_FILE}-wal", f"{LEDGER_FILE}-shm"):
            assert mode(tmp_path / "fresh" / name) == 0o640, name
        ledger.close()
        (tmp_path / "old.sqlite3").touch(mode=0o666)
        os.chmod(tmp_path / "old.sqlite3", 0o666)
        Ledger(tmp_path / "old.sqlite3").close()
        assert mode(tmp_path / "old.sqlite3") == 0o640  # an existing world-readable ledger is narrowed
    finally:
        os.umask(old)
