"""The Slurm job summary: job details beside the ledger, the Epilog's sums, where it writes and as whom.

The whole thing on a real Slurm is tests/test_slurm_e2e.py; here each part on
its own: store/jobinfo.py, report/epilog.py, the settle request the agent
answers, and the ``wattledger slurm`` commands.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.clocks import FakeClock
from wattledger.agent.factory import build_agent
from wattledger.cli.main import main
from wattledger.config import Config
from wattledger.model.activity import ProcSample
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_AGENT, WL_JOB, Point
from wattledger.model.readings import EnergyCounter, EnergySample
from wattledger.model.slurm import SlurmJob
from wattledger.report.epilog import (
    SUMMARY_MARK, EpilogError, EpilogJob, deliver, epilog, output_file, summarise, summary_text, write_as,
)
from wattledger.store.jobinfo import JobFilter, JobInfoStore, request_settle, settle_requested_ns
from wattledger.store.ledger import Ledger

T0 = 1_800_000_000_000_000_000
S = 1_000_000_000
ALICE = JobKey("slurm-5", "alice")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="writing as the job's user needs root, as the Epilog runs")


# -- store/jobinfo.py ---------------------------------------------------------------------
def test_a_job_is_one_row_that_its_ticks_extend(tmp_path: Path) -> None:
    Ledger.in_state_dir(tmp_path).close()
    store = JobInfoStore(tmp_path / "ledger.sqlite3")
    store.record("n1", T0, {ALICE: SlurmJob("5", name="train")})
    store.record("n1", T0 + S, {ALICE: SlurmJob("5", account="phys", name="other")})
    store.record("n1", T0 + 2 * S, {JobKey("slurm-6", "bob"): SlurmJob("6", "6", "0", partition="gpu")})
    (five,) = store.records(JobFilter(tag="slurm-5"))
    assert (five.first_ns, five.last_ns) == (T0, T0 + S)
    assert five.slurm == SlurmJob("5", name="train", account="phys")  # fields it lacked filled in, not replaced
    assert [r.tag for r in store.records(JobFilter(partition="gpu"))] == ["slurm-6"]
    assert [r.tag for r in store.records(JobFilter(since_ns=T0 + 2 * S))] == ["slurm-6"]
    assert [r.tag for r in store.records(JobFilter(until_ns=T0 + 1))] == ["slurm-5"]
    assert store.records(JobFilter(job_id="6"))[0].slurm.display_id == "6_0"
    store.close()


def test_a_ledger_without_the_table_has_no_jobs(tmp_path: Path) -> None:
    Ledger.in_state_dir(tmp_path).close()
    assert JobInfoStore(tmp_path / "ledger.sqlite3", readonly=True).records() == []


# -- the settle request ----------------------------------------------------------------------
class CountingProcs:
    name = "procfs"

    def __init__(self) -> None:
        self.requests = 0

    def request_full_scan(self) -> None:
        self.requests += 1

    def read(self, read_ns: int, want_pids: Sequence[int] = ()) -> ProcSample:
        return ProcSample(read_ns, False, 0.0, 1.0, 1, {}, {})


class Flat:
    name = "flat"

    def read(self, read_ns: int) -> EnergySample:
        return EnergySample(read_ns, (EnergyCounter("cpu", "package-0", "fake", read_ns // 1000),))


def test_the_agent_answers_each_settle_request_once(tmp_path: Path) -> None:
    ledger = Ledger.in_state_dir(tmp_path)
    request_settle(tmp_path)  # an old request, from before the agent started: not for it
    procs = CountingProcs()
    clock = FakeClock(lambda: T0)
    agent = build_agent(Config(), ledger, energy=[Flat()], procs=procs, clock=clock, carbon_sync=False)
    agent.tick()
    assert procs.requests == 0
    time.sleep(0.01)
    asked = request_settle(tmp_path)
    assert settle_requested_ns(tmp_path) is not None and settle_requested_ns(tmp_path) <= asked  # type: ignore[operator]
    agent.tick()
    agent.tick()
    assert procs.requests == 1
    ledger.close()


# -- the Epilog's environment and the output file -------------------------------------------
ENV = {"SLURM_JOB_ID": "5", "SLURM_JOB_USER": "alice", "SLURM_JOB_UID": "1000", "SLURM_JOB_GID": "1000",
       "SLURM_JOB_WORK_DIR": "/home/alice/run", "SLURMD_NODENAME": "n1"}


def test_the_epilog_reads_its_environment() -> None:
    job = EpilogJob.from_env(ENV)
    assert (job.job_id, job.uid, job.gid, job.stdout) == ("5", 1000, 1000, "")
    with pytest.raises(EpilogError, match="SLURM_JOB_ID"):
        EpilogJob.from_env({})
    with pytest.raises(EpilogError, match="SLURM_JOB_UID"):
        EpilogJob.from_env({"SLURM_JOB_ID": "5"})


def test_the_output_file_is_named_as_sbatch_named_it() -> None:
    job = EpilogJob.from_env(ENV)
    assert output_file(job, None) == Path("/home/alice/run/slurm-5.out")
    assert output_file(job, SlurmJob("5", "4", "1")) == Path("/home/alice/run/slurm-4_1.out")
    named = EpilogJob.from_env({**ENV, "SLURM_JOB_STDOUT": "logs/%x-%j.txt"})
    assert output_file(named, SlurmJob("5", name="train")) == Path("/home/alice/run/logs/train-5.txt")
    assert output_file(named, None) is None  # no name known: not guessed
    absolute = EpilogJob.from_env({**ENV, "SLURM_JOB_STDOUT": "/scratch/%u/%j.out"})
    assert output_file(absolute, None) == Path("/scratch/alice/5.out")


@pytest.fixture
def traversable() -> Iterator[Path]:
    """A directory every user can reach (pytest's own tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="wl-epilog-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@as_root
def test_the_summary_is_written_as_the_jobs_user(traversable: Path) -> None:
    tmp_path = traversable
    nobody = pwd.getpwnam("nobody")
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, nobody.pw_uid, nobody.pw_gid)
    out = work / "slurm-5.out"
    out.write_text("job output\n")
    os.chown(out, nobody.pw_uid, nobody.pw_gid)
    job = EpilogJob("5", "nobody", nobody.pw_uid, nobody.pw_gid, str(work), "", "n1")
    assert deliver(job, "summary\n", None, fallback=True) == out
    assert out.read_text() == "job output\nsummary\n"
    # A user's symlink to a file they may not write: the writer (the user, never root) refuses.
    out.unlink()
    secret = tmp_path / "root-only"
    secret.write_text("x")
    secret.chmod(0o600)
    out.symlink_to(secret)
    with pytest.raises(EpilogError, match="cannot write"):
        write_as(nobody.pw_uid, nobody.pw_gid, out, "y", create=False)
    assert secret.read_text() == "x"
    # No output file (the link is not followed): the fallback in the working directory, the user's own.
    spare = deliver(job, "summary\n", None, fallback=True)
    assert spare == work / "wattledger-slurm-5.txt" and spare.stat().st_uid == nobody.pw_uid
    with pytest.raises(EpilogError, match="no summary written"):
        deliver(job, "again\n", None, fallback=True)  # never overwrites a file that is there


