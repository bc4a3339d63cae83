"""A source this machine lacks is reported once, at the right level (issue 19, item 1).

"A VM" here is the real CLI over an empty sysfs (no RAPL zones) with the
NVIDIA binding not importable (a ``pynvml`` that raises ImportError first on
PYTHONPATH, as where nvidia-ml-py is not installed), so the tests mean the
same on a machine with RAPL or GPUs. On it:

* ``run`` and ``report`` print nothing on stderr: the ESTIMATE label says it;
* the agent says each absent source once, at INFO, never as a warning;
* ``doctor`` says each thing once (no log line repeating a row), and the fix
  it suggests for the GPU probe works the way the command was configured:
  an environment variable without a config file, the key in the file with one;
* a source that is there but unreadable (RAPL as an unprivileged user) is
  still a warning, once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.other_user import NOBODY, Staged, setpriv, world_dir
from wattledger.config import how_to_set

CLI = "from wattledger.cli.main import main; main()"


@pytest.fixture
def vm(tmp_path: Path) -> dict[str, str]:
    """The environment of a VM without RAPL or GPUs, and its empty sysfs (``WL_SYSFS``)."""
    shim = tmp_path / "no-nvidia"
    shim.mkdir()
    (shim / "pynvml.py").write_text('raise ImportError("No module named \'pynvml\' (nvidia-ml-py not installed)")\n')
    sysfs = tmp_path / "sysfs"
    (sysfs / "class").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["WL_SYSFS"] = str(sysfs)
    return env


def wl(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=180, stdin=subprocess.DEVNULL)


def test_run_and_report_on_a_vm_print_no_warnings(vm: dict[str, str], tmp_path: Path) -> None:
    r = wl(vm, "run", "--config", "/dev/null", "--sysfs-root", vm["WL_SYSFS"], "-t", "quiet", "--",
           sys.executable, "-c", "sum(range(10**6))")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # nothing about RAPL or NVML: the figures say it
    assert "ESTIMATE" in r.stdout and "wattledger: job quiet" in r.stdout

    state = tmp_path / "state"
    agent = wl(vm, "agent", "--config", "/dev/null", "--state-dir", str(state), "--sysfs-root", vm["WL_SYSFS"],
               "--interval", "0.2", "--ticks", "3", "--sink", "none")
    assert agent.returncode == 0, agent.stderr
    r = wl(vm, "report", "--config", "/dev/null", "--state-dir", str(state))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "E = includes energy not measured by a counter" in r.stdout


def test_the_agent_says_each_absent_source_once_at_info(vm: dict[str, str], tmp_path: Path) -> None:
    r = wl(vm, "agent", "--config", "/dev/null", "--state-dir", str(tmp_path / "s"), "--sysfs-root",
           vm["WL_SYSFS"], "--interval", "0.1", "--ticks", "8", "--sink", "none")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert not [ln for ln in lines if re.search(r" (WARNING|ERROR) ", ln)], r.stderr
    rapl = [ln for ln in lines if "rapl: missing" in ln]
    nvml = [ln for ln in lines if "nvml: missing" in ln]
    assert len(rapl) == 1 and " INFO " in rapl[0] and "model estimate" in rapl[0], r.stderr
    assert len(nvml) == 1 and " INFO " in nvml[0], r.stderr
    # The agent runs without a config file here: the way to silence it is the environment.
    assert "WATTLEDGER_AGENT_GPUS=never" in nvml[0] and "[agent] gpus" not in nvml[0]


def doctor_rows(out: str) -> list[tuple[str, str]]:
    """(source, the row's line and its fix line) per row of doctor's text."""
    rows: list[tuple[str, str]] = []
    for line in out.splitlines():
        if line[:3] in ("ok ", "!! "):
            rows.append((line[3:].split(" ", 1)[0], line))
        elif line.strip().startswith("fix:") and rows:
            rows[-1] = (rows[-1][0], rows[-1][1] + "\n" + line)
    return rows


def test_doctor_says_each_thing_once(vm: dict[str, str]) -> None:
    r = wl(vm, "doctor", "--config", "/dev/null", "--sysfs-root", vm["WL_SYSFS"])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # the rows are the report: no log line repeats one
    rows = doctor_rows(r.stdout)
    sources = [s for s, _ in rows if s != "idle"]  # idle: one row per pool
    assert sorted(sources) == sorted(set(sources)) and {"rapl", "model", "nvml"} <= set(sources), r.stdout
    nvml = dict(rows)["nvml"]
    assert nvml.count("never") == 1, nvml  # one way to turn it off, not two


def fix_of(out: str, source: str) -> str:
    text = dict(doctor_rows(out))[source]
    assert "fix:" in text, text
    return text.split("fix:", 1)[1].strip()


def test_doctors_gpu_fix_works_without_a_config_file(vm: dict[str, str]) -> None:
    args = ("doctor", "--config", "/dev/null", "--sysfs-root", vm["WL_SYSFS"])
    fix = fix_of(wl(vm, *args).stdout, "nvml")
    m = re.search(r"set (WATTLEDGER_[A-Z_]+)=(\S+) \(no config file is in use\)", fix)
    assert m and "[agent]" not in fix, fix
    after = wl({**vm, m.group(1): m.group(2)}, *args)  # do what it says
    assert after.returncode == 0 and after.stderr == ""
    assert "nvml" not in dict(doctor_rows(after.stdout))


def test_doctors_gpu_fix_works_with_a_config_file(vm: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("# mine\n")
    args = ("doctor", "--config", str(config), "--sysfs-root", vm["WL_SYSFS"])
    fix = fix_of(wl(vm, *args).stdout, "nvml")
    m = re.search(r'set \[(\w+)\] (\w+) = ("\w+") in (\S+)$', fix)
    assert m and m.group(4) == str(config) and "WATTLEDGER_" not in fix, fix
    config.write_text(f"[{m.group(1)}]\n{m.group(2)} = {m.group(3)}\n")  # do what it says
    after = wl(vm, *args)
    assert after.returncode == 0 and after.stderr == ""
    assert "nvml" not in dict(doctor_rows(after.stdout))


def test_doctors_energy_fix_works_without_a_config_file(vm: dict[str, str]) -> None:
    """With the estimate off and no RAPL nothing is measured; the fix turns the estimate back on."""
    env = {**vm, "WATTLEDGER_AGENT_ESTIMATE": "never"}
    args = ("doctor", "--config", "/dev/null", "--sysfs-root", vm["WL_SYSFS"])
    r = wl(env, *args)
    assert r.returncode == 1  # nothing measurable
    m = re.search(r"set (WATTLEDGER_[A-Z_]+)=(\S+) \(no config file is in use\)", fix_of(r.stdout, "energy"))
    assert m, r.stdout
    after = wl({**env, m.group(1): m.group(2)}, *args)
    assert after.returncode == 0 and "ok model" in after.stdout


def test_how_to_set_a_table_without_a_file_names_config() -> None:
    """A key with no environment twin (a table) is given in a file passed with --config."""
    text = how_to_set("attribution", "idle_power_w", '{"cpu" = 20}', None)
    assert "--config FILE" in text and "WATTLEDGER_" not in text


@pytest.fixture
def unreadable_rapl() -> Iterator[Path]:
    """A world-readable copy of a RAPL fixture tree whose energy_uj files are root-only, as on real hosts."""
    root = world_dir("wl-quiet-")
    try:
        sysfs = root / "sysfs"
        shutil.copytree(FIXTURES / "sysfs-intel-2s", sysfs, symlinks=True)
        for energy in sysfs.rglob("energy_uj"):
            if not energy.is_symlink():
                energy.chmod(0o400)
        state = root / "state"
        state.mkdir()
        os.chown(state, NOBODY, NOBODY)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_source_that_is_there_but_unreadable_is_a_warning_once(other_user_code: Staged,
                                                                  unreadable_rapl: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "WATTLEDGER_AGENT_GPUS": "never"}
    r = subprocess.run(
        [*setpriv(NOBODY), *other_user_code.argv(CLI), "agent", "--config", "/dev/null", "--state-dir",
         str(unreadable_rapl / "state"), "--sysfs-root", str(unreadable_rapl / "sysfs"), "--interval", "0.1",
         "--ticks", "5", "--sink", "none"],
        capture_output=True, text=True, env=env, cwd="/", timeout=180,
    )
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if " WARNING " in ln]
    assert len(warnings) == 1 and "rapl: permission denied" in warnings[0], r.stderr
