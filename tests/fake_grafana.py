"""Grafana, as far as the dashboard tests need it.

Two halves:

- The query side: what Grafana does between a panel's JSON and the numbers it
  draws. ``interpolate`` substitutes variables the way the dashboard (template
  service) and the InfluxDB datasource backend do (``$var``/``${var}``,
  multi-value variables as escaped regex alternatives, a custom All value
  verbatim, ``$timeFilter``, ``$__interval``, ``${__from}``...);
  ``influx_to_frames`` turns an InfluxQL answer into the data frames Grafana's
  backend sends (port of pkg/tsdb/influxdb/influxql/buffered/response_parser.go
  and util.FormatFrameName, time-series format); ``run_transformations`` runs a
  panel's transformations (and a stat panel's reducer) with Grafana's own
  ``@grafana/data`` in Node (tests/node/transform.js).
- The API side: ``FakeGrafanaAPI``, a loopback HTTP server answering the calls
  ``wattledger dashboards push`` makes (folders, POST /api/dashboards/db) and
  recording them, so a test can check auth, folder handling and payloads.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).parent / "node"

# Grafana's variable syntax (public/app/features/variables/utils.ts, variableRegex).
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
_REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|\[\]{}/]")


def escape_regex(value: str) -> str:
    """Grafana's escapeRegex (what the InfluxDB datasource applies to multi-value variables)."""
    return _REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), value)


