"""The GB Carbon Intensity API (National Grid ESO, api.carbonintensity.org.uk): no key needed.

Half-hourly figures, g CO2/kWh of *generation* (direct emissions, not
life-cycle: not comparable one-to-one with Electricity Maps).

* National, ``[carbon] zone = "GB"``:
  ``GET /intensity/{from}/{to}`` ->
  ``{"data": [{"from", "to", "intensity": {"forecast", "actual", "index"}}...]}``.
  ``actual`` is null until the half hour has been measured; then we store the
  actual (``kind=actual``), before that the forecast (``kind=forecast``), and
  a later sync replaces the forecast by the actual.
* Regional, ``[carbon] zone = "GB-<regionid>"`` (1 North Scotland ... 13 London,
  14 South East England, 15 England, 16 Scotland, 17 Wales, 18 GB):
  ``GET /regional/intensity/{from}/{to}/regionid/{id}`` ->
  ``{"data": {"regionid", "dnoregion", "shortname", "data": [{"from", "to",
  "intensity": {"forecast", "index"}, "generationmix": [...]}...]}}``.
  Regional figures are forecasts only (``kind=forecast``).

Times are ``YYYY-MM-DDTHH:MMZ``; a range request returns the half hour that
*ends* at ``from`` too, so we ask one minute late and filter. At most 14 days
per call (we cut at 13). Recorded shapes: tests/fixtures/carbon/ukci_*.json.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from wattledger.carbon.base import ACTUAL, FORECAST, CarbonProviderError, IntensityPoint
from wattledger.carbon.http import JsonClient
from wattledger.util.timeutil import HOUR_NS, NS_PER_S, iso, parse_iso_ns

DEFAULT_URL = "https://api.carbonintensity.org.uk"
CHUNK_NS = 13 * 24 * HOUR_NS
_REGIONAL = re.compile(r"^GB-(\d{1,2})$", re.IGNORECASE)
ONE_MINUTE_NS = 60 * NS_PER_S


def _hint(status: int, body: str) -> str:
    if status in (400, 404):
        return 'check [carbon] zone: "GB" (national) or "GB-<regionid>" with regionid 1..18'
    return ""


class UkCarbonIntensity:
    name = "ukci"

    def __init__(
        self,
        zone: str = "GB",
        *,
        api_url: str = "",
        clock: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 20.0,
    ) -> None:
        z = zone.strip().upper()
        m = _REGIONAL.match(z)
        if m:
            self.region_id: int | None = int(m.group(1))
            if not 1 <= self.region_id <= 18:
                raise CarbonProviderError(f"ukci: region id {self.region_id} out of range 1..18 in zone {zone!r}")
        elif z == "GB":
            self.region_id = None
        else:
            raise CarbonProviderError(
                f'ukci: zone {zone!r} is not Great Britain; use "GB" (national) or "GB-<regionid>" (1..18)'
            )
        self.zone = z
        self.clock = clock
        self.http = JsonClient(self.name, api_url or DEFAULT_URL, sleep=sleep, timeout_s=timeout_s, hint=_hint)

    def fetch(self, since_ns: int, until_ns: int) -> list[IntensityPoint]:
        points: dict[int, IntensityPoint] = {}
        start = since_ns
        while start < until_ns:
            stop = min(until_ns, start + CHUNK_NS)
            frm, to = iso(start + ONE_MINUTE_NS, minutes=True), iso(stop, minutes=True)
            if self.region_id is None:
                data = self.http.get_json(f"/intensity/{frm}/{to}")
                entries = data.get("data") if isinstance(data, dict) else None
                regional = False
            else:
                data = self.http.get_json(f"/regional/intensity/{frm}/{to}/regionid/{self.region_id}")
                region = data.get("data") if isinstance(data, dict) else None
                if isinstance(region, list):  # the current-period endpoint wraps regions in a list
                    region = region[0] if region else {}
                entries = region.get("data") if isinstance(region, dict) else None
                regional = True
            if entries is None:
                raise CarbonProviderError(f"ukci: unexpected answer for {frm}..{to} (no data list)")
            for p in self._points(entries, regional):
                points[p.time_ns] = p
            start = stop
        return sorted((p for p in points.values() if since_ns <= p.time_ns < until_ns), key=lambda p: p.time_ns)

    def _points(self, entries: list[dict], regional: bool) -> list[IntensityPoint]:
        out = []
        for e in entries:
            intensity = e.get("intensity") or {}
            actual = None if regional else intensity.get("actual")
            value, kind = (actual, ACTUAL) if actual is not None else (intensity.get("forecast"), FORECAST)
            if value is None or not e.get("from"):
                continue
            out.append(IntensityPoint(parse_iso_ns(e["from"]), float(value), self.zone, self.name, kind))
        return out
