"""Slurm, end to end: a real one-node Slurm, the real agent, jobs run by slurmd as another user.

The cluster (tests/slurm_cluster.py) runs Debian's munged, slurmctld and
slurmd from temporary configs; the agent runs as the service does (the CLI)
over a fixture powercap tree whose counters a thread advances; Slurm's
Epilog is the shipped deploy/slurm/epilog.sh. Jobs run as ``nobody`` and burn
a known amount of CPU time (``time.process_time``), so what each job is
charged can be checked against what it did:

* two batch jobs of different CPU intensity, one with an ``srun`` step whose
  process starts a child, one array job of two tasks;
* every process ``nobody`` ran is charged to its Slurm job (``slurm-<id>``),
  none to ``_untagged``;
* each job's summary is in its output file (``slurm-<id>.out``, a
  ``--output`` pattern, ``slurm-<array>_<task>.out``) and its energy equals
  the ledger's rows for that Slurm id;
* for every pool and tick, the jobs with the reserved jobs sum to the node;
* ``report --by job --account`` is the admin's sacct-like view.

A second cluster uses ``proctrack/cgroup`` (cgroup v1 freezer): with
``SLURM_JOB_ID`` removed from the tag variables, jobs are found by their
cgroup path alone, a process that left the job's environment and process
tree (``env -i setsid -f``) included.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.slurm_cluster import SlurmCluster, cgroup_v1_freezer, missing_programs
from tests.test_influx_e2e import MovingRapl
from wattledger.report.epilog import SUMMARY_MARK
from wattledger.store.ledger import Ledger

pytestmark = [
    pytest.mark.slurm, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: slurmd runs jobs as another user, munged as munge"),
]

REPO = Path(__file__).resolve().parent.parent
EPILOG = REPO / "deploy" / "slurm" / "epilog.sh"
PYTHON = "/usr/bin/python3"  # the system's, which the jobs' user can run
BURN = "import time\nwhile time.process_time() < {cpu_s}: pass\n"
# What a job is charged may fall short of the CPU it burnt by about one tick of its last process: when the
# whole process tree of a job exits between two reads and init reaps what is left, that last CPU is
# init's cutime, which mixes every orphan of the host, and goes to _system (collectors/procs.py).
TAIL_S = 0.5


def burn_script(cpu_s: float) -> str:
    return f"#!/bin/sh\n{PYTHON} -c '{BURN.format(cpu_s=cpu_s)}'\necho burnt {cpu_s}\n"


# The step's process starts a child that does the burning: both are the job's.
STEP_WITH_CHILD = f"""#!/bin/sh
srun --ntasks=1 {PYTHON} -c 'import subprocess, sys
burn = "import time\\nwhile time.process_time() < 1.0: pass"
subprocess.run([sys.executable, "-c", burn], check=True)'
echo step done
"""


@dataclass
class Setup:
    cluster: SlurmCluster
    config: Path
    state: Path
    rapl: MovingRapl
    agent: subprocess.Popen[str] | None = None
    agent_log: str = ""


def _start(tmp: Path, proctrack: str, extra_config: str = "") -> Setup:
    if missing_programs():
        pytest.fail(f"{', '.join(missing_programs())} not installed: scripts/test.sh installs Debian's slurmctld, "
                    "slurmd, slurm-client and munge")
    wrapper = tmp / "epilog.sh"
    cluster = SlurmCluster(proctrack=proctrack, epilog=wrapper)
    state = cluster.root / "wattledger"
    config = cluster.root / "wattledger.toml"
    config.write_text(f'[agent]\nstate_dir = "{state}"\ninterval_s = 0.5\ngpus = "never"\n'
                      f'[slurm]\nepilog_ticks = 2\nepilog_timeout_s = 20\n{extra_config}')
    # Slurm gives the Epilog no environment of ours: the wrapper names the venv's program and the config.
    wrapper.write_text(f"#!/bin/sh\nexport WATTLEDGER={Path(sys.executable).parent / 'wattledger'} "
                       f"WATTLEDGER_CONFIG={config}\nexec {EPILOG}\n")
    wrapper.chmod(0o755)
    setup = Setup(cluster, config, state, MovingRapl(cluster.root / "sysfs"))
    setup.rapl.__enter__()
    try:
        cluster.start()
        setup.agent = subprocess.Popen([sys.executable, "-m", "wattledger.cli.main", "agent", "--config",
                                        str(config), "--sysfs-root", str(setup.rapl.root)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait(lambda: _ticks(state) >= 2 or setup.agent.poll() is not None,
              "the agent's first ticks")
        if setup.agent.poll() is not None:
            raise AssertionError(f"the agent exited: {setup.agent.communicate()[1][-3000:]}")
    except BaseException:
        _stop(setup)
        cluster.cleanup()
        raise
    return setup


def _stop(s: Setup) -> str:
    """Stop the agent (SIGTERM: it finishes its tick), the cluster and the counters; idempotent."""
    if s.agent is not None:
        if s.agent.poll() is None:
            s.agent.send_signal(signal.SIGTERM)
        s.agent_log += s.agent.communicate(timeout=60)[1]
        s.agent = None
    s.cluster.stop()
    s.rapl.__exit__(None, None, None)
    return s.agent_log


def _ticks(state: Path) -> int:
    path = state / "ledger.sqlite3"
    if not path.exists():
        return 0
    try:
        ledger = Ledger(path, readonly=True)
        try:
            return len(ledger.rows("wl_agent"))
        finally:
            ledger.close()
    except sqlite3.OperationalError:
        return 0  # made, but its tables not yet


def _wait(ok: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def linuxproc(tmp_path: Path) -> Iterator[Setup]:
    s = _start(tmp_path, "linuxproc")
    try:
        yield s
    finally:
        _stop(s)
        s.cluster.cleanup()


def summary_of(path: Path) -> dict[str, Any]:
    """The JSON of the summary the Epilog appended to a job's output file."""
    lines = [line for line in path.read_text().splitlines() if line.startswith(SUMMARY_MARK + " ")]
    assert len(lines) == 1, f"{path}: {len(lines)} summaries in\n{path.read_text()}"
    return dict(json.loads(lines[0][len(SUMMARY_MARK) + 1:]))