def test_a_non_regular_output_is_refused(tmp_path: Path) -> None:
    """--output=/dev/null, a FIFO: nothing is written (and the Epilog never blocks on a FIFO)."""
    with pytest.raises(EpilogError, match="not a regular file"):
        write_as(os.getuid(), os.getgid(), Path("/dev/null"), "x", create=False)
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    with pytest.raises(EpilogError, match="cannot write"):
        write_as(os.getuid(), os.getgid(), fifo, "x", create=False)


# -- the sums ------------------------------------------------------------------------------
def _job_row(tag: str, user: str, t: int, energy_j: float, component: str = "cpu") -> Point:
    return Point(WL_JOB, {"host": "n1", "job": tag, "user": user, "component": component, "device": "package-0",
                          "source": "rapl"}, {"energy_j": energy_j, "dynamic_j": energy_j, "static_j": 0.0,
                                              "driver_s": 1.0}, t)


def _ledger_with_a_job(tmp_path: Path) -> Ledger:
    ledger = Ledger.in_state_dir(tmp_path)
    now = time.time_ns()
    ledger.append([_job_row("slurm-5", "alice", now - 3 * S, 100.0), _job_row("slurm-5", "alice", now - 2 * S, 50.0,
                                                                              "dram"),
                   _job_row("sweep", "alice", now - 2 * S, 30.0), _job_row("slurm-6", "bob", now - 2 * S, 999.0),
                   Point(WL_AGENT, {"host": "n1"}, {"tick_s": 0.01}, now - S)])
    store = JobInfoStore(ledger.path)
    store.record("n1", now - 3 * S, {ALICE: SlurmJob("5", name="train", account="phys")})
    store.record("n1", now - 2 * S, {JobKey("sweep", "alice"): SlurmJob("5")})  # WATTLEDGER_JOB inside the job
    store.close()
    return ledger


def test_the_summary_sums_every_tag_of_the_slurm_job(tmp_path: Path) -> None:
    ledger = _ledger_with_a_job(tmp_path)
    s = summarise(ledger, Config(), "5", time.time_ns())
    assert s.tags == ["slurm-5", "sweep"] and s.energy_j == pytest.approx(180.0)
    assert s.energy_j_by_component == pytest.approx({"cpu": 130.0, "dram": 50.0})
    assert s.facility_kwh == pytest.approx(180.0 / 3.6e6 * 1.58)
    assert s.g_co2e == pytest.approx(s.facility_kwh * 480.0)  # WORLD's static figure
    text = summary_text(s)
    assert "Slurm job 5 (train)" in text and "account phys" in text
    data = json.loads(text.splitlines()[-1][len(SUMMARY_MARK) + 1:])
    assert data["energy_j"] == pytest.approx(180.0) and data["slurm_id"] == "5" and data["complete"] is True
    ledger.close()


def test_the_epilog_says_when_the_agent_did_not_tick(tmp_path: Path) -> None:
    ledger = _ledger_with_a_job(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "slurm-5.out").write_text("")
    cfg = Config()
    cfg.slurm.epilog_timeout_s = 0.0
    env = {**ENV, "SLURM_JOB_UID": str(os.getuid()), "SLURM_JOB_GID": str(os.getgid()),
           "SLURM_JOB_WORK_DIR": str(work)}
    path, summary = epilog(cfg, ledger, env, started_ns=time.time_ns())
    assert path == work / "slurm-5.out" and summary.complete is False
    assert "did not commit a tick" in path.read_text()
    ledger.close()


# -- the commands ------------------------------------------------------------------------------
def test_the_epilog_command_never_fails_the_node(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["slurm", "epilog", "--state-dir", str(tmp_path)], env={"SLURM_JOB_ID": "5"})
    assert r.exit_code == 0 and "no ledger" in r.output  # said on stderr (slurmd's log), exit 0


def test_the_summary_command(tmp_path: Path) -> None:
    _ledger_with_a_job(tmp_path).close()
    r = CliRunner().invoke(main, ["slurm", "summary", "5", "--state-dir", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["energy_j"] == pytest.approx(180.0)
    r = CliRunner().invoke(main, ["slurm", "summary", "slurm-5", "--state-dir", str(tmp_path)])
    assert r.exit_code != 0 and "42, not slurm-42" in r.output
