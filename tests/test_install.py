"""deploy/install.sh and deploy/uninstall.sh, run into a temporary root (DESTDIR).

With DESTDIR the installer never calls systemctl, and creates the user and
directories inside the staged tree (systemd-sysusers/-tmpfiles --root), so
these tests run the real scripts end to end without touching the host. One
test builds the real venv: the package is first built into a wheel offline
(pip wheel --no-build-isolation), then installed by the installer with
--no-index --no-deps (tests have no network; the dependencies are the test
venv's, put on PYTHONPATH only to prove the console script starts).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.other_user import NOBODY, setpriv, world_dir
from wattledger import config as config_mod
from wattledger.config import Config

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
UNINSTALL = REPO / "deploy" / "uninstall.sh"

EXPECTED_FILES = {
    "etc/systemd/system/wattledger.service",
    "usr/local/lib/sysusers.d/wattledger.conf",
    "usr/local/lib/tmpfiles.d/wattledger.conf",
    "etc/wattledger/config.toml",
    "etc/wattledger/config.toml.example",
    "opt/wattledger/share/doc/wattledger/install.md",
    "opt/wattledger/share/doc/wattledger/config.example.toml",
}


def run_script(script: Path, root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DESTDIR": str(root), **env}
    r = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=full_env,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{script.name} failed:\n{r.stdout}\n{r.stderr}"
    return r


def needs_sysusers() -> None:
    if shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None:
        pytest.fail("systemd-sysusers/systemd-tmpfiles missing: scripts/test.sh installs Debian's systemd package")


def staged_gid(root: Path, name: str) -> int:
    for line in (root / "etc" / "group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"group {name} not in {root}/etc/group")


def test_install_into_destdir_without_venv(tmp_path: Path) -> None:
    needs_sysusers()
    root = tmp_path / "root"
    r = run_script(INSTALL, root, "--no-venv")
    assert "not calling systemctl" in r.stdout

    for rel in EXPECTED_FILES:
        assert (root / rel).is_file(), f"missing {rel}"
    # The unit is the shipped one; the snippets too.
    assert (root / "etc/systemd/system/wattledger.service").read_text() == (REPO / "systemd/wattledger.service").read_text()
    assert (root / "usr/local/lib/sysusers.d/wattledger.conf").read_text() == (
        REPO / "systemd/wattledger.sysusers.conf").read_text()
    link = root / "usr/local/bin/wattledger"
    assert link.is_symlink() and os.readlink(link) == "/opt/wattledger/bin/wattledger"

    # The user exists in the staged tree, not on the host.
    passwd = (root / "etc/passwd").read_text()
    assert passwd.startswith("wattledger:") and ":/var/lib/wattledger:/usr/sbin/nologin" in passwd
    gid = staged_gid(root, "wattledger")

    # Config: the example, root:wattledger 0640 (it may hold a token); loads to the defaults.
    conf = root / "etc/wattledger/config.toml"
    st = conf.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0 and st.st_gid == gid
    assert config_mod.load(conf, environ={}) == Config()

    # State directory owned by the service user, group-readable only.
    state = (root / "var/lib/wattledger").stat()
    assert stat.S_IMODE(state.st_mode) == 0o750 and state.st_gid == gid


def test_upgrade_keeps_config_and_state(tmp_path: Path) -> None:
    needs_sysusers()
    root = tmp_path / "root"
    run_script(INSTALL, root, "--no-venv")
    conf = root / "etc/wattledger/config.toml"
    conf.write_text('[sink]\nkind = "stdout"\n')
    ledger = root / "var/lib/wattledger/ledger.sqlite3"
    ledger.write_bytes(b"not really a ledger, but ours")
    example = root / "etc/wattledger/config.toml.example"
    example.write_text("# an old example\n")
    unit = root / "etc/systemd/system/wattledger.service"
    unit.write_text("# an old unit\n")

    r = run_script(INSTALL, root, "--no-venv")
    assert "keeping the existing /etc/wattledger/config.toml" in r.stdout
    assert conf.read_text() == '[sink]\nkind = "stdout"\n'
    assert ledger.read_bytes() == b"not really a ledger, but ours"
    # Shipped files are replaced by the new version.
    assert example.read_text() == (REPO / "deploy/config.example.toml").read_text()
    assert unit.read_text() == (REPO / "systemd/wattledger.service").read_text()
    # The user was not created twice.
    users = [line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()]
    assert users.count("wattledger") == 1


def test_prefix_is_followed_by_the_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    run_script(INSTALL, root, "--no-venv", "--no-users", "--prefix", "/srv/wl")
    unit = (root / "etc/systemd/system/wattledger.service").read_text()
    assert "ExecStart=/srv/wl/bin/wattledger agent " in unit
    assert "/opt/wattledger" not in unit
    assert os.readlink(root / "usr/local/bin/wattledger") == "/srv/wl/bin/wattledger"
    assert not (root / "etc/passwd").exists()


def test_uninstall_keeps_data_unless_purged(tmp_path: Path) -> None:
    needs_sysusers()
    root = tmp_path / "root"
    run_script(INSTALL, root, "--no-venv")
    (root / "opt/wattledger/bin").mkdir(parents=True)
    (root / "opt/wattledger/bin/wattledger").write_text("#!/bin/sh\n")
    (root / "var/lib/wattledger/ledger.sqlite3").write_text("data")

    run_script(UNINSTALL, root)
    for gone in ("etc/systemd/system/wattledger.service", "usr/local/lib/sysusers.d/wattledger.conf",
                 "usr/local/lib/tmpfiles.d/wattledger.conf", "opt/wattledger"):
        assert not (root / gone).exists(), gone
    assert not (root / "usr/local/bin/wattledger").is_symlink()
    assert (root / "etc/wattledger/config.toml").exists()
    assert (root / "var/lib/wattledger/ledger.sqlite3").read_text() == "data"
    assert "wattledger:" in (root / "etc/passwd").read_text()

    run_script(UNINSTALL, root, "--purge")
    assert not (root / "etc/wattledger").exists()
    assert not (root / "var/lib/wattledger").exists()
    assert "wattledger:" not in (root / "etc/passwd").read_text()
    assert "wattledger:" not in (root / "etc/group").read_text()


def test_installer_refuses_to_run_unprivileged_without_destdir() -> None:
    if os.geteuid() != 0:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        r = subprocess.run(["bash", str(INSTALL), "--no-venv"], capture_output=True, text=True, env=env)
    else:
        # nobody runs a copy in a world-readable directory: the checkout may be in a private one,
        # where bash could not even read the script (and the test would pass for that reason).
        shared = world_dir("wl-install-")
        try:
            script = shared / "install.sh"
            shutil.copy(INSTALL, script)
            script.chmod(0o755)
            r = subprocess.run([*setpriv(NOBODY), "bash", str(script), "--no-venv"], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin"}, cwd="/")
        finally:
            shutil.rmtree(shared, ignore_errors=True)
        assert "run as root" in r.stderr, r.stderr
    assert r.returncode != 0
    assert "run as root" in r.stderr or "Permission denied" in r.stderr


@pytest.mark.slow
def test_install_with_a_real_venv_from_a_wheel(tmp_path: Path) -> None:
    """The venv path: a wheel of this checkout installed into /opt/wattledger under DESTDIR."""
    needs_sysusers()
    pytest.importorskip("wheel", reason="the test extra installs wheel; without it no offline build")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(REPO / "wattledger", src / "wattledger", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(wheels), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("wattledger-*.whl")

    root = tmp_path / "root"
    run_script(INSTALL, root, "--source", str(wheel), "--pip-args", "--no-index --no-deps",
               PYTHON=sys.executable)
    venv_bin = root / "opt/wattledger/bin"
    console = venv_bin / "wattledger"
    assert os.access(console, os.X_OK)
    assert console.read_text().splitlines()[0] == f"#!{venv_bin / 'python'}"

    # The console script starts and runs the installed copy (deps from the test venv).
    deps = sysconfig.get_paths()["purelib"]
    probe = subprocess.run(
        [str(venv_bin / "python"), "-c",
         "import wattledger, wattledger.cli.main as c; print(wattledger.__file__); c.main(['--version'])"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines()[0].startswith(str(root / "opt/wattledger/lib"))
    assert "wattledger, version" in probe.stdout

    # The installed unit verifies against the installed tree: ExecStart exists there.
    unit = (root / "etc/systemd/system/wattledger.service").read_text()
    staged = tmp_path / "wattledger.service"
    staged.write_text(unit.replace("ExecStart=/opt/wattledger/", f"ExecStart={root}/opt/wattledger/"))
    verify = subprocess.run(["systemd-analyze", "verify", str(staged)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr

    # A second run upgrades the venv in place.
    r = run_script(INSTALL, root, "--source", str(wheel), "--pip-args", "--no-index --no-deps --force-reinstall",
                   PYTHON=sys.executable)
    assert "upgrading the venv" in r.stdout
