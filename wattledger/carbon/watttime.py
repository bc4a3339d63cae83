"""WattTime API v3: the *marginal* operating emission rate (MOER) of a grid region.

A marginal rate answers "what does one more kWh now emit", a different question
from the average intensity the other providers give; points are stored with
``kind=marginal`` so nobody mixes them up.

* ``GET /login`` with HTTP Basic auth (``[carbon] username``/``password``) ->
  ``{"token": "<JWT>"}``, valid 30 minutes; sent as ``Authorization: Bearer``.
* ``GET /v3/historical?region=R&signal_type=co2_moer&start=..&end=..`` ->
  ``{"data": [{"point_time", "value"}...], "meta": {"region", "signal_type",
  "units": "lbs_co2_per_mwh", "data_point_period_seconds": 300, "warnings", "model"}}``;
  at most 32 days per call (we cut at 30). Subscribers only, except the
  preview region CAISO_NORTH.

Values in lbs/MWh are converted to g/kWh (x 0.45359237). The region is
``[carbon] zone`` (e.g. ``CAISO_NORTH``). Recorded shapes:
tests/fixtures/carbon/watttime_*.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from wattledger.carbon.base import LBS_PER_MWH_TO_G_PER_KWH, MARGINAL, CarbonProviderError, IntensityPoint
from wattledger.carbon.http import JsonClient, basic_auth
from wattledger.util.logonce import LogOnce
from wattledger.util.timeutil import HOUR_NS, NS_PER_S, iso, parse_iso_ns

log = logging.getLogger("wattledger.carbon")

DEFAULT_URL = "https://api.watttime.org"
SIGNAL = "co2_moer"
CHUNK_NS = 30 * 24 * HOUR_NS
TOKEN_LIFETIME_S = 25 * 60  # WattTime says 30 min; renew a little early
UNITS_TO_G_PER_KWH = {"lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH, "g_co2_per_kwh": 1.0}


def _hint(status: int, body: str) -> str:
    if status == 401:
        return "check [carbon] username and password (or WATTLEDGER_CARBON_USERNAME / _PASSWORD)"
    if status == 403:
        return ("your WattTime plan does not cover this region or endpoint; without a subscription "
                "only the preview region CAISO_NORTH is available")
    if status in (400, 404):
        return "check [carbon] zone: it must be a WattTime region such as CAISO_NORTH (see /v3/my-access)"
    return ""


class WattTime:
    name = "watttime"

    def __init__(
        self,
        region: str,
        username: str,
        password: str,
        *,
        api_url: str = "",
        clock: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 20.0,
    ) -> None:
        if not (username and password):
            raise CarbonProviderError(
                "watttime: no credentials; set [carbon] username and password "
                "(or WATTLEDGER_CARBON_USERNAME and WATTLEDGER_CARBON_PASSWORD)"
            )
        self.region = region
        self._auth = basic_auth(username, password)
        self.clock = clock
        self.http = JsonClient(self.name, api_url or DEFAULT_URL, secrets=[password, self._auth.split()[1]],
                               sleep=sleep, timeout_s=timeout_s, hint=_hint)
        self._token = ""
        self._token_until_ns = 0
        self._warned = LogOnce(log)  # each API warning once, not at every sync

    def _login(self) -> str:
        if self._token and self.clock() < self._token_until_ns:
            return self._token
        data = self.http.get_json("/login", None, {"Authorization": self._auth})
        token = data.get("token") if isinstance(data, dict) else None
        if not token:
            raise CarbonProviderError("watttime: login gave no token; check [carbon] username and password")
        self.http.add_secret(token)
        self._token = token
        self._token_until_ns = self.clock() + TOKEN_LIFETIME_S * NS_PER_S
        return token

    def _get(self, path: str, params: dict[str, str]) -> dict:
        for attempt in (1, 2):
            token = self._login()
            try:
                data = self.http.get_json(path, params, {"Authorization": f"Bearer {token}"})
            except CarbonProviderError as e:
                if e.status == 401 and attempt == 1:  # token expired early: log in again once
                    self._token = ""
                    continue
                raise
            if not isinstance(data, dict):
                raise CarbonProviderError(f"watttime: unexpected answer from {path} (not an object)")
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def fetch(self, since_ns: int, until_ns: int) -> list[IntensityPoint]:
        until_ns = min(until_ns, self.clock())
        points: dict[int, IntensityPoint] = {}
        start = since_ns
        while start < until_ns:
            stop = min(until_ns, start + CHUNK_NS)
            data = self._get("/v3/historical", {"region": self.region, "signal_type": SIGNAL,
                                                "start": iso(start), "end": iso(stop)})
            for p in self._points(data):
                points[p.time_ns] = p
            start = stop
        return sorted((p for p in points.values() if since_ns <= p.time_ns < until_ns), key=lambda p: p.time_ns)

    def _points(self, data: dict) -> list[IntensityPoint]:
        meta = data.get("meta") or {}
        units = meta.get("units", "lbs_co2_per_mwh")
        factor = UNITS_TO_G_PER_KWH.get(units)
        if factor is None:
            raise CarbonProviderError(f"watttime: values in unknown units {units!r}; expected lbs_co2_per_mwh")
        for w in meta.get("warnings") or []:
            text = str(w.get("message", w) if isinstance(w, dict) else w)
            self._warned.problem(text, "watttime: the API warns: %s", logging.WARNING, text)
        out = []
        for e in data.get("data") or []:
            if e.get("value") is None or not e.get("point_time"):
                continue
            out.append(IntensityPoint(parse_iso_ns(e["point_time"]), float(e["value"]) * factor,
                                      self.region, self.name, MARGINAL))
        return out
