"""The service under a real systemd (issue 17, item 12): installed by deploy/install.sh, run by systemd.

Until now the hardened unit had only been scored offline (``systemd-analyze
security --offline``). Here this machine's own OS boots in ``systemd-nspawn``
(tests/nspawn.py); ``deploy/install.sh`` installs this checkout into it (the
package's wheel, built here, and its dependencies' wheels from
``.venv/wheelhouse``, which scripts/test.sh downloads; no network inside), and
systemd runs ``wattledger.service`` as shipped, with a live fake RAPL zone
bound over ``/sys/class`` (its ``energy_uj`` root-only, mode 0400, as since
CVE-2020-8694) and InfluxDB on the host's loopback. The test checks that:

1. the unit is active and the ledger gets ticks with RAPL energy (read as
   user ``wattledger`` through the ambient CAP_DAC_READ_SEARCH);
2. ``ProtectSystem=strict`` is in effect (``/etc``, ``/usr/local`` read-only in
   the service's mount namespace, though writable in the container), the
   state directory is writable (``StateDirectory=``, a ReadWritePaths), the
   agent holds exactly its two ambient capabilities, and the running unit's
   exposure score (``systemd-analyze security``, online) is the one the
   offline test keeps;
3. ``kill -9`` restarts it (``Restart=on-failure``), and the restarted agent
   charges the time it was down to ``_unobserved`` (item 4);
4. ``systemctl stop`` is a clean SIGTERM exit that flushes the spool: points
   held while InfluxDB was down are all in InfluxDB after the stop;

then powers the container off. Skipped, with the reason, where nspawn cannot
run (not root).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fake_powercap import FakePowercap
from tests.influx_server import InfluxServer
from tests.nspawn import CannotBoot, Container, why_not
from tests.test_service_unit import MAX_EXPOSURE

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / ".venv" / "wheelhouse"
DB = "wl_nspawn"
PY = "/opt/wattledger/bin/python"
# CapAmb of the agent: CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19).
AMBIENT = f"{(1 << 2) | (1 << 19):016x}"
LEDGER = "/var/lib/wattledger/ledger.sqlite3"
# What nspawn says where the machine does not allow containers (no privileges, no namespaces).
CANNOT_RUN = re.compile(r"Operation not permitted|Permission denied|not supported|No such file or directory.*namespace",
                        re.IGNORECASE)
QUERY = ("import json, os, sqlite3, sys; os.path.exists('" + LEDGER + "') or sys.exit(print('{}')); "
         "db = sqlite3.connect('file:" + LEDGER + "?mode=ro', uri=True, timeout=30); "
         "q = lambda s: db.execute(s).fetchone()[0]; "
         "print(json.dumps({'nodes': q('SELECT COUNT(*) FROM wl_node'), "
         "'node_j': q('SELECT TOTAL(energy_j) FROM wl_node'), 'job_j': q('SELECT TOTAL(energy_j) FROM wl_job'), "
         "'unobserved_j': q(\"SELECT TOTAL(energy_j) FROM wl_job WHERE job = '_unobserved'\"), "
         "'rapl_nodes': q(\"SELECT COUNT(*) FROM wl_node WHERE source = 'rapl' AND energy_j > 0\"), "
         "'spooled': int(q(\"SELECT value FROM meta WHERE key = 'outbox_rows'\"))}))")


def build_wheels(tmp_path: Path) -> tuple[Path, str]:
    """This checkout's wheel (built offline) beside the dependencies' wheels; (dir, wheel file name)."""
    if not (WHEELHOUSE / ".complete").exists():
        pytest.fail(f"{WHEELHOUSE} is missing: scripts/test.sh downloads the dependencies' wheels")
    wheels = tmp_path / "wheels"
    shutil.copytree(WHEELHOUSE, wheels)
    src = tmp_path / "src"
    shutil.copytree(REPO / "wattledger", src / "wattledger", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("wattledger-*.whl")
    return wheels, wheel.name


def config(influx_url: str) -> str:
    return (f'[agent]\ninterval_s = 0.5\nestimate = "never"\ngpus = "never"\n'
            f'[sink]\nurl = "{influx_url}"\ndatabase = "{DB}"\ntimeout_s = 2\n'
            '[influx]\nlayout = "single"\n')  # a plain database (the tiers: tests/test_fleet_*.py)


def wait(what: str, check: Callable[[], bool], timeout_s: float, explain: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s\n{explain()}")
        time.sleep(0.2)


@pytest.mark.slow
def test_the_installed_service_under_a_real_systemd(tmp_path: Path, fresh_influxd: InfluxServer) -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    if shutil.which("systemd-nspawn") is None:
        pytest.fail("systemd-nspawn is missing: scripts/test.sh installs Debian's systemd-container")
    took: dict[str, float] = {}
    t = time.monotonic()
    wheels, wheel = build_wheels(tmp_path)
    fresh_influxd.create_db(DB)
    rapl = FakePowercap(tmp_path / "sys", mode=0o400)  # root-only, as on a real host
    rapl.run(power_w=35.0)
    box = Container(tmp_path / "nspawn.log",
                    binds_ro=[(REPO, "/src"), (wheels, "/wheels"), (tmp_path / "sys" / "class", "/sys/class")])
    took["prepare"] = time.monotonic() - t
    try:
        try:
            took["boot"] = box.boot()
        except CannotBoot as e:
            if CANNOT_RUN.search(str(e)):  # this machine forbids what nspawn needs: a reason, not a failure
                pytest.skip(f"systemd-nspawn cannot run here: {e}")
            raise
        exercise(box, wheel, fresh_influxd, took)
    finally:
        rapl.stop()
        t = time.monotonic()
        rc = box.close()
        took["poweroff"] = time.monotonic() - t
    assert rc == 0, f"nspawn exited {rc}:\n{box.output()[-2000:]}"
    print("nspawn test phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in took.items()))


def exercise(box: Container, wheel: str, influx: InfluxServer, took: dict[str, float]) -> None:
    def journal() -> str:
        return box.sh("journalctl -u wattledger --no-pager -n 60 -o short-monotonic", check=False)

    def ledger() -> dict[str, float]:
        found = json.loads(box.run(PY, "-c", QUERY).stdout)
        return {"nodes": 0, "node_j": 0.0, "job_j": 0.0, "unobserved_j": 0.0, "rapl_nodes": 0, "spooled": 0, **found}

    def show(prop: str) -> str:
        return box.run("systemctl", "show", "-P", prop, "wattledger").stdout.strip()

    t = time.monotonic()
    box.sh(f"mkdir -p /etc/wattledger && cat > /etc/wattledger/config.toml <<'EOF'\n{config(influx.url)}EOF\n")
    out = box.run("bash", "/src/deploy/install.sh", "--source", f"/wheels/{wheel}", "--pip-args",
                  "--no-index --find-links /wheels", timeout_s=600).stdout
    assert "started; status: systemctl status wattledger" in out, out
    took["install"] = time.monotonic() - t

    # 1. Active, ticking, RAPL read through the ambient capability.
    t = time.monotonic()
    assert box.run("systemctl", "is-active", "wattledger", check=False).stdout.strip() == "active", journal()
    wait("three ticks with RAPL energy in the ledger", lambda: ledger()["rapl_nodes"] >= 3, 60, journal)
    took["first ticks"] = time.monotonic() - t
    pid = show("MainPID")
    status = box.sh(f"cat /proc/{pid}/status")
    assert f"CapAmb:\t{AMBIENT}" in status, status
    uid = box.sh("id -u wattledger").strip()
    assert f"Uid:\t{uid}\t{uid}" in status

    # 2. ProtectSystem=strict in the service's mount namespace; its state directory writable.
    box.sh("touch /usr/local/wl-control")  # writable in the container itself...
    for path in ("/etc/wl-probe", "/usr/local/wl-probe", "/opt/wattledger/wl-probe"):
        r = box.run("nsenter", "-t", pid, "-m", "--", "touch", path, check=False)
        assert r.returncode != 0 and "Read-only file system" in r.stderr, (path, r.stderr)
    box.run("nsenter", "-t", pid, "-m", "--", "touch", "/var/lib/wattledger/wl-probe")
    assert show("ProtectSystem") == "strict" and show("StateDirectory") == "wattledger"
    # The exposure score of the running unit, from the real systemd (the unit tests score it offline).
    security = box.run("systemd-analyze", "security", "--no-pager", "wattledger.service", check=False)
    level = re.search(r"Overall exposure level for wattledger.service: (\d+(?:\.\d+)?)", security.stdout)
    assert level and float(level.group(1)) <= MAX_EXPOSURE, security.stdout[-1500:] + security.stderr

    # 3. kill -9: systemd restarts it (RestartSec=5s); the restarted agent charges the gap to _unobserved.
    t = time.monotonic()
    box.run("kill", "-9", pid)
    wait("restart after kill -9", lambda: show("NRestarts") == "1" and show("ActiveState") == "active"
         and show("MainPID") not in ("0", pid), 60, journal)
    wait("the gap charged to _unobserved", lambda: ledger()["unobserved_j"] > 0, 60, journal)
    took["kill -9 to restarted"] = time.monotonic() - t
    assert "resuming 1 counter(s) from the tick of" in journal()

    # 4. InfluxDB away: points wait in the spool; back, and `systemctl stop` (SIGTERM) flushes them.
    influx.stop()
    wait("points held in the spool", lambda: ledger()["spooled"] > 0, 30, journal)
    time.sleep(2.0)  # a few failed deliveries: the deliverer is in backoff when the stop comes
    influx.start()
    t = time.monotonic()
    box.run("systemctl", "stop", "wattledger", timeout_s=60)
    took["stop"] = time.monotonic() - t
    assert (show("Result"), show("ExecMainCode"), show("ExecMainStatus")) == ("success", "1", "0"), journal()
    assert "agent: stopped after" in journal()
    final = ledger()
    assert final["spooled"] == 0, journal()
    in_influx = influx.series_values("SELECT COUNT(energy_j) FROM wl_node", DB)
    assert in_influx and in_influx[0]["count"] == final["nodes"]
    assert math.isclose(final["job_j"], final["node_j"], rel_tol=1e-9)  # every joule charged, the gap included
