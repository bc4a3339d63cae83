"""Running code as another user (``setpriv``), wherever the checkout lives.

Tests that switch to another uid (the service user's stand-in, nobody) cannot
count on that uid reaching the checkout: a clone in a private directory
(``mktemp -d``, a home directory of mode 0700 or 0750) cannot be entered by
anyone else, and neither can its ``.venv``. So what the other uid runs is put
where it can read it:

* ``world_dir``: a fresh directory under /tmp, mode 0755 (never a chmod of
  the checkout's or pytest's parents);
* ``stage_code``: a copy of the ``wattledger`` package there and, with
  ``deps=True``, of its runtime dependencies as installed in this venv (each
  distribution's files, from its RECORD; the test extras are not copied);
* ``other_python``: the interpreter this venv was made from (the venv's
  ``bin/python`` is a link inside the checkout), run with ``-I`` and the copy
  first on ``sys.path``. It must be the same Python version, since compiled
  dependencies (psutil) are built for it.

``Staged.check`` runs an import as the other uid first. Where the copy cannot
be made usable (the interpreter itself lives in a directory others cannot
enter, /tmp cannot be entered) the test is skipped and says why: that is a
property of the machine, not of the code under test.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/"}


def needs_root_and_setpriv() -> None:
    """Skip (saying why) where another uid cannot be switched to."""
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root; CI and the dev machines run the suite as root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")


def setpriv(uid: int, gid: int | None = None, caps: tuple[str, ...] = ()) -> list[str]:
    """The ``setpriv`` prefix that runs a command as ``uid`` (group ``gid``, no supplementary groups),
    keeping ``caps`` as ambient capabilities (what systemd's AmbientCapabilities= does)."""
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid if gid is None else gid}", "--clear-groups"]
    if caps:
        spec = ",".join(f"+{c}" for c in caps)
        cmd += [f"--inh-caps={spec}", f"--ambient-caps={spec}"]
    return cmd


def world_dir(prefix: str) -> Path:
    """A new directory under /tmp that every uid can enter (0755); the caller removes it."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    r = subprocess.run([*setpriv(NOBODY), "test", "-x", str(root)], capture_output=True, env=CLEAN_ENV, cwd="/")
    if r.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"uid {NOBODY} cannot enter {root} (is /tmp itself closed to other users?)")
    return root


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    """The names of a distribution's runtime requirements (extras left out; markers by what is installed)."""
    names = []
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if m:
            names.append(m.group(0))
    return names


def runtime_distributions() -> list[metadata.Distribution]:
    """wattledger's runtime dependencies, recursively, as installed here (wattledger itself excluded)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = _requirement_names(metadata.distribution("wattledger"))
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement whose marker does not hold here (tomli on 3.11)
        seen[key] = dist
        todo += _requirement_names(dist)
    return list(seen.values())


def _copy_distribution(dist: metadata.Distribution, lib: Path) -> None:
    base = Path(str(dist.locate_file(""))).resolve()
    for rel in dist.files or []:
        parts = Path(str(rel)).parts
        if not parts or parts[0] == ".." or "__pycache__" in parts:
            continue  # console scripts live outside site-packages; caches are rebuilt
        src = base / rel
        if src.is_file():
            dst = lib / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


@dataclass(frozen=True)
class Staged:
    lib: Path  # holds wattledger (and its dependencies, when staged with them)
    python: str  # an interpreter the other uid can run, of this Python's version

    def code(self, body: str) -> str:
        """``body`` preceded by putting the staged copy first on sys.path."""
        return f"import sys; sys.path.insert(0, {str(self.lib)!r})\n{body}"

    def argv(self, body: str) -> list[str]:
        """``python -I -c`` of ``body`` over the staged copy (append it to a ``setpriv`` prefix)."""
        return [self.python, "-I", "-c", self.code(body)]


def _chmod_world_readable(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(0o755 if os.access(path, os.X_OK) else 0o644)


def _interpreters() -> list[str]:
    """Candidates for the other uid: this venv's base interpreter first, then the system's of this version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = [os.path.realpath(sys.executable), getattr(sys, "_base_executable", ""), f"/usr/bin/python{version}",
             "/usr/bin/python3"]
    return list(dict.fromkeys(p for p in found if p and os.path.exists(p)))


def other_python(probe: str = "pass", lib: Path | None = None, uid: int = NOBODY) -> str:
    """An interpreter ``uid`` can run, of this Python's version, that can run ``probe`` (with ``lib``
    first on sys.path); skips the test, saying what was tried, when there is none."""
    want = f"assert sys.version_info[:2] == {tuple(sys.version_info[:2])!r}, sys.version\n{probe}"
    tried = []
    for python in _interpreters():
        reach = subprocess.run([*setpriv(uid), "test", "-x", python], env=CLEAN_ENV, cwd="/", timeout=60)
        if reach.returncode != 0:
            tried.append(f"{python}: not reachable by uid {uid}")
            continue
        code = (f"import sys; sys.path.insert(0, {str(lib)!r})\n" if lib else "import sys\n") + want
        r = subprocess.run([*setpriv(uid), python, "-I", "-c", code], capture_output=True, text=True,
                           env=CLEAN_ENV, cwd="/", timeout=120)
        if r.returncode == 0:
            return python
        tried.append(f"{python}: {(r.stderr.strip().splitlines() or ['exit %d' % r.returncode])[-1]}")
    pytest.skip(f"uid {uid} can run no Python {sys.version_info.major}.{sys.version_info.minor} over the staged "
                f"copy (tried {'; '.join(tried)}); is the interpreter in a directory other users cannot enter?")


def stage_code(root: Path, *, deps: bool) -> Staged:
    """Copy wattledger (and with ``deps`` its runtime dependencies) into ``root/lib``, world-readable, and
    find an interpreter the other uid can run it with (``other_python``)."""
    lib = root / "lib"
    shutil.copytree(REPO / "wattledger", lib / "wattledger", ignore=shutil.ignore_patterns("__pycache__"))
    if deps:
        for dist in runtime_distributions():
            _copy_distribution(dist, lib)
    _chmod_world_readable(root)
    probe = "import wattledger.collectors.rapl, wattledger.collectors.procs"
    if deps:
        probe += ", wattledger.cli.main"
    python = other_python(f"{probe}\nassert wattledger.__file__.startswith({str(lib)!r})", lib)
    return Staged(lib, python)