def format_interval(ms: int) -> str:
    """gtime.FormatInterval for whole units: 3600000 -> "1h"."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass
class TimeRange:
    from_ms: int
    to_ms: int


def variable_value(variable: dict[str, Any], selected: Any) -> str:
    """How the InfluxDB datasource formats one variable's selected value into a query."""
    multi = bool(variable.get("multi")) or bool(variable.get("includeAll"))
    if selected == "$__all" or selected == ["$__all"]:
        if variable.get("allValue") is not None:
            return str(variable["allValue"])  # a custom All value is not escaped
        raise AssertionError(f"variable {variable['name']}: All without a custom allValue is not emulated")
    if not multi:
        assert not isinstance(selected, list), f"{variable['name']} takes one value"
        return str(selected)
    values = [selected] if isinstance(selected, str) else list(selected)
    escaped = [escape_regex(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(
    query: str, dashboard: dict[str, Any], selected: dict[str, Any], time_range: TimeRange, interval_ms: int
) -> str:
    """The InfluxQL text Grafana sends for ``query`` with these variable selections.

    ``selected`` maps variable names to a value (or list, or "$__all"); a
    variable not in it takes its default (``current``) from the dashboard.
    """
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    builtins = {
        "__from": str(time_range.from_ms),
        "__to": str(time_range.to_ms),
        "__range_s": str(round((time_range.to_ms - time_range.from_ms) / 1000)),
        "__range_ms": str(time_range.to_ms - time_range.from_ms),
        "__interval": format_interval(interval_ms),
        "__interval_ms": str(interval_ms),
    }

    def value_of(name: str) -> str | None:
        if name in builtins:
            return builtins[name]
        if name not in variables:
            return None  # not a variable: left for the datasource backend ($timeFilter)
        var = variables[name]
        if name in selected:
            chosen = selected[name]
        else:
            current = var.get("current") or {}
            assert "value" in current, f"variable {name} has no default: the test must select a value"
            chosen = current["value"]
        return variable_value(var, chosen)

    def substitute(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        got = value_of(name)
        return m.group(0) if got is None else got

    text = _VARIABLE.sub(substitute, query)
    # The datasource backend (pkg/tsdb/influxdb/models/query.go, Build):
    text = text.replace("$timeFilter", f"time >= {time_range.from_ms}ms and time <= {time_range.to_ms}ms")
    text = text.replace("$interval", format_interval(interval_ms))
    text = text.replace("$__interval_ms", str(interval_ms))
    text = text.replace("$__interval", format_interval(interval_ms))
    assert "$" not in text.replace("$/", "").replace("^$", ""), f"uninterpolated variable in {text!r}"
    return text


# -- InfluxQL answer -> Grafana data frames -------------------------------------------

_ALIAS = re.compile(r"\[\[([\@\/\w-]+)(\.[\@\/\w-]+)*\]\]*|\$([\@\w-]+?)*")


def frame_name(row_name: str, column: str, tags: dict[str, str], alias: str) -> str:
    """util.FormatFrameName for raw queries (``$m`` is empty there: no measurement is known)."""
    if not alias:
        name = f"{row_name}.{column}"
        if tags:
            name += " { " + ", ".join(f"{k}: {v}" for k, v in sorted(tags.items())) + " }"
        return name
    segments = row_name.split(".")

    def repl(m: re.Match[str]) -> str:
        token = m.group(0).replace("[[", "", 1).replace("]]", "", 1).replace("$", "", 1)
        if token in ("m", "measurement"):
            return ""
        if token == "col":
            return column
        if token.isdigit() and len(segments) > int(token):
            return segments[int(token)]
        if token.startswith("tag_") and token[4:] in tags:
            return tags[token[4:]]
        return m.group(0)

    return _ALIAS.sub(repl, alias)


def influx_to_frames(answer: dict[str, Any], ref_id: str, alias: str = "") -> list[dict[str, Any]]:
    """Data frames (DataFrameJSON) as Grafana's backend makes them from a time-series InfluxQL answer."""
    result = answer["results"][0]
    if "error" in result:
        raise RuntimeError(result["error"])
    frames = []
    for row in result.get("series", []) or []:
        tags = row.get("tags") or {}
        for col_idx, column in enumerate(row["columns"]):
            if column == "time":
                continue
            name = frame_name(row["name"], column, tags, alias)
            times = [v[0] for v in row["values"]]
            values = [None if v[col_idx] is None else float(v[col_idx]) for v in row["values"]]
            frames.append({
                "schema": {
                    "name": name,
                    "refId": ref_id,
                    "fields": [
                        {"name": "Time", "type": "time"},
                        {"name": "Value", "type": "number", "labels": tags, "config": {"displayNameFromDS": name}},
                    ],
                },
                "data": {"values": [times, values]},
            })
    return frames


def node_ready() -> str | None:
    """None when Node and @grafana/data are installed, else what to do."""
    if shutil.which("node") is None:
        return "node is not installed (Debian: apt-get install nodejs npm); scripts/test.sh needs npm"
    if not (NODE_DIR / "node_modules" / "@grafana" / "data").is_dir():
        return "run `npm ci` in tests/node (scripts/test.sh does it) to install @grafana/data"
    return None


def run_transformations(
    frames: list[dict[str, Any]], transformations: list[dict[str, Any]], calcs: list[str] | None = None
) -> dict[str, Any]:
    """Grafana's own transformDataFrame (and reduceField for ``calcs``) over ``frames``."""
    payload: dict[str, Any] = {"frames": frames, "transformations": transformations}
    if calcs:
        payload["reduce"] = {"calcs": calcs}
    proc = subprocess.run(
        ["node", str(NODE_DIR / "transform.js")],
        input=json.dumps(payload), capture_output=True, text=True, timeout=60, cwd=NODE_DIR,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"transform.js failed: {proc.stderr}")
    return json.loads(proc.stdout)


# -- the HTTP API that `dashboards push` talks to --------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafanaAPI:
    """A loopback Grafana API: folders and dashboards in memory, every request recorded."""

    token: str
    folders: list[dict[str, Any]] = field(default_factory=list)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    fail_dashboard_status: int | None = None

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                api.requests.append(Request(self.command, self.path, dict(self.headers.items()), body))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._answer(401, {"message": "Unauthorized"})
                status, answer = api.route(self.command, self.path.split("?")[0], body)
                self._answer(status, answer)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeGrafanaAPI":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/api/folders":
            return 200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in self.folders]
        if method == "POST" and path == "/api/folders":
            if any(f["title"] == body["title"] for f in self.folders):
                return 409, {"message": "a folder with the same name already exists"}
            folder = {"id": len(self.folders) + 1, "uid": f"f{len(self.folders) + 1}x", "title": body["title"]}
            self.folders.append(folder)
            return 200, folder
        if method == "POST" and path == "/api/dashboards/db":
            if self.fail_dashboard_status:
                return self.fail_dashboard_status, {"message": "Access denied to save dashboard"}
            dash = body["dashboard"]
            folder_uid = body.get("folderUid")
            if folder_uid is not None and not any(f["uid"] == folder_uid for f in self.folders):
                return 400, {"message": "folder not found"}
            old = self.dashboards.get(dash["uid"])
            if old is not None and not body.get("overwrite"):
                return 412, {"status": "name-exists", "message": "A dashboard with the same uid already exists"}
            version = (old["version"] + 1) if old else 1
            self.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": folder_uid, "version": version}
            return 200, {"id": len(self.dashboards), "uid": dash["uid"], "status": "success", "version": version,
                         "url": f"/d/{dash['uid']}/x", "slug": "x"}
        return 404, {"message": "Not found"}
