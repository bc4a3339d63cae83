"""``wattledger influx setup`` on the InfluxDB 2.x API: buckets with retention, DBRP mappings, the wl_tier rows.

Each tier is a bucket ``<bucket>_<tier>`` with the tier's retention, mapped
by DBRP to the InfluxQL database ``<bucket>`` and retention policy
``<tier>`` (``raw`` the default mapping), so InfluxQL readers (the
dashboards, ``report --from-influx``) see the same names as on 1.x. The
wl_tier rows go to the raw bucket. What exists is read first and only what
differs is changed (plan.py): a second run changes nothing and says so.
Tokens are InfluxDB 2's grants: make them with ``influx auth create``.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import urllib3

from wattledger.agent.provision.plan import Change, Policy, Recorder, Wanted, row_key, row_lines
from wattledger.agent.provision.v1 import SetupError, ident
from wattledger.agent.sinks.base import describe_error, error_message
from wattledger.model.tiers import TIER_EPOCH_MS, TIER_TABLE, TierRow
from wattledger.util.timeutil import iso


class V2Setup(Recorder):
    def __init__(self, url: str, *, org: str, token: str, timeout_s: float = 30.0,
                 on_change: Callable[[Change], None] | None = None) -> None:
        super().__init__(on_change)
        if not org or not token:
            raise SetupError("influx setup on the v2 API needs --influx-org and --influx-token (an operator or "
                             "all-access token: it creates buckets and DBRP mappings)")
        self.url, self.org = url.rstrip("/"), org
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout_s))
        self._headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self._org_id = ""

    def call(self, method: str, path: str, params: dict[str, str] | None = None, doc: object = None,
             ok: tuple[int, ...] = (200, 201, 204), form: dict[str, str] | None = None) -> Any:
        """One API call with a JSON ``doc`` (bytes: sent as they are) or a ``form``; the decoded JSON answer
        (None when empty); SetupError on anything but ``ok``."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        headers = dict(self._headers)
        if form is not None:
            body: bytes | None = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            body = None if doc is None else (doc if isinstance(doc, bytes) else json.dumps(doc).encode())
        try:
            resp = self._http.request(method, f"{self.url}{path}{query}", body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise SetupError(f"cannot reach InfluxDB at {self.url}: {describe_error(e)}") from None
        if resp.status in (401, 403):
            raise SetupError(f"InfluxDB {self.url} refused the token for {method} {path} (HTTP {resp.status}): "
                             "give an operator or all-access token with --influx-token")
        if resp.status not in ok:
            raise SetupError(f"InfluxDB {self.url}: {method} {path} answered HTTP {resp.status}: "
                             f"{error_message(resp.data, resp.headers)}")
        return json.loads(resp.data) if resp.data else None

    def org_id(self) -> str:
        if not self._org_id:
            found = (self.call("GET", "/api/v2/orgs", {"org": self.org}, ok=(200, 404)) or {}).get("orgs") or []
            if not found:
                raise SetupError(f"InfluxDB {self.url} has no organization '{self.org}': check --influx-org")
            self._org_id = str(found[0]["id"])
        return self._org_id

    # -- the steps -------------------------------------------------------------------------------
    def apply(self, want: Wanted) -> list[Change]:
        changes: list[Change] = []
        for p in want.policies:
            bucket_id, done = self._bucket(p)
            changes += done + self._dbrp(want.database, p, bucket_id)
        default = next((p.name for p in want.policies if p.default), want.database)
        changes += self._tier_rows(want.rows(self._default_rp(want)), default, want.database)
        return changes

    def _bucket(self, p: Policy) -> tuple[str, list[Change]]:
        rules = [{"type": "expire", "everySeconds": p.seconds}] if p.seconds else []
        found = (self.call("GET", "/api/v2/buckets", {"name": p.name, "orgID": self.org_id()}) or {}).get("buckets")
        if not found:
            made = self.call("POST", "/api/v2/buckets", doc={"orgID": self.org_id(), "name": p.name,
                                                              "retentionRules": rules})
            return str(made["id"]), [self._did("created", f"bucket '{p.name}' ({_days(p.seconds)})")]
        bucket = found[0]
        have = max([int(r.get("everySeconds") or 0) for r in bucket.get("retentionRules") or []] or [0])
        if have == p.seconds:
            return str(bucket["id"]), []
        self.call("PATCH", f"/api/v2/buckets/{bucket['id']}", doc={"retentionRules": rules})
        return str(bucket["id"]), [self._did("altered", f"bucket '{p.name}': {_days(have)} -> {_days(p.seconds)}")]

    def _dbrp(self, database: str, p: Policy, bucket_id: str) -> list[Change]:
        params = {"orgID": self.org_id(), "db": database, "rp": p.tier}
        found = (self.call("GET", "/api/v2/dbrps", params) or {}).get("content") or []
        mapping = {"orgID": self.org_id(), "bucketID": bucket_id, "database": database,
                   "retention_policy": p.tier, "default": p.default}
        name = f"DBRP {database}/{p.tier} -> bucket '{p.name}'" + (" (default)" if p.default else "")
        if not found:
            taken = self._other_default(database, p) if p.default else []
            self.call("POST", "/api/v2/dbrps", doc=mapping)
            return taken + [self._did("created", name)]
        have = found[0]
        if str(have.get("bucketID")) != bucket_id:  # a mapping cannot move to another bucket: made again
            self.call("DELETE", f"/api/v2/dbrps/{have['id']}", {"orgID": self.org_id()})
            self.call("POST", "/api/v2/dbrps", doc=mapping)
            return [self._did("altered", name)]
        if bool(have.get("default")) != p.default and p.default:
            self.call("PATCH", f"/api/v2/dbrps/{have['id']}", {"orgID": self.org_id()}, doc={"default": True})
            return [self._did("altered", f"{name}: now the default")]
        return []

    def _other_default(self, database: str, p: Policy) -> list[Change]:
        """A database has one default mapping: another one (the compose stack's autogen) stops being it."""
        found = (self.call("GET", "/api/v2/dbrps", {"orgID": self.org_id(), "db": database}) or {}).get("content") or []
        out = []
        for m in found:
            if m.get("default") and m.get("retention_policy") != p.tier:
                self.call("PATCH", f"/api/v2/dbrps/{m['id']}", {"orgID": self.org_id()}, doc={"default": False})
                out.append(self._did("altered", f"DBRP {database}/{m.get('retention_policy')}: no longer the default"))
        return out

    def _default_rp(self, want: Wanted) -> str:
        if want.tiered:
            return "raw"
        found = (self.call("GET", "/api/v2/dbrps", {"orgID": self.org_id(), "db": want.database}) or {}
                 ).get("content") or []
        return next((str(m["retention_policy"]) for m in found if m.get("default")), "autogen")

    def _tier_rows(self, rows: list[TierRow], bucket: str, database: str) -> list[Change]:
        want = {row_key(r.time_ms * 1_000_000, r.scope, r.tier, r.res, r.max_range_ms) for r in rows}
        q = f'SELECT "scope", "tier", "res", "max_range_ms" FROM {ident(TIER_TABLE)}'
        answer = self.call("POST", "/query", form={"q": q, "db": database, "epoch": "ns"}, ok=(200,))
        have = {row_key(*(v[c] for c in ("time", "scope", "tier", "res", "max_range_ms")))
                for v in _values(answer)}
        if have == want:
            return []
        changes = []
        if have:
            self.call("POST", "/api/v2/delete", {"org": self.org, "bucket": bucket}, doc={
                "start": iso(TIER_EPOCH_MS * 1_000_000), "stop": "9999-01-01T00:00:00Z",
                "predicate": f'_measurement="{TIER_TABLE}"'})
            changes.append(self._did("deleted", f"{len(have)} old {TIER_TABLE} row(s)"))
        self.call("POST", "/api/v2/write", {"org": self.org, "bucket": bucket, "precision": "ns"},
                  doc="\n".join(row_lines(rows)).encode())
        return changes + [self._did("wrote", f"{len(rows)} {TIER_TABLE} rows (the dashboards' tier choice) "
                                            f"into bucket '{bucket}'")]

    def close(self) -> None:
        self._http.clear()


def _values(answer: Any) -> list[dict[str, Any]]:
    out = []
    for result in (answer or {}).get("results", []):
        if "error" in result:
            raise SetupError(f"InfluxQL on the v2 API failed: {result['error']} (is there a DBRP mapping?)")
        for s in result.get("series") or []:
            out += [dict(zip(s["columns"], v)) for v in s.get("values") or []]
    return out


def _days(seconds: int) -> str:
    return "forever" if not seconds else f"{seconds / 86400:g} d"

