"""``wattledger influx setup`` on the InfluxDB 1.x API: database, retention policies, the wl_tier rows, grants.

Everything goes through InfluxQL on ``/query`` (and ``/write`` for the rows),
read first and changed only where it differs from what the config asks
(plan.py), so a second run changes nothing and says so.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import urllib3

from wattledger.agent.provision.plan import Change, Recorder, Wanted, duration, parse_duration_s, row_key, row_lines
from wattledger.agent.sinks.base import describe_error, error_message
from wattledger.model.tiers import TIER_TABLE, TierRow


class SetupError(RuntimeError):
    """Setup cannot go on; the message says what failed and what to do."""


def ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class V1Setup(Recorder):
    def __init__(self, url: str, database: str, *, username: str = "", password: str = "",
                 timeout_s: float = 30.0, on_change: Callable[[Change], None] | None = None) -> None:
        super().__init__(on_change)
        self.url, self.database = url.rstrip("/"), database
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout_s))
        self._auth = urllib3.make_headers(basic_auth=f"{username}:{password}") if username else {}

    def query(self, q: str, epoch: str = "") -> list[dict[str, Any]]:
        """The first result of one InfluxQL statement: its series (raises SetupError)."""
        form = {"q": q, "db": self.database, **({"epoch": epoch} if epoch else {})}
        body = urllib.parse.urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self._auth}
        try:
            resp = self._http.request("POST", f"{self.url}/query", body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise SetupError(f"cannot reach InfluxDB at {self.url}: {describe_error(e)}") from None
        if resp.status in (401, 403):
            raise SetupError(f"InfluxDB {self.url} refused the credentials for `{q.split()[0]} ...` (HTTP "
                             f"{resp.status}): give an admin user with --username/--password")
        try:
            result = json.loads(resp.data)["results"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise SetupError(f"InfluxDB {self.url} answered {q!r} with HTTP {resp.status}: "
                             f"{error_message(resp.data, resp.headers)}") from None
        if "error" in result:
            raise SetupError(f"InfluxDB {self.url} refused {q!r}: {result['error']}")
        return list(result.get("series") or [])

    def rows(self, q: str, epoch: str = "") -> list[dict[str, Any]]:
        return [dict(zip(s["columns"], v)) for s in self.query(q, epoch) for v in s.get("values") or []]

    def write(self, lines: list[str], rp: str) -> None:
        params = urllib.parse.urlencode({"db": self.database, "rp": rp, "precision": "ns"})
        try:
            resp = self._http.request("POST", f"{self.url}/write?{params}", body="\n".join(lines).encode(),
                                      headers=dict(self._auth))
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise SetupError(f"cannot reach InfluxDB at {self.url}: {describe_error(e)}") from None
        if resp.status != 204:
            raise SetupError(f"writing the {TIER_TABLE} rows failed: HTTP {resp.status}: "
                             f"{error_message(resp.data, resp.headers)}")

    # -- the steps -------------------------------------------------------------------------------
    def apply(self, want: Wanted, grants: list[tuple[str, str]]) -> list[Change]:
        """Make the server hold what ``want`` says; the changes made (none: it already did)."""
        changes = self._database()
        db = ident(self.database)
        for p in want.policies:
            changes += self._policy(db, p.name, p.days, p.default)
        default = next((r["name"] for r in self.rows(f"SHOW RETENTION POLICIES ON {db}") if r.get("default")),
                       "autogen")
        changes += self._tier_rows(want.rows(default), default)
        for privilege, user in grants:
            changes += self._grant(privilege, user)
        return changes

    def _database(self) -> list[Change]:
        names = {r["name"] for r in self.rows("SHOW DATABASES")}
        if self.database in names:
            return []
        self.query(f"CREATE DATABASE {ident(self.database)}")
        return [self._did("created", f"database '{self.database}'")]

    def _policy(self, db: str, name: str, days: float, default: bool) -> list[Change]:
        have = {r["name"]: r for r in self.rows(f"SHOW RETENTION POLICIES ON {db}")}
        text = f"{ident(name)} ON {db} DURATION {duration(days)}"
        found = have.get(name)
        if found is None:
            self.query(f"CREATE RETENTION POLICY {text} REPLICATION 1" + (" DEFAULT" if default else ""))
            return [self._did("created", f"retention policy '{name}' ({duration(days)}"
                                      + (", default)" if default else ")"))]
        changes = []
        if parse_duration_s(str(found["duration"])) != int(round(days * 86400)):
            self.query(f"ALTER RETENTION POLICY {text}")
            changes.append(self._did("altered", f"retention policy '{name}': {found['duration']} -> {duration(days)}"))
        if default and not found.get("default"):
            self.query(f"ALTER RETENTION POLICY {ident(name)} ON {db} DEFAULT")
            changes.append(self._did("altered", f"retention policy '{name}': now the default"))
        return changes

    def _tier_rows(self, rows: list[TierRow], rp: str) -> list[Change]:
        want = {row_key(r.time_ms * 1_000_000, r.scope, r.tier, r.res, r.max_range_ms) for r in rows}
        q = f'SELECT "scope", "tier", "res", "max_range_ms" FROM {ident(rp)}.{ident(TIER_TABLE)}'
        have = {row_key(r["time"], r["scope"], r["tier"], r["res"], r["max_range_ms"]) for r in self.rows(q, "ns")}
        if have == want:
            return []
        changes = []
        if have:
            self.query(f"DELETE FROM {ident(TIER_TABLE)}")
            changes.append(self._did("deleted", f"{len(have)} old {TIER_TABLE} row(s)"))
        self.write(row_lines(rows), rp)
        return changes + [self._did("wrote", f"{len(rows)} {TIER_TABLE} rows (the dashboards' tier choice) "
                                            f"into '{rp}'")]

    def _grant(self, privilege: str, user: str) -> list[Change]:
        users = {r["user"] for r in self.rows("SHOW USERS")}
        if user not in users:
            raise SetupError(f"InfluxDB user '{user}' does not exist: create it first (CREATE USER {ident(user)} "
                             "WITH PASSWORD '...'), then run setup again")
        held = {(r["database"], r["privilege"]) for r in self.rows(f"SHOW GRANTS FOR {ident(user)}")}
        if (self.database, "ALL PRIVILEGES") in held or (self.database, privilege) in held:
            return []
        self.query(f"GRANT {privilege} ON {ident(self.database)} TO {ident(user)}")
        return [self._did("granted", f"{privilege} on '{self.database}' to '{user}'")]

    def close(self) -> None:
        self._http.clear()
