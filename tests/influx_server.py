"""A real InfluxDB 1.x server (Debian's influxd) on loopback, for integration tests.

Usage from tests: the ``influxd`` fixture in conftest.py. It can be stopped and
started again on the same data dir and port (outage tests).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

from tests.daemon import LoopbackDaemon, free_port  # noqa: F401 (free_port: imported from here by the tests)

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


class InfluxServer(LoopbackDaemon):
    def __init__(self, root: Path, data: dict[str, int | str] | None = None) -> None:
        """``data``: more [data] settings, e.g. {"max-series-per-database": 40}."""
        self.root = root
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.config = root / "influxdb.conf"
        root.mkdir(parents=True, exist_ok=True)
        text = CONFIG.format(root=root, http_port=self.http_port, rpc_port=self.rpc_port)
        extra = "".join(f"  {k} = {json.dumps(v)}\n" for k, v in (data or {}).items())
        self.config.write_text(text.replace("[http]", extra + "[http]", 1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.launch("influxd", ["-config", str(self.config)], self.root / "influxd.log", self.url + "/ping", 204,
                    timeout_s)

    def num_series(self, db: str) -> int:
        """The series influxd's index holds for ``db`` (SHOW STATS numSeries: what max-series-per-database
        limits)."""
        stats = self.query("SHOW STATS FOR 'database'")["results"][0]["series"]
        return int(next(s["values"][0][s["columns"].index("numSeries")] for s in stats
                        if s["tags"]["database"] == db))

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
