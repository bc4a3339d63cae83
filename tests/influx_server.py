"""A real InfluxDB 1.x server (Debian's influxd) on loopback, for integration tests.

Usage from tests: the ``influxd`` fixture in conftest.py. It can be stopped and
started again on the same data dir and port (outage tests).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

CONFIG = """
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InfluxServer:
    def __init__(self, root: Path, data: dict[str, int | str] | None = None) -> None:
        """``data``: more [data] settings, e.g. {"max-series-per-database": 40}."""
        self.root = root
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = root / "influxdb.conf"
        root.mkdir(parents=True, exist_ok=True)
        text = CONFIG.format(root=root, http_port=self.http_port, rpc_port=self.rpc_port)
        extra = "".join(f"  {k} = {json.dumps(v)}\n" for k, v in (data or {}).items())
        self.config.write_text(text.replace("[http]", extra + "[http]", 1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        binary = shutil.which("influxd")
        if binary is None:
            raise RuntimeError("influxd not installed: run scripts/test.sh (it installs Debian's influxdb)")
        log = open(self.root / "influxd.log", "ab")
        self.proc = subprocess.Popen([binary, "-config", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as r:
                    if r.status == 204:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()  # not left running (and holding the data dir) when it comes up too late
        raise RuntimeError(f"influxd did not start; see {self.root / 'influxd.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def query(self, q: str, db: str | None = None, timeout_s: float = 30.0) -> dict:
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(self.url + "/query", data=data, timeout=timeout_s) as r:
            return json.loads(r.read())

    def create_db(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"')

    def series_values(self, q: str, db: str) -> list[dict]:
        """Rows of a query as dicts (all series concatenated, tags merged in)."""
        out: list[dict] = []
        for result in self.query(q, db).get("results", []):
            if "error" in result:
                raise RuntimeError(result["error"])
            for series in result.get("series", []) or []:
                cols = series["columns"]
                for values in series["values"]:
                    row = dict(zip(cols, values))
                    row.update(series.get("tags", {}) or {})
                    row["_measurement"] = series.get("name")
                    out.append(row)
        return out
