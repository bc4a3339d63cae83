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
        self.requests: list[Recorded] = []
        self.lines: list[str] = []            # lines stored, in arrival order
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
                    self._send(200, {"links": {"self": "/api/v2/buckets"}, "buckets": [
                        {"id": f"{i:016x}", "name": b, "orgID": "0" * 16, "type": "user", "retentionRules": [],
                         "links": {"self": f"/api/v2/buckets/{i:016x}"}}
                        for i, b in enumerate(found)
                    ]})
                else:
                    self._send(404, {"code": "not found", "message": "path not found"})

            def do_POST(self) -> None:  # noqa: N802
                rec = self._record()
                if rec.path != "/api/v2/write":
                    self._send(404, {"code": "not found", "message": "path not found"})
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
                if bad:
                    self._send(400, {"code": "invalid", "message":
                                     f"partial write error ({len(good)} written): unable to parse '{bad[0][:60]}': "
                                     "invalid field format"})
                    return
                self._send(204)

        return Handler
