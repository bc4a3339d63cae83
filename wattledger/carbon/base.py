"""What every carbon-intensity provider returns, and how it fails.

A provider turns one outside source (a table, an API, a file) into
``IntensityPoint``s stamped with the intensity's *own* time (the start of the
interval the figure describes), so that a later, better figure for the same
time replaces the earlier one (history backfill turns forecasts into actuals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

ACTUAL = "actual"      # an average intensity the source publishes as measured/estimated
FORECAST = "forecast"  # an average intensity the source will later replace
MARGINAL = "marginal"  # a marginal emission rate (WattTime MOER): a different signal
KINDS = (ACTUAL, FORECAST, MARGINAL)

# When one time has several kinds from one provider (InfluxDB keeps a forecast and the
# actual that replaced it as two series), readers take the lowest rank.
KIND_RANK = {ACTUAL: 0, MARGINAL: 1, FORECAST: 2}

# WattTime's MOER is in lbs CO2 per MWh: 1 lb = 453.59237 g and 1 MWh = 1000 kWh.
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237


@dataclass(frozen=True)
class IntensityPoint:
    time_ns: int
    g_per_kwh: float
    zone: str
    provider: str
    kind: str


class IntensityProvider(Protocol):
    name: str

    def fetch(self, since_ns: int, until_ns: int) -> list[IntensityPoint]:
        """Points with since_ns <= time_ns < until_ns, oldest first."""
        ...


class CarbonProviderError(RuntimeError):
    """A provider could not answer. The message says what to do and never holds a secret.

    ``status`` is the HTTP status when there was one; ``retry_after_s`` is set for
    a rate limit the client did not wait out itself.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
