"""Loopback fakes of the carbon-intensity APIs, answering with the recorded shapes in fixtures/carbon/.

One ThreadingHTTPServer on 127.0.0.1 serves all three APIs (their paths do not
overlap), checks credentials the way each service does, filters the recorded
series to the requested window, records every request, and can be scripted
to fail: ``fake.queue("em_history", 429, headers={"Retry-After": "7"})``
makes the next history request answer 429, then the normal answer resumes.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from wattledger.util.timeutil import parse_iso_ns

FIXTURES = Path(__file__).parent / "fixtures" / "carbon"
HALF_HOUR_NS = 1800 * 10**9


@dataclass
class Seen:
    route: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Scripted:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


ROUTES = [
    ("em_latest", re.compile(r"^/v3/carbon-intensity/latest$")),
    ("em_history", re.compile(r"^/v3/carbon-intensity/history$")),
    ("em_past_range", re.compile(r"^/v3/carbon-intensity/past-range$")),
    ("wt_login", re.compile(r"^/login$")),
    ("wt_historical", re.compile(r"^/v3/historical$")),
    ("ukci_range", re.compile(r"^/intensity/(?P<frm>[^/]+)/(?P<to>[^/]+)$")),
    ("ukci_regional_range", re.compile(r"^/regional/intensity/(?P<frm>[^/]+)/(?P<to>[^/]+)/regionid/(?P<rid>\d+)$")),
]


class FakeCarbonAPIs:
    def __init__(self, *, em_token: str = "em-secret-token-123", wt_user: str = "alice",
                 wt_password: str = "wt-secret-pass-456") -> None:
        self.em_token = em_token
        self.wt_user = wt_user
        self.wt_password = wt_password
        self.wt_token = fixture("watttime_login.json")["token"]
        self.em_zones = {"DE"}
        self.wt_regions = {"CAISO_NORTH"}
        self.requests: list[Seen] = []
        self._script: dict[str, deque[Scripted]] = {}
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # -- control ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeCarbonAPIs":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeCarbonAPIs":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def queue(self, route: str, status: int, body: Any = None, headers: dict[str, str] | None = None,
              times: int = 1) -> None:
        with self._lock:
            for _ in range(times):
                self._script.setdefault(route, deque()).append(Scripted(status, body, headers or {}))

    def seen(self, route: str) -> list[Seen]:
        return [r for r in self.requests if r.route == route]

    # -- serving ------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        for route, pattern in ROUTES:
            m = pattern.match(parts.path)
            if m:
                break
        else:
            return self._send(h, 404, {"error": f"no route {parts.path}"})
        with self._lock:
            self.requests.append(Seen(route, parts.path, query, {k.lower(): v for k, v in h.headers.items()}))
            scripted = self._script.get(route)
            step = scripted.popleft() if scripted else None
        if step is not None:
            return self._send(h, step.status, step.body, step.headers)
        status, body = getattr(self, "_" + route)(h, query, m.groupdict())
        self._send(h, status, body)

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body if body is not None else {}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    # Electricity Maps: auth-token header; unknown zone -> 404.
    def _em_check(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> tuple[int, Any] | None:
        if h.headers.get("auth-token") != self.em_token:
            return 401, {"status": "error", "message": "Invalid authentication token"}
        if q.get("zone") not in self.em_zones:
            return 404, {"status": "error", "message": f"Zone '{q.get('zone')}' does not exist."}
        return None

    def _em_latest(self, h: BaseHTTPRequestHandler, q: dict[str, str], _: dict) -> tuple[int, Any]:
        return self._em_check(h, q) or (200, fixture("electricitymaps_latest.json"))

    def _em_history(self, h: BaseHTTPRequestHandler, q: dict[str, str], _: dict) -> tuple[int, Any]:
        return self._em_check(h, q) or (200, fixture("electricitymaps_history.json"))

    def _em_past_range(self, h: BaseHTTPRequestHandler, q: dict[str, str], _: dict) -> tuple[int, Any]:
        bad = self._em_check(h, q)
        if bad:
            return bad
        start, end = parse_iso_ns(q["start"]), parse_iso_ns(q["end"])
        if end - start > 10 * 24 * 3600 * 10**9:
            return 400, {"status": "error", "message": "range exceeds 10 days for hourly granularity"}
        body = fixture("electricitymaps_past_range.json")
        body["data"] = [e for e in body["data"] if start <= parse_iso_ns(e["datetime"]) <= end]  # inclusive
        return 200, body

    # WattTime: Basic auth at /login for a token, Bearer for data; region outside the plan -> 403.
    def _wt_login(self, h: BaseHTTPRequestHandler, q: dict[str, str], _: dict) -> tuple[int, Any]:
        expected = "Basic " + base64.b64encode(f"{self.wt_user}:{self.wt_password}".encode()).decode()
        if h.headers.get("Authorization") != expected:
            return 401, {"error": "Unauthorized"}
        return 200, {"token": self.wt_token}

    def _wt_historical(self, h: BaseHTTPRequestHandler, q: dict[str, str], _: dict) -> tuple[int, Any]:
        if h.headers.get("Authorization") != f"Bearer {self.wt_token}":
            return 401, {"error": "Unauthorized"}
        if q.get("region") not in self.wt_regions:
            return 403, {"error": f"Your account does not have access to region {q.get('region')}"}
        start, end = parse_iso_ns(q["start"]), parse_iso_ns(q["end"])
        body = fixture("watttime_historical.json")
        body["data"] = [e for e in body["data"] if start <= parse_iso_ns(e["point_time"]) <= end]
        return 200, body

    # GB Carbon Intensity: no auth; a range also returns the half hour ending at `from`.
    def _ukci_range(self, h: BaseHTTPRequestHandler, q: dict[str, str], g: dict) -> tuple[int, Any]:
        frm, to = parse_iso_ns(g["frm"]), parse_iso_ns(g["to"])
        body = fixture("ukci_intensity_range.json")
        body["data"] = [e for e in body["data"] if frm - HALF_HOUR_NS <= parse_iso_ns(e["from"]) < to]
        return 200, body

    def _ukci_regional_range(self, h: BaseHTTPRequestHandler, q: dict[str, str], g: dict) -> tuple[int, Any]:
        if g["rid"] != "13":
            return 400, {"error": {"code": "400 Bad Request", "message": "Please enter a valid region id"}}
        frm, to = parse_iso_ns(g["frm"]), parse_iso_ns(g["to"])
        body = fixture("ukci_regional_range.json")
        body["data"]["data"] = [e for e in body["data"]["data"] if frm - HALF_HOUR_NS <= parse_iso_ns(e["from"]) < to]
        return 200, body
