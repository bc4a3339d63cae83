"""The systemd unit: valid, hardened to a measured exposure, and its ExecStart really runs.

``systemd-analyze verify`` checks that ExecStart's binary exists and is
executable, and /opt/wattledger/bin/wattledger does not exist on a test
machine. So the tests verify a copy of the unit whose ExecStart points at an
executable placed in a temporary directory; nothing else in the copy changes.
``verify`` exits 0 even for unknown or unparsable settings (it only prints
them), so "valid" here means exit 0 *and* no diagnostic at all.

Exposure: ``systemd-analyze security --offline=yes`` scores the unit file
itself. A unit holding both capabilities with every other hardening option
measured 2.1 on systemd 252, so 2.1 is the ceiling.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wattledger.config import SinkSection
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_AGENT

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "wattledger.service"
SYSUSERS = REPO / "systemd" / "wattledger.sysusers.conf"
TMPFILES = REPO / "systemd" / "wattledger.tmpfiles.conf"
EXAMPLE_CONFIG = REPO / "deploy" / "config.example.toml"
INSTALLED_BIN = "/opt/wattledger/bin/wattledger"
MAX_EXPOSURE = 2.1


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: scripts/test.sh installs Debian's systemd package")
    return path


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} keeping repeated keys (systemd allows them)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key} set {len(found)} times: {found}"
    return found[0]


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert m, f"cannot read the time span {value!r}"
    return float(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit as shipped, except ExecStart names an executable that exists."""
    fake_bin = tmp_path / "bin" / "wattledger"
    fake_bin.parent.mkdir()
    fake_bin.write_text("#!/bin/sh\nexit 0\n")
    fake_bin.chmod(0o755)
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_BIN} " in text
    copy = tmp_path / "wattledger.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_BIN} ", f"ExecStart={fake_bin} "))
    return copy


def verify(unit_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_analyze(), "verify", str(unit_file)], capture_output=True, text=True, timeout=60)


def test_unit_verifies_without_any_diagnostic(unit_copy: Path) -> None:
    r = verify(unit_copy)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout


def test_verify_check_catches_a_broken_unit(unit_copy: Path) -> None:
    """The check above is not vacuous: verify prints (but exits 0 on) a typo'd setting."""
    unit_copy.write_text(unit_copy.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    r = verify(unit_copy)
    assert "ProtectSystm" in r.stderr


def exposure(unit_file: Path) -> tuple[float, str]:
    r = subprocess.run(
        [_analyze(), "security", "--offline=yes", "--no-pager", str(unit_file)],
        capture_output=True, text=True, timeout=60,
    )
    out = r.stdout + r.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert m, f"no 'Overall exposure level' line in:\n{out}"
    return float(m.group(1)), out


def test_exposure_is_at_most_2_1(unit_copy: Path) -> None:
    level, report = exposure(unit_copy)
    assert level <= MAX_EXPOSURE, report


def test_exposure_measure_reacts_to_hardening(unit_copy: Path) -> None:
    """Dropping one hardening line raises the score: the parse reads the real figure."""
    before, _ = exposure(unit_copy)
    unit_copy.write_text(unit_copy.read_text().replace("ProtectSystem=strict\n", ""))
    after, _ = exposure(unit_copy)
    assert after > before


def test_unit_grants_exactly_the_two_capabilities_as_ambient() -> None:
    unit = parse_unit(UNIT.read_text())
    wanted = {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}
    assert set(" ".join(values(unit, "Service", "AmbientCapabilities")).split()) == wanted
    assert set(" ".join(values(unit, "Service", "CapabilityBoundingSet")).split()) == wanted
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "User") == "wattledger"
    # ptrace(2) itself stays forbidden: the capability is only for /proc/<pid>/environ.
    denied = " ".join(v for v in values(unit, "Service", "SystemCallFilter") if v.startswith("~"))
    assert "@debug" in denied  # ptrace, pidfd_getfd
    assert "process_vm_readv" in denied and "process_vm_writev" in denied  # in @system-service's @ipc


def test_unit_required_settings() -> None:
    unit = parse_unit(UNIT.read_text())
    s = "Service"
    assert one(unit, s, "ProtectSystem") == "strict"
    assert one(unit, s, "StateDirectory") == "wattledger"
    assert one(unit, s, "ConfigurationDirectory") == "wattledger"
    assert one(unit, s, "Restart") == "on-failure"
    assert one(unit, s, "KillSignal") == "SIGTERM"
    assert one(unit, s, "DevicePolicy") == "closed"
    assert any(v.startswith("char-nvidia") for v in values(unit, s, "DeviceAllow"))
    families = one(unit, s, "RestrictAddressFamilies").split()
    assert {"AF_INET", "AF_INET6"} <= set(families), "the outbound network must stay open (remote InfluxDB)"
    # The stop timeout leaves room for a sink write that times out.
    assert seconds(one(unit, s, "TimeoutStopSec")) > SinkSection().timeout_s
    # ExecStart's paths are the directories systemd manages for it.
    exec_start = one(unit, s, "ExecStart").split()
    assert exec_start[:2] == [INSTALLED_BIN, "agent"]
    assert exec_start[exec_start.index("--state-dir") + 1] == "/var/lib/" + one(unit, s, "StateDirectory")
    assert exec_start[exec_start.index("--config") + 1] == f"/etc/{one(unit, s, 'ConfigurationDirectory')}/config.toml"
    # The user the unit runs as is the one the sysusers snippet creates.
    sysusers = [ln.split() for ln in SYSUSERS.read_text().splitlines() if ln.startswith("u ")]
    assert [row[1] for row in sysusers] == [one(unit, s, "User")]
    tmpfiles = TMPFILES.read_text()
    assert re.search(r"^d\s+/var/lib/wattledger\s+0750\s+wattledger\s+wattledger", tmpfiles, re.M)


def test_every_setting_is_explained_by_a_comment() -> None:
    """Each setting (or group of adjacent settings) has a comment right above it."""
    lines = UNIT.read_text().splitlines()
    unexplained = []
    for i, line in enumerate(lines):
        if not line or line.startswith(("#", "[")):
            continue
        j = i - 1
        while j >= 0 and lines[j] and not lines[j].startswith(("#", "[")):
            j -= 1  # an adjacent setting of the same group
        if j < 0 or not lines[j].startswith("#"):
            unexplained.append(line)
    assert unexplained == []


def test_execstart_command_line_runs_with_the_real_cli(tmp_path: Path) -> None:
    """The unit's exact arguments, with its two paths moved into tmp, run one tick."""
    unit = parse_unit(UNIT.read_text())
    args = one(unit, "Service", "ExecStart").split()
    console_script = Path(sys.executable).parent / "wattledger"
    assert console_script.exists(), "the wattledger console script is not installed in the test venv"
    config = tmp_path / "config.toml"
    shutil.copy(EXAMPLE_CONFIG, config)
    state = tmp_path / "state"
    mapping = {INSTALLED_BIN: str(console_script), "/etc/wattledger/config.toml": str(config),
               "/var/lib/wattledger": str(state)}
    argv = [mapping.get(a, a) for a in args] + ["--ticks", "2", "--interval", "0.2"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    ledger = Ledger.in_state_dir(state)
    try:
        assert ledger.rows(WL_AGENT), "the agent wrote no tick to its ledger"
    finally:
        ledger.close()
