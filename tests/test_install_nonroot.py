"""deploy/install.sh stages into a DESTDIR as a non-root user, as packagers do (issue 19, item 3).

The installer runs as nobody (setpriv) from a copy of the files it installs
in a world-readable directory (tests/other_user.py), into a DESTDIR nobody
owns. Nothing may need root: no user is made and nothing is chowned, the
files keep their modes, and what the output tells the packager is true for
the staged tree. Then the target is played as a package manager would: the
tree becomes root's, and the commands the installer named (systemd-sysusers,
systemd-tmpfiles) are run over it, which must give the user, the state
directory and the config's owner (root:wattledger 0640).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.other_user import NOBODY, needs_root_and_setpriv, setpriv, world_dir

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["deploy/install.sh", "deploy/config.example.toml", "systemd/wattledger.service",
           "systemd/wattledger.sysusers.conf", "systemd/wattledger.tmpfiles.conf", "docs/install.md"]


@pytest.fixture
def checkout() -> Iterator[Path]:
    """The installer's own files in a world-readable directory, and a place nobody may write its DESTDIR."""
    needs_root_and_setpriv()
    root = world_dir("wl-install-nonroot-")
    try:
        for rel in SHIPPED:
            (root / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, root / "src" / rel)
        for dirpath, _dirs, files in os.walk(root / "src"):
            os.chmod(dirpath, 0o755)
            for name in files:
                os.chmod(Path(dirpath) / name, 0o644)
        (root / "out").mkdir()
        os.chown(root / "out", NOBODY, NOBODY)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stage(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    dest = checkout / "out" / "root"
    return subprocess.run([*setpriv(NOBODY), "bash", str(checkout / "src/deploy/install.sh"), *args],
                          capture_output=True, text=True, cwd="/", timeout=120, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DESTDIR": str(dest)})


def test_a_non_root_user_stages_the_whole_tree(checkout: Path) -> None:
    r = stage(checkout, "--no-venv")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    dest = checkout / "out" / "root"
    for rel in ("etc/systemd/system/wattledger.service", "usr/local/lib/sysusers.d/wattledger.conf",
                "usr/local/lib/tmpfiles.d/wattledger.conf", "etc/wattledger/config.toml",
                "etc/wattledger/config.toml.example", "opt/wattledger/share/doc/wattledger/install.md"):
        assert (dest / rel).is_file(), rel
    # Nothing needed root: all of it is the stager's, no user was made, modes are as shipped.
    assert {p.lstat().st_uid for p in [dest, *dest.rglob("*")]} == {NOBODY}
    assert not (dest / "etc/passwd").exists()
    assert stat.S_IMODE((dest / "etc/wattledger/config.toml").stat().st_mode) == 0o640
    assert "not root: no user is made and nothing is chowned" in r.stdout
    # The hints are true for a staged tree: the link names the target's path, not one in the tree.
    link = dest / "usr/local/bin/wattledger"
    assert os.readlink(link) == "/opt/wattledger/bin/wattledger"
    assert f"staged under {dest}" in r.stdout and "/usr/local/bin/wattledger -> /opt/wattledger/bin/wattledger" in r.stdout
    assert "Check what can be measured here" not in r.stdout  # that is for an install at /


def test_the_targets_sysusers_and_tmpfiles_finish_what_staging_left(checkout: Path) -> None:
    if shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None:
        pytest.fail("systemd-sysusers/systemd-tmpfiles missing: scripts/test.sh installs Debian's systemd package")
    r = stage(checkout, "--no-venv")
    assert r.returncode == 0, r.stderr
    m = re.search(r"on the target, as root \(a package's postinst does this\): (.*)$", r.stdout, re.M)
    assert m, r.stdout
    commands = [c.strip().split() for c in m.group(1).split(";")]
    setup = [c for c in commands if c[0] in ("systemd-sysusers", "systemd-tmpfiles")]
    assert [c[0] for c in setup] == ["systemd-sysusers", "systemd-tmpfiles"], commands
    # The package manager: the tree is root's on the target; then the postinst's commands, over it.
    dest = checkout / "out" / "root"
    for p in [dest, *dest.rglob("*")]:
        os.lchown(p, 0, 0)
    for cmd in setup:
        done = subprocess.run([cmd[0], f"--root={dest}", *cmd[1:]], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    gid = next(int(ln.split(":")[2]) for ln in (dest / "etc/group").read_text().splitlines()
               if ln.startswith("wattledger:"))
    conf = (dest / "etc/wattledger/config.toml").stat()
    assert (stat.S_IMODE(conf.st_mode), conf.st_uid, conf.st_gid) == (0o640, 0, gid)
    state = (dest / "var/lib/wattledger").stat()
    assert stat.S_IMODE(state.st_mode) == 0o750 and state.st_gid == gid and state.st_uid != 0


def test_no_users_as_non_root_stages_too(checkout: Path) -> None:
    r = stage(checkout, "--no-venv", "--no-users")
    assert r.returncode == 0, r.stderr
    conf = checkout / "out/root/etc/wattledger/config.toml"
    assert (conf.stat().st_uid, conf.stat().st_gid) == (NOBODY, NOBODY)  # the stager's: no chgrp was tried
    assert "cannot change ownership" not in r.stderr
