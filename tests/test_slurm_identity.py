"""What Slurm tells a job's processes, as the process reader keeps it: ids, details, GPUs, Prolog/Epilog.

Pure parts (model/slurm.py) by table and by property; the reader over a
fixture procfs (tests/fixtures/procfs/fakeproc.py), as in test_procs_collector.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_procs_collector import World, job, total
from wattledger.model.jobs import SYSTEM_JOB, untagged
from wattledger.model.slurm import (
    MAX_INFO_CHARS, SlurmJob, expand_output, is_scheduler_script, job_id_of_tag, output_fields, parse_gpu_ids,
    slurm_job,
)

BATCH = {"SLURM_JOB_ID": "4242", "SLURM_JOB_ACCOUNT": "physics", "SLURM_JOB_PARTITION": "gpu",
         "SLURM_JOB_NAME": "train", "SLURM_JOB_GPUS": "1,3", "CUDA_VISIBLE_DEVICES": "0,1"}


# -- model/slurm.py ---------------------------------------------------------------------
def test_a_job_from_its_environment() -> None:
    j = slurm_job(BATCH)
    assert j == SlurmJob("4242", name="train", account="physics", partition="gpu", gpus=("1", "3"))
    assert j.tag == "slurm-4242" and j.display_id == "4242"
    task = slurm_job({"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "2"})
    assert task is not None and task.display_id == "41_2" and task.tag == "slurm-43"
    assert slurm_job({"SLURM_JOB_ID": "x1"}) is None and slurm_job({}) is None


def test_gpu_ids_come_from_the_first_variable_set() -> None:
    assert parse_gpu_ids("0, 2,2,GPU-8f2a-11") == ("0", "2", "GPU-8f2a-11")
    assert parse_gpu_ids("NoDevFiles") == () and parse_gpu_ids("-1") == () and parse_gpu_ids("") == ()
    assert parse_gpu_ids("MIG-6f1c/1/0") == ("MIG-6f1c/1/0",)
    only_cuda = {"SLURM_JOB_ID": "1", "CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}
    assert slurm_job(only_cuda).gpus == ("GPU-aa", "GPU-bb")  # type: ignore[union-attr]
    # SLURM_JOB_GPUS wins: under task/cgroup CUDA_VISIBLE_DEVICES is renumbered from 0 inside the job
    assert slurm_job(BATCH).gpus == ("1", "3")  # type: ignore[union-attr]
    assert slurm_job(BATCH, gpu_vars=("CUDA_VISIBLE_DEVICES",)).gpus == ("0", "1")  # type: ignore[union-attr]


@given(st.text(max_size=400))
def test_details_are_printable_and_bounded(name: str) -> None:
    j = slurm_job({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": name, "SLURM_JOB_ACCOUNT": name})
    assert j is not None and len(j.name) <= MAX_INFO_CHARS and len(j.account) <= MAX_INFO_CHARS
    assert not re.search(r"[\x00-\x1f\x7f]", j.name + j.account)


def test_merged_fills_only_what_is_missing() -> None:
    a = SlurmJob("5", name="x")
    b = SlurmJob("5", name="y", account="acct", gpus=("0",))
    assert a.merged(b) == SlurmJob("5", name="x", account="acct", gpus=("0",))


def test_tags_and_scheduler_scripts() -> None:
    assert job_id_of_tag("slurm-12") == "12" and job_id_of_tag("slurm-x") is None and job_id_of_tag("12") is None
    assert is_scheduler_script({"SLURM_SCRIPT_CONTEXT": "epilog_slurmd"})
    assert is_scheduler_script({"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld"})
    assert not is_scheduler_script({"SLURM_SCRIPT_CONTEXT": "something_else"}) and not is_scheduler_script({})


@pytest.mark.parametrize("pattern, expected", [
    ("slurm-%j.out", "slurm-42.out"),
    ("slurm-%A_%a.out", "slurm-41_3.out"),
    ("%x-%u-%N.%4j.log", "train-alice-node1.0042.log"),
    ("/scratch/%u/%%j-%j", "/scratch/alice/%j-42"),
    ("%J.%s.%t.%n", "42.batch.batch.0.0"),
    ("lit\\%j", "lit%j"),  # a backslash turns expansion off, as in sbatch
])
def test_output_patterns_expand_as_sbatch_does(pattern: str, expected: str) -> None:
    fields = output_fields(SlurmJob("42", "41", "3", "train"), "alice", "node1")
    assert expand_output(pattern, fields) == expected


def test_an_unknown_field_is_not_guessed() -> None:
    assert expand_output("%x.out", output_fields(SlurmJob("42"), "alice", "n1")) is None  # no job name known
    assert expand_output("%a.out", output_fields(SlurmJob("42"), "alice", "n1")) is None  # not an array task


FIELDS = output_fields(SlurmJob("42", "41", "3", "train"), "alice", "node1")
_literal = st.text(alphabet=string.ascii_letters + string.digits + "_-./", max_size=6)
_token = st.one_of(_literal.map(lambda t: (t, t)), st.sampled_from(sorted(FIELDS)).map(lambda k: ("%" + k, FIELDS[k])),
                   st.just(("%%", "%")))


@given(st.lists(_token, max_size=12))
def test_expansion_is_each_token_in_turn(tokens: list[tuple[str, str]]) -> None:
    """A pattern built of literals, known fields and %% expands to the literals, the fields' values and %."""
    pattern = "".join(t for t, _ in tokens)
    assert expand_output(pattern, FIELDS) == "".join(v for _, v in tokens)


