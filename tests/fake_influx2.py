"""A small HTTP server on 127.0.0.1 that answers like InfluxDB 2's write API.

Debian's influxd (1.6) has no ``/api/v2/write``, so the v2 sink is tested
against this: it records every request exactly as influxdb-client sent it
(path, query, headers, gunzipped body) and answers the way InfluxDB 2 does:

- ``GET /ping`` → 204 with ``X-Influxdb-Version``;
- ``GET /api/v2/buckets?name=`` → the bucket list (401 on a wrong token);
- ``POST /api/v2/write`` → 204; 401 ``{"code":"unauthorized",...}`` on a wrong
  token; 404 for an unknown bucket; 413 over ``max_body_bytes``; 400
  ``{"code":"invalid","message":"partial write error ..."}`` when a line
  matches ``reject_line`` (the other lines are kept, like a real partial
  write); or whatever was scripted with ``respond`` (429 + Retry-After, 503...).

and, for ``wattledger influx setup`` (its admin API, as InfluxDB 2.7 answers it):

- ``GET /api/v2/orgs?org=``; ``GET/POST /api/v2/buckets``, ``PATCH
  /api/v2/buckets/{id}`` (retention rules kept per bucket);
- ``GET/POST /api/v2/dbrps``, ``PATCH/DELETE /api/v2/dbrps/{id}`` (DBRP
  mappings);
- ``POST /api/v2/delete`` (a ``_measurement="m"`` predicate drops that
  measurement's lines from the bucket);
- ``POST /query`` for InfluxQL ``SELECT "f", ... FROM "m"`` (no WHERE): the
  lines of measurement m in the bucket the database's default DBRP mapping
  names, as InfluxDB 2's InfluxQL would answer through DBRP.

``mutations`` counts the requests that changed something (a second setup run
must make none).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = "v2.7.11-fake"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]   # lower-cased names
    raw_body: bytes
    body: str                 # gunzipped when Content-Encoding: gzip


@dataclass
class Scripted:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0      # answer late (client timeouts)


class FakeInflux2:
    def __init__(self, *, token: str = "secret-token", org: str = "wl-org", buckets: tuple[str, ...] = ("wl",)) -> None:
        self.token = token
        self.org = org
        self.buckets = set(buckets)
        self.org_id = "0" * 15 + "1"
        self.retention: dict[str, int] = {b: 0 for b in buckets}  # bucket -> everySeconds (0: forever)
        self.dbrps: list[dict[str, Any]] = []
        self.mutations = 0
        self.requests: list[Recorded] = []
        self.lines: list[str] = []            # lines stored, in arrival order
        self.bucket_lines: dict[str, list[str]] = {}  # bucket -> its lines (for /query and delete)
        self.script: deque[Scripted] = deque()
        self.reject_line: Callable[[str], bool] | None = None
        self.max_body_bytes: int | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def respond(self, *answers: Scripted) -> None:
        """Answer the next write requests with these, in order (then normally again)."""
        with self._lock:
            self.script.extend(answers)

    def bucket_doc(self, name: str) -> dict[str, Any]:
        seconds = self.retention.get(name, 0)
        return {"id": _bucket_id(name), "name": name, "orgID": self.org_id, "type": "user",
                "retentionRules": [{"type": "expire", "everySeconds": seconds}] if seconds else [],
                "links": {"self": f"/api/v2/buckets/{_bucket_id(name)}"}}

    def admin(self, rec: Recorded) -> tuple[int, Any]:
        with self._lock:
            return _admin(self, rec)

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/v2/write"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request handling ----------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _send(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("X-Influxdb-Version", VERSION)
                self.send_header("X-Influxdb-Build", "OSS")
                if data:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            def _record(self) -> Recorded:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" and raw else raw
                rec = Recorded(self.command, parsed.path, urllib.parse.parse_qs(parsed.query), headers, raw,
                               payload.decode("utf-8"))
                with fake._lock:
                    fake.requests.append(rec)
                return rec

            def _authorised(self, rec: Recorded) -> bool:
                if rec.headers.get("authorization") == f"Token {fake.token}":
                    return True
                self._send(401, {"code": "unauthorized", "message": "unauthorized access"})
                return False

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                rec = self._record()
                if rec.path in ("/ping", "/health"):
                    self._send(204)
                elif rec.path == "/api/v2/buckets":
                    if not self._authorised(rec):
                        return
                    names = rec.query.get("name", [])
                    found = [b for b in sorted(fake.buckets) if not names or b in names]
                    self._send(200, {"links": {"self": "/api/v2/buckets"},
                                     "buckets": [fake.bucket_doc(b) for b in found]})
                elif rec.path.startswith("/api/v2/") and self._authorised(rec):
                    self._send(*fake.admin(rec))
                elif not rec.path.startswith("/api/v2/"):
                    self._send(404, {"code": "not found", "message": "path not found"})

            def do_PATCH(self) -> None:  # noqa: N802
                rec = self._record()
                if self._authorised(rec):
                    self._send(*fake.admin(rec))

            def do_DELETE(self) -> None:  # noqa: N802
                rec = self._record()
                if self._authorised(rec):
                    self._send(*fake.admin(rec))

            def do_POST(self) -> None:  # noqa: N802
                rec = self._record()
                if rec.path != "/api/v2/write":
                    if self._authorised(rec):
                        self._send(*fake.admin(rec))
                    return
                with fake._lock:
                    scripted = fake.script.popleft() if fake.script else None
                if scripted is not None:
                    if scripted.delay_s:
                        time.sleep(scripted.delay_s)
                    self._send(scripted.status, scripted.body.encode() if scripted.body else None, scripted.headers)
                    return
                if not self._authorised(rec):
                    return
                bucket = (rec.query.get("bucket") or [""])[0]
                if bucket not in fake.buckets:
                    self._send(404, {"code": "not found", "message": f'bucket "{bucket}" not found'})
                    return
                if fake.max_body_bytes is not None and len(rec.body.encode()) > fake.max_body_bytes:
                    self._send(413, {"code": "request too large",
                                     "message": "unable to read data: points batch is too large"})
                    return
                lines = [ln for ln in rec.body.split("\n") if ln]
                bad = [ln for ln in lines if fake.reject_line is not None and fake.reject_line(ln)]
                good = [ln for ln in lines if ln not in bad]
                with fake._lock:
                    fake.lines.extend(good)
                    fake.bucket_lines.setdefault(bucket, []).extend(good)
                if bad:
                    self._send(400, {"code": "invalid", "message":
                                     f"partial write error ({len(good)} written): unable to parse '{bad[0][:60]}': "
                                     "invalid field format"})
                    return
                self._send(204)

        return Handler


# -- the admin API that `wattledger influx setup` uses ---------------------------------------------------------


def _bucket_id(name: str) -> str:
    return f"{abs(hash(name)) % 16**16:016x}"


def _admin(fake: FakeInflux2, rec: Recorded) -> tuple[int, Any]:
    """(status, JSON body) for one admin request."""
    doc = json.loads(rec.body) if rec.body and rec.body.lstrip().startswith("{") else {}
    q = {k: v[0] for k, v in rec.query.items()}
    path, method = rec.path, rec.method
    if path == "/api/v2/orgs":
        ok = q.get("org") == fake.org
        return (200, {"orgs": [{"id": fake.org_id, "name": fake.org}]}) if ok else (404, {"code": "not found",
                                                                                         "message": "org not found"})
    if path == "/api/v2/buckets" and method == "POST":
        fake.mutations += 1
        fake.buckets.add(doc["name"])
        fake.retention[doc["name"]] = max([r["everySeconds"] for r in doc.get("retentionRules") or []] or [0])
        return 201, fake.bucket_doc(doc["name"])
    if path.startswith("/api/v2/buckets/") and method == "PATCH":
        name = next(b for b in fake.buckets if _bucket_id(b) == path.rsplit("/", 1)[1])
        fake.mutations += 1
        fake.retention[name] = max([r["everySeconds"] for r in doc.get("retentionRules") or []] or [0])
        return 200, fake.bucket_doc(name)
    if path.startswith("/api/v2/dbrps"):
        return _dbrps(fake, method, path, q, doc)
    if path == "/api/v2/delete":
        fake.mutations += 1
        measurement = doc["predicate"].split("=", 1)[1].strip('"')
        kept = [ln for ln in fake.bucket_lines.get(q["bucket"], []) if not ln.startswith(measurement + " ")
                and not ln.startswith(measurement + ",")]
        fake.bucket_lines[q["bucket"]] = kept
        return 204, None
    if path == "/query":
        return 200, _influxql(fake, urllib.parse.parse_qs(rec.body))
    return 404, {"code": "not found", "message": "path not found"}


def _dbrps(fake: FakeInflux2, method: str, path: str, q: dict[str, str], doc: dict[str, Any]) -> tuple[int, Any]:
    if method == "GET":
        found = [m for m in fake.dbrps if (not q.get("db") or m["database"] == q["db"])
                 and (not q.get("rp") or m["retention_policy"] == q["rp"])]
        return 200, {"content": found}
    fake.mutations += 1
    if method == "POST":
        mapping = {**doc, "id": f"{len(fake.dbrps) + 1:016x}"}
        if mapping.get("default"):
            for m in fake.dbrps:
                if m["database"] == mapping["database"]:
                    m["default"] = False
        fake.dbrps.append(mapping)
        return 201, {"content": mapping}
    one = next(m for m in fake.dbrps if m["id"] == path.rsplit("/", 1)[1])
    if method == "DELETE":
        fake.dbrps.remove(one)
        return 204, None
    one.update(doc)
    return 200, {"content": one}


def _influxql(fake: FakeInflux2, form: dict[str, list[str]]) -> dict[str, Any]:
    """SELECT "a", "b" FROM "m" on the database's default mapping, as InfluxDB 2's InfluxQL would."""
    import re

    text, db = form["q"][0], form["db"][0]
    m = re.match(r'SELECT (.+) FROM "([^"]+)"$', text)
    mapping = next((d for d in fake.dbrps if d["database"] == db and d.get("default")), None)
    if m is None or mapping is None:
        return {"results": [{"statement_id": 0, "error": f"not understood by the fake: {text}"}]}
    cols = [c.strip().strip('"') for c in m.group(1).split(",")]
    bucket = next(b for b in fake.buckets if _bucket_id(b) == mapping["bucketID"])
    values = []
    for line in fake.bucket_lines.get(bucket, []):
        head, fields, stamp = line.rsplit(" ", 2) if line.count(" ") >= 2 else (line, "", "0")
        if head != m.group(2):
            continue
        parsed = dict(_field(f) for f in re.findall(r'(\w+=(?:"[^"]*"|[^,]+))', fields))
        values.append([int(stamp)] + [parsed.get(c) for c in cols])
    series = [{"name": m.group(2), "columns": ["time", *cols], "values": values}] if values else []
    return {"results": [{"statement_id": 0, **({"series": series} if series else {})}]}


def _field(text: str) -> tuple[str, object]:
    key, value = text.split("=", 1)
    if value.startswith('"'):
        return key, value.strip('"')
    return key, int(value[:-1]) if value.endswith("i") else float(value)
