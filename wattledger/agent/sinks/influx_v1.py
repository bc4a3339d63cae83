"""InfluxDB 1.x sink: ``POST /write?db=&rp=&precision=ns`` with HTTP basic auth.

For servers older than 1.8 (Debian still ships 1.6), which have no
``/api/v2/write``; 1.8+, 2.x and 3.x are better served by ``influx_v2``.
influxdb-client has no v1 write call, so the request is a plain urllib3 POST
(urllib3 is what influxdb-client itself runs on); the line protocol and its
escaping still come from influxdb-client's ``Point`` (``points.Point.to_line``).
One attempt per ``write``: urllib3's retries are off, the deliverer retries.
"""

from __future__ import annotations

import gzip as _gzip
import json
import urllib.parse

import urllib3

from wattledger.model.points import Point
from wattledger.agent.sinks.base import (
    Expired, WriteResult, classify, describe_error, encode_lines, error_message,
)
from wattledger.agent.sinks.routing import Routing, single, write_routed
from wattledger.model.readings import ProbeResult, SourceState
from wattledger.util.redact import redact_url

SOURCE = "influx_v1"


class InfluxV1Sink:
    name = SOURCE
    remote = True

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str = "",
        username: str = "",
        password: str = "",
        timeout_s: float = 10.0,
        gzip: bool = True,
        routing: Routing | None = None,
    ) -> None:
        """``routing``: a fleet's tiers (each tier to its retention policy); None: all to ``retention_policy``."""
        if not url:
            raise ValueError("influx_v1 sink needs a URL (--influx-url / [sink] url)")
        if not database:
            raise ValueError("influx_v1 sink needs a database (--influx-database / [sink] database)")
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.gzip = gzip
        self._timeout = urllib3.Timeout(total=timeout_s)
        self._http = urllib3.PoolManager(num_pools=2, maxsize=1, retries=False, timeout=self._timeout)
        self._auth: dict[str, str] = (
            urllib3.make_headers(basic_auth=f"{username}:{password}") if username else {}
        )
        self.routing = routing or single(retention_policy)
        self.expired = Expired(SOURCE)

    def _write_url(self, rp: str) -> str:
        params = {"db": self.database, "precision": "ns"}
        if rp:
            params["rp"] = rp
        return f"{self.url}/write?{urllib.parse.urlencode(params)}"

    def write(self, points: list[Point]) -> WriteResult:
        return write_routed(self.routing, self.expired, points, self._write)

    def _write(self, rp: str, points: list[Point]) -> WriteResult:
        lines = encode_lines(points)
        if isinstance(lines, WriteResult):
            return lines
        body = "\n".join(lines).encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=utf-8", **self._auth}
        if self.gzip:
            body = _gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        try:
            resp = self._http.request("POST", self._write_url(rp), body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return WriteResult.unreachable(e)
        return classify(resp.status, resp.data, resp.headers)

    def _get(self, path: str, params: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return self._http.request("GET", f"{self.url}{path}{query}", headers=dict(self._auth))

    def probe(self) -> ProbeResult:
        """Reachable? Credentials accepted? Database (and retention policy) there?"""
        try:
            ping = self._get("/ping")
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return ProbeResult(
                SOURCE, SourceState.MISSING, f"cannot reach {redact_url(self.url)}: {describe_error(e)}",
                f"check that InfluxDB runs and that [sink] url is right (try: curl -i {redact_url(self.url)}/ping)",
            )
        version = ping.headers.get("X-Influxdb-Version")
        if ping.status != 204 or not version:
            return ProbeResult(
                SOURCE, SourceState.NOT_SUPPORTED,
                f"{redact_url(self.url)}/ping answered HTTP {ping.status} without an InfluxDB version header",
                "point [sink] url at the InfluxDB HTTP API (default port 8086)",
            )
        try:
            resp = self._get("/query", {"q": "SHOW DATABASES"})
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return ProbeResult(SOURCE, SourceState.ERROR, f"SHOW DATABASES failed: {e}", "see the InfluxDB log")
        if resp.status in (401, 403):
            return ProbeResult(
                SOURCE, SourceState.PERMISSION_DENIED,
                f"InfluxDB {version} refused the credentials (HTTP {resp.status}: {error_message(resp.data)})",
                "set [sink] username/password (or WATTLEDGER_SINK_USERNAME / WATTLEDGER_SINK_PASSWORD) "
                "to a user with WRITE on the database",
            )
        if resp.status != 200:
            return ProbeResult(
                SOURCE, SourceState.ERROR, f"SHOW DATABASES: HTTP {resp.status}: {error_message(resp.data)}",
                "see the InfluxDB log",
            )
        names = _first_column(resp.data)
        where = f"InfluxDB {version} at {redact_url(self.url)}"
        if names is not None and self.database not in names:
            return ProbeResult(
                SOURCE, SourceState.MISSING, f"{where}: database '{self.database}' does not exist"
                " (or this user cannot see it)",
                f"create it: influx -execute 'CREATE DATABASE \"{self.database}\"' "
                "(or GRANT WRITE ON it to the configured user)",
            )
        wanted = sorted({rp for rp in self.routing.targets.values() if rp})
        if wanted:
            rps = self._get("/query", {"q": f'SHOW RETENTION POLICIES ON "{_ident(self.database)}"'})
            rp_names = _first_column(rps.data) if rps.status == 200 else None
            missing = [rp for rp in wanted if rp_names is not None and rp not in rp_names]
            if missing:
                fix = ("run `wattledger influx setup` (it creates the tiers' retention policies), or set [influx] "
                       "layout = \"single\"" if self.routing.tiered else
                       "create it (CREATE RETENTION POLICY ...) or leave [sink] retention_policy empty for the default")
                return ProbeResult(
                    SOURCE, SourceState.MISSING,
                    f"{where}: retention polic{'ies' if len(missing) > 1 else 'y'} "
                    f"{', '.join(repr(m) for m in missing)} missing on '{self.database}'", fix)
        return ProbeResult(
            SOURCE, SourceState.FOUND, f"{where}, database '{self.database}'"
            + (f", retention policies {', '.join(wanted)}" if len(wanted) > 1 else
               f", retention policy '{wanted[0]}'" if wanted else ""),
            devices=(self.database,),
        )

    def close(self) -> None:
        self._http.clear()


def _ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _first_column(data: bytes) -> set[str] | None:
    """The first column of an InfluxQL answer, or None when it cannot be read."""
    try:
        doc = json.loads(data)
        result = doc["results"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if "error" in result:
        return None
    out: set[str] = set()
    for series in result.get("series", []) or []:
        out.update(str(v[0]) for v in series.get("values", []) or [])
    return out
