"""Carbon sync: fetch the configured provider's intensities into the ledger as ``wl_carbon``.

Points keep the intensity's own timestamp. Each sync re-reads the last
``BACKFILL_NS`` (24 h) before where the previous one stopped, so forecasts and
estimates are replaced by the provider's later figures: in the SQLite ledger
the newest value for (zone, provider, time) wins (``ledger.REPLACE_KEYS``); in
InfluxDB a point with the same tags and time overwrites the old one, and where
``kind`` changed (forecast -> actual) readers prefer the actual
(``base.KIND_RANK``). The ledger spools the points to the remote sink when one
is configured, like every other point.

``sync`` is what ``wattledger carbon sync`` runs; ``PeriodicSync`` is what the
agent loop calls every tick (it syncs every ``[carbon] sync_interval_s``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wattledger.carbon import make_provider
from wattledger.carbon.base import CarbonProviderError, IntensityPoint, IntensityProvider
from wattledger.util.timeutil import HOUR_NS, NS_PER_S
from wattledger.config import Config
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_CARBON, Point
from wattledger.util.logonce import LogOnce

log = logging.getLogger("wattledger.carbon")

BACKFILL_NS = 24 * HOUR_NS        # re-read this much before the last sync's end
MAX_CATCH_UP_NS = 30 * 24 * HOUR_NS  # after a long outage, do not reach back further than this


@dataclass(frozen=True)
class SyncResult:
    provider: str
    zone: str
    since_ns: int
    until_ns: int
    written: int
    first_ns: int | None = None
    last_ns: int | None = None
    kinds: tuple[str, ...] = ()
    skipped: str = ""  # why nothing was fetched, when that was on purpose


def to_points(points: Sequence[IntensityPoint]) -> list[Point]:
    return [
        Point(WL_CARBON, {"zone": p.zone.upper(), "provider": p.provider, "kind": p.kind},
              {"g_per_kwh": p.g_per_kwh}, p.time_ns)
        for p in points
    ]


def _cursor_key(provider: str, zone: str) -> str:
    return f"carbon_synced_until:{provider}:{zone.upper()}"


def default_since(ledger: Ledger, provider: str, zone: str, now_ns: int) -> int:
    """Where an unattended sync starts: 24 h before the last sync's end (or before now)."""
    cursor = ledger.get_meta(_cursor_key(provider, zone))
    start = min(int(cursor), now_ns) if cursor else now_ns
    return max(start - BACKFILL_NS, now_ns - MAX_CATCH_UP_NS)


def nothing_to_sync(provider: IntensityProvider) -> str:
    """Why a sync with this provider has nothing to fetch ("" when it has): it must then touch no ledger."""
    if provider.name == "static":
        return "the static table has no time series to store; reports apply it directly"
    return ""


def sync(
    cfg: Config,
    ledger: Ledger,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    now_ns: int | None = None,
    provider: IntensityProvider | None = None,
) -> SyncResult:
    """Fetch [since, until) from the provider and append it to the ledger. Raises CarbonProviderError.

    Zones are stored upper-case (``wl_carbon,zone=DE``), the form reports query.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    provider = provider or make_provider(cfg.carbon)
    zone = getattr(provider, "zone", cfg.carbon.zone)
    until_ns = now_ns if until_ns is None else until_ns
    skipped = nothing_to_sync(provider)
    if skipped:
        return SyncResult(provider.name, zone, since_ns or until_ns, until_ns, 0, skipped=skipped)
    if since_ns is None:
        since_ns = default_since(ledger, provider.name, zone, now_ns)
    if since_ns >= until_ns:
        raise CarbonProviderError("carbon sync: empty window (since is not before until)")
    fetched = provider.fetch(since_ns, until_ns)
    ledger.append(to_points(fetched))
    if until_ns >= now_ns - HOUR_NS:  # only a sync that reached the present moves the cursor
        ledger.set_meta(_cursor_key(provider.name, zone), str(until_ns))
    result = SyncResult(
        provider.name, zone, since_ns, until_ns, len(fetched),
        fetched[0].time_ns if fetched else None, fetched[-1].time_ns if fetched else None,
        tuple(sorted({p.kind for p in fetched})),
    )
    log.info("carbon sync: %d %s points for %s from %s", result.written, "/".join(result.kinds) or "no",
             zone, provider.name)
    return result


class PeriodicSync:
    """Syncs every ``[carbon] sync_interval_s`` when ``maybe_sync`` is called (each tick).

    Failures never stop the agent: each distinct problem is logged once (with
    what to do), and the next attempt waits for the interval or for the
    server's Retry-After, whichever is longer. With ``background=True`` (the
    agent loop) the HTTP calls run in a thread of their own, so a slow API
    (timeouts, retries) never delays a tick; one sync at a time.
    """

    def __init__(
        self,
        cfg: Config,
        ledger: Ledger,
        *,
        provider: IntensityProvider | None = None,
        clock: Callable[[], int] = time.time_ns,
        background: bool = False,
    ) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.clock = clock
        self.background = background
        self._thread: threading.Thread | None = None
        self.interval_ns = int(cfg.carbon.sync_interval_s * NS_PER_S)
        self.next_ns = 0
        self.last_result: SyncResult | None = None
        self._once = LogOnce(log)  # each distinct failure once, until a sync succeeds
        self.provider: IntensityProvider | None = None
        if self.interval_ns <= 0:
            return
        try:
            self.provider = provider or make_provider(cfg.carbon)
        except CarbonProviderError as e:
            log.error("carbon sync disabled: %s", e)
            return
        if self.provider.name == "static":
            self.provider = None  # nothing to sync; reports use the table directly

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def maybe_sync(self, now_ns: int | None = None) -> SyncResult | None:
        """Sync when due. Returns the result (None when not due or failed; in background mode always None)."""
        if self.provider is None:
            return None
        now_ns = self.clock() if now_ns is None else now_ns
        if now_ns < self.next_ns:
            return None
        if self.background:
            if self._thread is not None and self._thread.is_alive():
                return None  # the previous sync is still running
            self.next_ns = now_ns + self.interval_ns
            self._thread = threading.Thread(target=self._run_guarded, args=(now_ns,), name="carbon-sync",
                                            daemon=True)
            self._thread.start()
            return None
        self.next_ns = now_ns + self.interval_ns
        return self._run(now_ns)

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run_guarded(self, now_ns: int) -> None:
        try:
            self._run(now_ns)
        except Exception as e:  # noqa: BLE001 - a background failure must not vanish nor kill the agent
            log.error("carbon sync crashed: %s: %s", type(e).__name__, e)

    def _run(self, now_ns: int) -> SyncResult | None:
        assert self.provider is not None
        try:
            self.last_result = sync(self.cfg, self.ledger, now_ns=now_ns, provider=self.provider)
        except CarbonProviderError as e:
            if e.retry_after_s:
                self.next_ns = max(self.next_ns, now_ns + int(e.retry_after_s * NS_PER_S))
            msg = str(e)
            problem = f"{e.status}:{re.sub(r'[0-9]', '', msg)}"  # the same problem, whatever the window
            self._once.problem(problem, "carbon sync failed (will retry every %.0f s; reports use the static "
                               "figure where intensity is missing): %s", logging.WARNING,
                               self.interval_ns / NS_PER_S, msg)
            return None
        self._once.clear_all()
        return self.last_result