def ledger_rows(state: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ledger = Ledger(state / "ledger.sqlite3", readonly=True)
    try:
        return ledger.rows("wl_job"), ledger.rows("wl_node")
    finally:
        ledger.close()


def energy_of(jobs: list[dict[str, Any]], tags: Any) -> float:
    return sum(float(r["energy_j"]) for r in jobs if r["job"] in tags)


def late_rows(jobs: list[dict[str, Any]], summary: dict[str, Any]) -> list[tuple[object, ...]]:
    """The job's rows stamped after its summary was made (what a failing comparison is about)."""
    return [(r["time_ns"], r["user"], r["component"], r["device"], r["energy_j"], r["driver_s"]) for r in jobs
            if r["job"] in summary["tags"] and int(r["time_ns"]) > int(summary["as_of_ns"])]


def cpu_s_of(jobs: list[dict[str, Any]], tag: str, device: str) -> float:
    """The CPU seconds charged to a tag on one CPU package (every package pool sees the host's CPU time)."""
    return sum(float(r["driver_s"]) for r in jobs
               if r["job"] == tag and r["component"] == "cpu" and r["device"] == device)


def assert_conservation(jobs: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
    """For every pool and tick: the jobs, reserved ones included, sum to the node's energy."""
    charged: dict[tuple[object, ...], float] = defaultdict(float)
    for r in jobs:
        charged[(r["time_ns"], r["component"], r["device"])] += float(r["energy_j"])
    assert nodes
    for n in nodes:
        key = (n["time_ns"], n["component"], n["device"])
        assert charged[key] == pytest.approx(float(n["energy_j"]), rel=1e-9, abs=1e-9), key


def test_slurm_jobs_are_charged_and_summarised_where_their_user_finds_them(linuxproc: Setup) -> None:
    c = linuxproc.cluster
    heavy = c.sbatch(burn_script(3.0), "-J", "heavy", "-A", "physics")
    light = c.sbatch(burn_script(1.0), "-J", "light", "-A", "chem", "--output", "%x-%j.log")
    stepped = c.sbatch(STEP_WITH_CHILD, "-J", "stepped", "-A", "physics")
    array = c.sbatch(burn_script(1.0), "-J", "arr", "--array=0-1")
    states = c.wait_finished([heavy, light, stepped, array])
    assert set(states.values()) == {"COMPLETED"}, (states, c.log("slurmd.log")[-3000:])
    tasks = c.job_ids(array)  # {"7_0": own job id, "7_1": ...}
    err = _stop(linuxproc)
    jobs, nodes = ledger_rows(linuxproc.state)

    expected = {heavy: (3.0, f"slurm-{heavy}.out"), light: (1.0, f"light-{light}.log"),
                stepped: (1.0, f"slurm-{stepped}.out")}
    expected.update({own: (1.0, f"slurm-{display}.out") for display, own in tasks.items()})
    package = min(str(n["device"]) for n in nodes if n["component"] == "cpu")
    for job_id, (cpu_s, output) in expected.items():
        summary = summary_of(c.work / output)
        assert summary["job_id"] == job_id and summary["tags"] == [f"slurm-{job_id}"]
        assert summary["complete"] is True
        # The summary is the ledger's figure for that Slurm id, to float rounding.
        assert summary["energy_j"] == pytest.approx(energy_of(jobs, summary["tags"]), rel=1e-9, abs=1e-9), (
            job_id, late_rows(jobs, summary))
        assert float(summary["energy_j"]) > 0
        charged = cpu_s_of(jobs, f"slurm-{job_id}", package)
        assert cpu_s - TAIL_S <= charged <= cpu_s + 1.0, (job_id, cpu_s, charged, cpu_s_of(jobs, "_system", package),
                                                          err[-2000:])
    # Everything nobody ran was found to be a Slurm job: nothing of theirs is _untagged.
    theirs = {str(r["job"]) for r in jobs if r["user"] == "nobody"}
    assert theirs == {f"slurm-{j}" for j in expected}, theirs
    assert energy_of(jobs, [f"slurm-{heavy}"]) > energy_of(jobs, [f"slurm-{light}"])
    assert_conservation(jobs, nodes)
    assert_admin_view(linuxproc, heavy, light, stepped, tasks)


def assert_admin_view(s: Setup, heavy: str, light: str, stepped: str, tasks: dict[str, str]) -> None:
    """``report --by job`` shows Slurm's ids, accounts and times, and filters by account."""
    cmd = [sys.executable, "-m", "wattledger.cli.main", "report", "--config", str(s.config), "--since", "1h",
           "--format", "json", "--by", "job"]
    everything = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout)
    slurm = {r["job"]: r["slurm"] for r in everything["rows"] if "slurm" in r}
    assert slurm[f"slurm-{heavy}"]["account"] == "physics" and slurm[f"slurm-{light}"]["account"] == "chem"
    assert slurm[f"slurm-{heavy}"]["partition"] == "wlpart" and slurm[f"slurm-{heavy}"]["start"]
    assert {slurm[f"slurm-{own}"]["id"] for own in tasks.values()} == set(tasks)
    physics = json.loads(subprocess.run(cmd + ["--account", "physics"], capture_output=True, text=True,
                                        check=True, timeout=60).stdout)
    assert {r["job"] for r in physics["rows"]} == {f"slurm-{heavy}", f"slurm-{stepped}"}
    one = json.loads(subprocess.run(cmd + ["--job", f"slurm-{heavy}"], capture_output=True, text=True,
                                    check=True, timeout=60).stdout)
    assert [r["job"] for r in one["rows"]] == [f"slurm-{heavy}"]
    table = subprocess.run(cmd[:-4] + ["--by", "job", "--partition", "wlpart"], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    assert "slurm id" in table and "physics" in table and f"slurm-{light}" in table


ESCAPING = f"""#!/bin/sh
env -i setsid -f {PYTHON} -c '{BURN.format(cpu_s=1.0)}'
{PYTHON} -c '{BURN.format(cpu_s=0.5)}'
sleep 3
"""


@pytest.mark.skipif(not cgroup_v1_freezer(), reason="proctrack/cgroup needs a writable cgroup v1 freezer "
                    "hierarchy (Slurm 22.05's cgroup/v2 needs a pure cgroup v2 host with systemd)")
def test_proctrack_cgroup_finds_jobs_by_their_cgroup_path(tmp_path: Path) -> None:
    s = _start(tmp_path, "cgroup", '[jobs]\ntag_vars = ["WATTLEDGER_JOB"]\n')
    try:
        job = s.cluster.sbatch(ESCAPING, "-J", "escaping")
        states = s.cluster.wait_finished([job])
        assert states == {job: "COMPLETED"}, (states, s.cluster.log("slurmd.log")[-3000:])
        _stop(s)
        jobs, nodes = ledger_rows(s.state)
        package = min(str(n["device"]) for n in nodes if n["component"] == "cpu")
        # Neither the tag variables (SLURM_JOB_ID is not one here) nor the process tree (setsid -f with
        # an empty environment) name the job: only the cgroup .../job_<id>/... does.
        assert {str(r["job"]) for r in jobs if r["user"] == "nobody"} == {f"slurm-{job}"}
        assert cpu_s_of(jobs, f"slurm-{job}", package) >= 1.5 - 2 * TAIL_S  # two processes end through init
        summary = summary_of(s.cluster.work / f"slurm-{job}.out")
        assert summary["energy_j"] == pytest.approx(energy_of(jobs, summary["tags"]), rel=1e-9, abs=1e-9)
        assert_conservation(jobs, nodes)
    finally:
        _stop(s)
        s.cluster.cleanup()