# -- the process reader ------------------------------------------------------------------
def test_the_reader_keeps_each_running_slurm_job(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(100, 1, "slurm_script", uid=54321, env=BATCH)
    w.proc.spawn(101, 100, "python", uid=54321, env=BATCH)
    w.tick()
    w.proc.burn(101, utime=50)
    s = w.tick()
    key = job("slurm-4242", "54321")  # a uid without a passwd entry keeps its number
    assert s.driver_s[key] == pytest.approx(0.5)
    assert s.slurm == {key: slurm_job(BATCH)}
    w.proc.exit(101)
    w.proc.reap(101)
    w.proc.exit(100)
    w.proc.reap(100)
    assert w.tick().slurm == {}  # no live process left: the job is over here


def test_a_job_found_by_its_cgroup_alone_is_still_a_slurm_job(tmp_path: Path) -> None:
    w = World(tmp_path, tag_vars=("WATTLEDGER_JOB",))
    w.proc.spawn(100, 1, "daemonised", env={}, cgroup="/system.slice/slurmstepd.scope/job_77/step_0/user/task_0")
    s = w.ticks(2)[-1]
    assert s.slurm == {job("slurm-77"): SlurmJob("77")}


def test_a_user_tag_inside_a_slurm_job_keeps_the_slurm_id(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.proc.spawn(100, 1, "python", env={**BATCH, "WATTLEDGER_JOB": "sweep-3"})
    s = w.ticks(2)[-1]
    assert s.slurm[job("sweep-3")].job_id == "4242"  # the Epilog sums sweep-3 with slurm-4242


def test_prolog_and_epilog_are_not_the_jobs(tmp_path: Path) -> None:
    """Slurm runs them with the job's id in their environment; they are the scheduler's work: an Epilog
    summing the job must not change the job's figure."""
    w = World(tmp_path)
    w.proc.spawn(100, 1, "epilog.sh", env={**BATCH, "SLURM_SCRIPT_CONTEXT": "epilog_slurmd"})
    w.tick()
    w.proc.burn(100, utime=30)
    s = w.tick()
    assert s.driver_s[untagged(ROOT_USER)] == pytest.approx(0.3)
    assert not any(k.tag == "slurm-4242" for k in s.driver_s) and s.slurm == {}


ROOT_USER = "root"


def test_a_requested_full_scan_finds_small_cold_activity_at_once(tmp_path: Path) -> None:
    """What the Slurm Epilog asks for (store.jobinfo.request_settle): a cold process's last few CPU ticks,
    too small to start a cold scan, are charged at the next read instead of the next periodic full scan."""
    w = World(tmp_path, full_scan_every=1000)
    w.proc.spawn(60, 1, "srun", env=BATCH)
    w.ticks(6)  # it went cold
    w.proc.burn(60, utime=2)
    s = w.tick()
    assert job("slurm-4242") not in s.driver_s and s.driver_s[SYSTEM_JOB] == pytest.approx(0.02)
    w.proc.burn(60, utime=1)
    w.c.request_full_scan()
    s = w.tick()
    assert s.full_scan and s.driver_s[job("slurm-4242")] == pytest.approx(0.03)
    assert total([s], SYSTEM_JOB) == 0  # _system pays back what stood in for it
    assert not w.tick().full_scan  # once


def test_init_reaping_a_jobs_orphan_does_not_charge_the_job_for_strangers(tmp_path: Path) -> None:
    """init reaps every orphan on the host; its cutime mixes them. A Slurm job's last zombie reaped in the same
    tick as someone else's orphan must not take that orphan's CPU (it did, in the real-Slurm test)."""
    w = World(tmp_path)
    w.proc.spawn(100, 1, "srun", env=BATCH)       # the job's orphaned helper
    w.proc.spawn(101, 1, "stranger", uid=54321)   # someone else's orphan
    w.tick()
    w.proc.burn(101, utime=30)
    w.proc.exit(100)
    w.proc.reap(100)
    w.proc.reap(101)  # its last 30 ticks of CPU, never read, are now only in init's cutime
    s = w.tick()
    assert job("slurm-4242") not in s.driver_s
    assert s.driver_s[SYSTEM_JOB] == pytest.approx(0.3)
