"""InfluxDB v2 write API through influxdb-client: InfluxDB 2.x, 3.x and 1.8+.

``POST /api/v2/write?org=&bucket=&precision=ns`` with ``Authorization: Token``.
On InfluxDB 1.8+ the token is ``username:password`` and the bucket is
``database/retention_policy``; ``make_sink`` builds both from the v1-style
config keys when no token/bucket is given.

influxdb-client's batching WriteApi keeps its buffer in memory and drops a
batch when its retry budget runs out (FIELD-NOTES.md, "InfluxDB"), so it is
used in SYNCHRONOUS mode with the HTTP retries off (``retries=False``): each
``write`` is exactly one request and its outcome, and the on-disk spool plus
``agent.delivery`` own every retry.
"""

from __future__ import annotations


import urllib3
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from wattledger.model.points import Point
from wattledger.agent.sinks.base import (
    Expired, WriteResult, classify, describe_error, encode_lines, error_message,
)
from wattledger.agent.sinks.routing import Routing, single, write_routed
from wattledger.model.readings import ProbeResult, SourceState
from wattledger.util.redact import redact_url

SOURCE = "influx_v2"


class InfluxV2Sink:
    name = SOURCE
    remote = True

    def __init__(
        self,
        url: str,
        *,
        bucket: str,
        org: str = "",
        token: str = "",
        timeout_s: float = 10.0,
        gzip: bool = True,
        routing: Routing | None = None,
    ) -> None:
        """``routing``: a fleet's tiers (each tier to its bucket); None: everything to ``bucket``."""
        if not url:
            raise ValueError("influx_v2 sink needs a URL (--influx-url / [sink] url)")
        if not bucket:
            raise ValueError("influx_v2 sink needs a bucket (--influx-bucket / [sink] bucket)")
        self.url = url.rstrip("/")
        self.bucket = bucket
        # 1.8 and 3.x ignore org; influxdb-client's docs use "-" there. An empty
        # org on 2.x would be a 400 (which reads as bad data); "-" is a 404.
        self.org = org or "-"
        self._client = InfluxDBClient(
            url=self.url,
            token=token or None,  # type: ignore[arg-type]  # None (its default) means no token
            org=self.org,
            timeout=max(1, int(timeout_s * 1000)),
            enable_gzip=gzip,
            retries=False,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self.routing = routing or single(bucket)
        self.expired = Expired(SOURCE)

    def write(self, points: list[Point]) -> WriteResult:
        return write_routed(self.routing, self.expired, points, self._write)

    def _write(self, bucket: str, points: list[Point]) -> WriteResult:
        lines = encode_lines(points)
        if isinstance(lines, WriteResult):
            return lines
        try:
            self._write_api.write(
                bucket=bucket, org=self.org, record=lines,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]  # a str constant, as the library uses it
            )
        except ApiException as e:
            return classify(int(e.status or 0), e.body, e.headers)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return WriteResult.unreachable(e)
        return WriteResult.success(204)

    def probe(self) -> ProbeResult:
        """Reachable? Token accepted? Bucket there (where the server can say)?"""
        try:
            version = self._client.version()
        except ApiException as e:
            return ProbeResult(
                SOURCE, SourceState.NOT_SUPPORTED,
                f"{redact_url(self.url)}/ping answered HTTP {e.status}: {error_message(e.body, e.headers)}",
                "point [sink] url at the InfluxDB HTTP API (default port 8086 for 1.x/2.x, 8181 for 3.x)",
            )
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return ProbeResult(
                SOURCE, SourceState.MISSING, f"cannot reach {redact_url(self.url)}: {describe_error(e)}",
                f"check that InfluxDB runs and that [sink] url is right (try: curl -i {redact_url(self.url)}/ping)",
            )
        where = f"InfluxDB {version} at {redact_url(self.url)}"
        buckets = sorted(set(self.routing.targets.values()))
        for bucket in buckets:
            problem = self._probe_bucket(where, bucket)
            if problem is not None:
                return problem
        return ProbeResult(SOURCE, SourceState.FOUND, f"{where}, bucket{'s' if len(buckets) > 1 else ''} "
                           f"{', '.join(repr(b) for b in buckets)}", devices=tuple(buckets))

    def _probe_bucket(self, where: str, bucket: str) -> ProbeResult | None:
        """What is wrong with writing to ``bucket`` (None: nothing the server can tell us)."""
        try:
            found = self._client.buckets_api().find_bucket_by_name(bucket)
        except ApiException as e:
            if e.status in (401, 403):
                return ProbeResult(
                    SOURCE, SourceState.PERMISSION_DENIED,
                    f"{where} refused the token (HTTP {e.status}: {error_message(e.body, e.headers)})",
                    "set [sink] token (or WATTLEDGER_SINK_TOKEN) to a token with write access to the bucket; "
                    "on InfluxDB 1.8 the token is username:password",
                )
            if e.status == 404:
                # 1.8's compatibility API and 3.x have no bucket listing: the
                # first write reports a missing database/bucket (HTTP 404).
                return ProbeResult(
                    SOURCE, SourceState.FOUND,
                    f"{where} (no bucket listing here, as on 1.8 and 3.x: the first write checks "
                    f"bucket '{bucket}')",
                    devices=(bucket,),
                )
            return ProbeResult(
                SOURCE, SourceState.ERROR, f"{where}: listing buckets failed: HTTP {e.status}",
                "see the InfluxDB log",
            )
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return ProbeResult(SOURCE, SourceState.ERROR, f"{where}: listing buckets failed: {e}", "retry")
        if found is None:
            fix = ("run `wattledger influx setup` (it creates the tiers' buckets and their DBRP mappings), or set "
                   "[influx] layout = \"single\"" if self.routing.tiered else
                   f"create it: influx bucket create --name {bucket}"
                   + (f" --org {self.org}" if self.org != "-" else "")
                   + " (or give the token write access to it)")
            return ProbeResult(
                SOURCE, SourceState.MISSING, f"{where}: bucket '{bucket}' does not exist"
                " (or the token cannot see it)", fix,
            )
        return None

    def close(self) -> None:
        self._write_api.close()
        self._client.close()
