"""`report --by job` as an sacct-like view: Slurm ids, accounts, partitions, start and end; filters by them."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_slurm_epilog import S, _job_row
from wattledger import report as rp
from wattledger.cli.main import main
from wattledger.config import Config
from wattledger.model.jobs import JobKey
from wattledger.model.slurm import SlurmJob
from wattledger.store.jobinfo import JobInfoStore
from wattledger.store.ledger import Ledger


@pytest.fixture
def state(tmp_path: Path) -> Path:
    now = time.time_ns()
    ledger = Ledger.in_state_dir(tmp_path)
    ledger.append([_job_row("slurm-10", "alice", now - 60 * S, 3.6e6), _job_row("slurm-11", "bob", now - 50 * S, 1.8e6),
                   _job_row("slurm-12", "carol", now - 40 * S, 0.9e6), _job_row("notebook", "dave", now - 30 * S, 1e5),
                   _job_row("_idle", "", now - 30 * S, 2e5)])
    store = JobInfoStore(ledger.path)
    store.record("n1", now - 60 * S, {JobKey("slurm-10", "alice"): SlurmJob("10", account="physics", partition="gpu")})
    store.record("n1", now - 55 * S, {JobKey("slurm-10", "alice"): SlurmJob("10")})
    store.record("n1", now - 50 * S, {JobKey("slurm-11", "bob"): SlurmJob("11", "9", "2", "sweep", "chem", "gpu")})
    store.record("n1", now - 40 * S, {JobKey("slurm-12", "carol"): SlurmJob("12", account="physics", partition="cpu")})
    store.close()
    ledger.close()
    return tmp_path


def run(state: Path, *args: str) -> str:
    r = CliRunner().invoke(main, ["report", "--state-dir", str(state), "--since", "1h", *args])
    assert r.exit_code == 0, r.output
    return r.output


def test_by_job_shows_what_slurm_said(state: Path) -> None:
    rows = {r["job"]: r for r in json.loads(run(state, "--format", "json"))["rows"]}
    assert rows["slurm-10"]["slurm"]["account"] == "physics" and rows["slurm-10"]["slurm"]["partition"] == "gpu"
    assert rows["slurm-11"]["slurm"]["id"] == "9_2" and rows["slurm-11"]["slurm"]["name"] == "sweep"
    ten = rows["slurm-10"]["slurm"]
    assert ten["start"] < ten["end"]  # first and last tick that saw it
    assert "slurm" not in rows["notebook"] and "slurm" not in rows["_idle"]
    table = run(state)
    header = table.splitlines()[3]
    assert header.split()[:7] == ["job", "user", "slurm", "id", "account", "partition", "start"]
    assert "9_2" in table and "physics" in table
    lines = list(csv.DictReader(io.StringIO(run(state, "--format", "csv"))))
    assert {r["job"]: r["slurm_account"] for r in lines}["slurm-11"] == "chem"


def test_filters_by_account_and_partition(state: Path) -> None:
    physics = {r["job"] for r in json.loads(run(state, "--format", "json", "--account", "physics"))["rows"]}
    assert physics == {"slurm-10", "slurm-12"}
    gpu_physics = json.loads(run(state, "--format", "json", "--account", "physics", "--partition", "gpu"))
    assert [r["job"] for r in gpu_physics["rows"]] == ["slurm-10"]
    assert gpu_physics["total"]["it_kwh"] == pytest.approx(1.0)
    by_user = json.loads(run(state, "--format", "json", "--by", "user", "--partition", "gpu"))
    assert {r["user"] for r in by_user["rows"]} == {"alice", "bob"}


def test_a_slurm_job_by_its_tag(state: Path) -> None:
    one = json.loads(run(state, "--format", "json", "--job", "slurm-11"))
    assert [r["job"] for r in one["rows"]] == ["slurm-11"] and one["total"]["it_kwh"] == pytest.approx(0.5)


def test_the_account_filter_needs_the_ledger() -> None:
    with pytest.raises(rp.ReportError, match="need the ledger"):
        rp.from_influx(rp.InfluxQL("http://127.0.0.1:9", "db"), Config(), 0, 1, rp.Options(account="physics"))
