"""The tiers of a fleet's InfluxDB: which points live at which resolution, with which tags, for how long. Pure.

A fleet's agents write into one InfluxDB (docs/fleet.md). With the ``tiered``
layout (``[influx] layout``) each database has three retention policies (on
InfluxDB 2.x/3.x: three buckets mapped to them by DBRP), one per *tier*:

========  ====================================  =============================================
tier      what it holds                         tags of ``wl_job``
========  ====================================  =============================================
raw       every tick, as the agent measured it   all (host, job, user, project, phase,
          (short retention: the last days)       component, device, source)
minutes   the ledger's exact per-minute sums     all but ``device``
hours     the ledger's exact per-hour sums       all but ``device``; ``job`` only for the
          (long retention: years)                ledger's own jobs (``_idle``, ``_untagged``...)
========  ====================================  =============================================

``wl_node`` keeps all its tags in every tier (a host has a dozen pools, so
its series are few and the same keys in every tier). ``wl_carbon`` and
``wl_pue`` (an hourly intensity per zone) go to every tier, so a dashboard
reading one tier finds the intensities of its range there; ``wl_agent``
stays raw.

Why the tags thin out with age: a series is a tag set, and InfluxDB 1.x
refuses writes beyond ``max-series-per-database`` (1 M by default). Job tags
make new series all the time (10,000 jobs a host a year), so they live only
in tiers whose retention makes them expire; the hours tier keeps users,
projects and phases, whose number grows slowly. docs/fleet.md has the series
budget.

The dashboards choose a tier and a ``GROUP BY time()`` for their range from
the ``wl_tier`` rows that ``wattledger influx setup`` writes (``tier_rows``):
rows stamped ``TIER_EPOCH_MS`` + the tier's retention, so that one InfluxQL
condition, ``time >= now() - ${__from}ms + <epoch>ms``, keeps the tiers whose
retention reaches back to the start of the range, and ``"max_range_ms" >=
${__to} - ${__from}`` those whose bucket keeps the range under ~2,000 points.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattledger.model.points import SCHEMA, WL_AGENT, WL_CARBON, WL_PUE

RAW, MINUTES, HOURS = "raw", "minutes", "hours"
TIERS = (RAW, MINUTES, HOURS)  # finest first
TIER_SECONDS = {RAW: 0, MINUTES: 60, HOURS: 3600}  # bucket length of a tier's points (raw: the tick)

# Measurements whose points go to every tier (small: an intensity per zone and hour, a PUE per site).
EVERY_TIER = frozenset({WL_CARBON, WL_PUE})
RAW_ONLY = frozenset({WL_AGENT})

# Per-job measurements (those with a ``job`` tag: wl_job, and any added later) thin out with age: the
# rollup tiers leave out ``device`` and the hours tier keeps ``job`` only for the ledger's own jobs.
JOB_TAG, DEVICE_TAG = "job", "device"

TIER_TABLE = "wl_tier"  # the dashboards' tier choice (tier_rows), in the database's default retention policy
TIER_EPOCH_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z: rows stamped later never meet a retention policy
FOREVER_DAYS = 36_500.0  # what a tier kept forever counts as in the wl_tier rows (stamps stay before 2262)
GRACE_MS = 3_600_000  # see TierRow.time_ms
MAX_POINTS = 2000  # at most this many buckets per series in a dashboard panel (the `res` choice)
SCOPES = ("all", "jobs")  # rows for panels of any measurement, and for those that need the job tag


def per_job(measurement: str) -> bool:
    return JOB_TAG in SCHEMA[measurement][0]


def tags_at(tier: str, measurement: str) -> tuple[str, ...]:
    """The tags ``measurement``'s points carry in ``tier`` (SCHEMA order)."""
    tags = SCHEMA[measurement][0]
    if tier != RAW and per_job(measurement):
        return tuple(t for t in tags if t != DEVICE_TAG)
    return tags


def reserved_only(tier: str, measurement: str) -> frozenset[str]:
    """Tags kept in ``tier`` only when their value names one of the ledger's own jobs (starts with ``_``)."""
    return frozenset({JOB_TAG}) if tier == HOURS and per_job(measurement) else frozenset()


def tier_tags(tier: str, measurement: str, tags: dict[str, str]) -> dict[str, str]:
    """A point's tags as ``tier`` keeps them."""
    thin = reserved_only(tier, measurement)
    return {t: v for t, v in tags.items() if t in tags_at(tier, measurement)
            and not (t in thin and not v.startswith("_"))}


def tiers_of(measurement: str, tier: str) -> tuple[str, ...]:
    """The tiers a point of ``measurement`` spooled for ``tier`` is written to."""
    if measurement in EVERY_TIER:
        return TIERS
    if measurement in RAW_ONLY:
        return (RAW,)
    return (tier,)


@dataclass(frozen=True)
class TierRow:
    """One ``wl_tier`` row: read ``tier`` grouped by ``res`` when the range starts within ``keep_days`` and
    lasts at most ``max_range_ms``; ``scope`` "jobs" rows only name tiers that keep the job tag."""

    scope: str
    tier: str
    res: str
    res_s: int
    keep_days: float
    index: int  # order among rows: the first that fits is chosen

    @property
    def max_range_ms(self) -> int:
        return self.res_s * 1000 * MAX_POINTS

    @property
    def time_ms(self) -> int:
        """Its timestamp: the epoch + the retention + an hour's grace (a range of exactly the retention,
        asked a few ms before InfluxDB's now(), still fits) + the index in ms (rows of one tier stay apart)."""
        return TIER_EPOCH_MS + int(self.keep_days * 86_400_000) + GRACE_MS + self.index


# (tier, GROUP BY bucket, its seconds), in the order a dashboard prefers them: finest bucket first, and
# for one bucket the tier that reads the fewest rows. The last row of each scope takes any range.
_CHOICES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "all": ((RAW, "1m", 60), (MINUTES, "5m", 300), (MINUTES, "15m", 900), (HOURS, "1h", 3600),
            (MINUTES, "1h", 3600), (HOURS, "3h", 10800), (HOURS, "12h", 43200), (HOURS, "1d", 86400),
            (HOURS, "7d", 604800)),
    "jobs": ((RAW, "1m", 60), (MINUTES, "5m", 300), (MINUTES, "15m", 900), (MINUTES, "1h", 3600),
             (MINUTES, "3h", 10800), (MINUTES, "12h", 43200), (MINUTES, "1d", 86400)),
}


def tier_rows(keep_days: dict[str, float], rps: dict[str, str]) -> list[TierRow]:
    """The ``wl_tier`` rows for tiers kept ``keep_days`` (0: forever) and named ``rps`` (tier -> retention
    policy). In the single layout every tier names the one retention policy and is kept as long as it."""
    rows: list[TierRow] = []
    for scope in SCOPES:
        choices = _CHOICES[scope]
        for i, (tier, res, res_s) in enumerate(choices):
            last = i == len(choices) - 1
            days = keep_days[tier] or FOREVER_DAYS
            rows.append(TierRow(scope, rps[tier], res, res_s, FOREVER_DAYS * 1.5 if last else days,
                                len(rows)))
    return rows
