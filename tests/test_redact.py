"""Credentials in URLs never reach what the tool prints or logs (issue 17, item 10).

Reproduction: ``doctor --influx-url http://admin:S3CRETpw@...`` printed the
password twice. Every URL shown goes through ``util/redact.py``; log records
and click errors pass through it as a last line of defence. The commands run
as real processes (the console script), against a real influxd where a server
is needed.
"""

from __future__ import annotations

import logging
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.influx_server import InfluxServer, free_port
from wattledger.util.redact import RedactingFilter, redact_text, redact_url

SECRET = "S3CRETpw"
WL = [sys.executable, "-m", "wattledger.cli.main"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("WATTLEDGER_CONFIG", None)
    return subprocess.run([*WL, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("url,shown", [
    ("http://admin:S3CRETpw@influx:8086", "http://admin:***@influx:8086"),
    ("https://admin:S3CRETpw@influx:8086/api?db=x&p=S3CRETpw", "https://admin:***@influx:8086/api?db=x&p=***"),
    ("https://S3CRETpw@grafana.example.org/", "https://***@grafana.example.org/"),
    ("http://u:pa/S3CRETpw@w@host:1/x", "http://u:***@host:1/x"),  # unescaped / and @ in the password
    ("http://host/write?db=a&u=me&token=S3CRETpw#f", "http://host/write?db=a&u=me&token=***#f"),
    ("http://127.0.0.1:8086", "http://127.0.0.1:8086"),
    ("not a url", "not a url"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@given(user=st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
       password=st.text(alphabet=string.ascii_letters + string.digits + "!$%&*+,;=/@:~-", min_size=10,
                        max_size=30),
       before=st.sampled_from(["", "cannot reach ", "(try: curl -i ", "error: '"]),
       after=st.sampled_from(["", "/ping)", ": refused", "' failed", "/write?db=x\nnext line"]))
def test_no_password_survives_in_running_text(user: str, password: str, before: str, after: str) -> None:
    text = f"{before}http://{user}:{password}@influx.example.org:8086{after}"
    out = redact_text(text)
    assert password not in out
    assert f"http://{user}:***@influx.example.org:8086" in out


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("wattledger.test_redact")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("delivery to %s failed", f"http://admin:{SECRET}@influx:8086")
    finally:
        logger.removeHandler(handler)
    assert seen == ["delivery to http://admin:***@influx:8086 failed"]


@pytest.mark.influx
def test_doctor_never_prints_the_password(influxd: InfluxServer, tmp_path: Path) -> None:
    """The issue's reproduction: a reachable InfluxDB named with credentials in the URL."""
    url = influxd.url.replace("http://", f"http://admin:{SECRET}@")
    for args in (["--influx-url", url, "--influx-database", "wl_redact"], ["--influx-url", url, "--json",
                                                                             "--influx-database", "wl_redact"]):
        r = run("doctor", "--sysfs-root", str(tmp_path), *args)
        assert SECRET not in r.stdout + r.stderr, r.stdout + r.stderr
        assert "admin:***@127.0.0.1" in r.stdout  # still says which server and user


def test_unreachable_sink_errors_and_logs_never_show_the_password(tmp_path: Path) -> None:
    url = f"http://admin:{SECRET}@127.0.0.1:{free_port()}"
    r = run("doctor", "--sysfs-root", str(tmp_path), "--influx-url", url, "--influx-database", "db")
    assert SECRET not in r.stdout + r.stderr and "cannot reach http://admin:***@127.0.0.1" in r.stdout
    # The agent logs delivery failures; a url without database or bucket is a config error that quotes it.
    r = run("agent", "--ticks", "2", "--interval", "0.2", "--state-dir", str(tmp_path / "s"), "--influx-url", url,
            "--influx-database", "db")
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr and "delivery" in r.stderr
    r = run("agent", "--ticks", "1", "--state-dir", str(tmp_path / "s"), "--influx-url", url)
    assert r.returncode != 0 and SECRET not in r.stdout + r.stderr and "admin:***@" in r.stderr
    r = run("report", "--state-dir", str(tmp_path / "s"), "--from-influx", "--influx-url", url,
            "--influx-database", "db")
    assert r.returncode == 1 and SECRET not in r.stdout + r.stderr and "admin:***@" in r.stderr
    r = run("dashboards", "push", "--url", url, "--timeout-s", "5")
    assert r.returncode != 0 and SECRET not in r.stdout + r.stderr
