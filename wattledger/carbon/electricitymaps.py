"""Electricity Maps API v3: the carbon intensity of electricity *consumed* in a zone.

Endpoints used (``auth-token`` header; zone keys such as ``DE``, ``FR``, ``US-CAL-CISO``):

* ``GET /v3/carbon-intensity/latest?zone=Z`` ->
  ``{"zone", "carbonIntensity", "datetime", "updatedAt", "createdAt",
  "emissionFactorType", "isEstimated", "estimationMethod"}``
* ``GET /v3/carbon-intensity/history?zone=Z`` -> ``{"zone", "history": [<as latest>...]}``,
  the last 24 hours, hourly;
* ``GET /v3/carbon-intensity/past-range?zone=Z&start=..&end=..`` ->
  ``{"zone", "data": [<as latest>...]}``, for windows older than that (at most 10
  days of hourly data per call, so longer windows are cut).

``datetime`` is the start of the hour the figure describes; ``carbonIntensity``
may be null (no data for that hour): such hours are skipped, never zeroed.
Figures are life-cycle g CO2e/kWh by default. Recorded shapes:
tests/fixtures/carbon/electricitymaps_*.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from wattledger.carbon.base import ACTUAL, CarbonProviderError, IntensityPoint
from wattledger.carbon.http import JsonClient
from wattledger.util.timeutil import HOUR_NS, iso, parse_iso_ns

log = logging.getLogger("wattledger.carbon")

DEFAULT_URL = "https://api.electricitymap.org"
HISTORY_SPAN_NS = 24 * HOUR_NS
PAST_RANGE_MAX_NS = 10 * 24 * HOUR_NS


def _hint(status: int, body: str) -> str:
    if status in (401, 403):
        return ("check [carbon] token (or WATTLEDGER_CARBON_TOKEN): the key is missing, wrong, "
                "or your plan does not include this zone/endpoint")
    if status == 404:
        return "check [carbon] zone: Electricity Maps does not know it (zone keys look like DE, FR, US-CAL-CISO)"
    return ""


class ElectricityMaps:
    name = "electricitymaps"

    def __init__(
        self,
        zone: str,
        token: str,
        *,
        api_url: str = "",
        clock: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 20.0,
    ) -> None:
        if not token:
            raise CarbonProviderError(
                "electricitymaps: no API token; set [carbon] token or WATTLEDGER_CARBON_TOKEN"
            )
        self.zone = zone
        self._token = token
        self.clock = clock
        self.http = JsonClient(self.name, api_url or DEFAULT_URL, secrets=[token], sleep=sleep,
                               timeout_s=timeout_s, hint=_hint)

    def _get(self, path: str, params: dict[str, str]) -> dict:
        data = self.http.get_json(path, {"zone": self.zone, **params}, {"auth-token": self._token})
        if not isinstance(data, dict):
            raise CarbonProviderError(f"electricitymaps: unexpected answer from {path} (not an object)")
        return data

    def latest(self) -> list[IntensityPoint]:
        return self._points([self._get("/v3/carbon-intensity/latest", {})])

    def fetch(self, since_ns: int, until_ns: int) -> list[IntensityPoint]:
        now_ns = self.clock()
        raw: list[dict] = []
        if since_ns >= now_ns - HISTORY_SPAN_NS:
            raw += self._get("/v3/carbon-intensity/history", {}).get("history") or []
            raw += [self._get("/v3/carbon-intensity/latest", {})]
        else:
            start = since_ns - since_ns % HOUR_NS
            end = min(until_ns, now_ns)
            while start < end:
                stop = min(end, start + PAST_RANGE_MAX_NS)
                raw += self._get(
                    "/v3/carbon-intensity/past-range", {"start": iso(start), "end": iso(stop)}
                ).get("data") or []
                start = stop
        points = {p.time_ns: p for p in self._points(raw)}  # later entries win (latest after history)
        return sorted((p for p in points.values() if since_ns <= p.time_ns < until_ns), key=lambda p: p.time_ns)

    def _points(self, entries: list[dict]) -> list[IntensityPoint]:
        out = []
        for e in entries:
            value = e.get("carbonIntensity")
            when = e.get("datetime")
            if value is None or not when:
                continue
            out.append(IntensityPoint(parse_iso_ns(when), float(value), self.zone, self.name, ACTUAL))
        return out
