"""Issue 14: rollups keep the sums exactly, Σ jobs = node holds in every bucket, reads take the coarsest
resolution that covers a range and equal the raw ticks, and compaction gives space back."""

from __future__ import annotations

import itertools
import math
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattledger.model.points import WL_EMBODIED, WL_JOB, WL_NODE, Point
from wattledger.model.units import DAY_NS, HOUR_NS, MINUTE_NS, NS_PER_S
from wattledger.store.compact import Compactor, Retention
from wattledger.store.ledger import Ledger
from wattledger.store.plan import Span, plan
from wattledger.store.jobtick import derive
from wattledger.store.quantize import apportion, quantize
from wattledger.store.schema import (DAY, HOUR, JOB_TICK, LEVELS, MINUTE, POOL_TAGS, additive, extrema, int_cols,
                                     level_table, series_measurements, tags_of)

T0 = 1_709_596_800 * NS_PER_S  # 2024-03-05T00:00:00Z, a day boundary
POOLS = [("cpu", "package-0", "rapl"), ("gpu", "GPU-a", "nvml"), ("gpu", "GPU-b", "nvml")]
JOBS = [("train", "alice", "bert", "train"), ("eval", "bob", "", ""), ("_idle", "", "", ""), ("_system", "", "", "")]


def tick(t_ns: int, energies: list[float], shares: list[list[float]], interval_s: float = 1.0) -> list[Point]:
    """One tick: a wl_node point per pool and wl_job points that split its energy by ``shares``; the
    embodied carbon of each job on each GPU, and of each job on the host's parts (CPU pool's shares)."""
    points = []
    for (component, device, source), energy, weights in zip(POOLS, energies, shares):
        pool = {"host": "h", "component": component, "device": device, "source": source}
        points.append(Point(WL_NODE, pool, {"energy_j": energy, "power_w": energy / interval_s,
                                            "interval_s": interval_s}, t_ns))
        if not any(weights):
            weights = [0.0, 0.0, 1.0, 0.0]  # nobody active: all of it is _idle's, as attribution does
        total = sum(weights)
        for (job, user, project, phase), w in zip(JOBS, weights):
            if w == 0:
                continue
            e = energy * w / total
            job_tags = {"host": "h", "job": job, "user": user, "project": project, "phase": phase}
            points.append(Point(WL_JOB, {**pool, **job_tags}, {"energy_j": e, "dynamic_j": e * 0.7,
                                                               "static_j": e * 0.3,
                                                               "driver_s": interval_s * w / total}, t_ns))
            g = 4.56e-3 * interval_s * w / total  # an H100's ~575 kg over 4 years, ~4.6 mg a second
            if component == "gpu":
                points.append(Point(WL_EMBODIED, {**job_tags, "component": "gpu", "device": device},
                                    {"embodied_g": g}, t_ns))
            else:
                points.append(Point(WL_EMBODIED, {**job_tags, "component": "host", "device": "host"},
                                    {"embodied_g": g / 5, "cpu_g": g / 50, "dram_g": g / 10 + g / 50,
                                     "storage_g": g / 25, "chassis_g": g / 50}, t_ns))
    return points


def series_key(p: Point) -> tuple[str, ...]:
    return (p.measurement, *(str(p.tags.get(t, "")) for t in tags_of(p.measurement)))


Key = tuple[tuple[str, ...], str, int]  # (series key, level name, bucket start)


def expected(ticks: list[list[Point]]) -> dict[Key, dict[str, int]]:
    """(series key, level name, bucket) -> field -> stored integers (and first_ns/last_ns of job_tick), from the
    same quantization (and job_tick rows) the ledger makes."""
    out: dict[Key, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for points in ticks:
        items = quantize(points)
        for q in [*items, *derive(items)]:
            t = q.point.time_ns
            for level in LEVELS:
                cell = out[(series_key(q.point), level.name, level.floor(t))]
                for f, v in q.ints.items():
                    cell[f] += v or 0
                cell["rows"] += 1
                if q.point.measurement == JOB_TICK:
                    first = t - (q.ints["active_s"] or 0) * 1000
                    cell["first_ns"] = min(cell.get("first_ns", first), first)
                    cell["last_ns"] = max(cell.get("last_ns", t), t)
    return out


def stored(db: sqlite3.Connection) -> dict[Key, dict[str, int]]:
    out: dict[Key, dict[str, int]] = {}
    for m in series_measurements():
        tags, fields, ext = tags_of(m), additive(m), [e.column for e in extrema(m)]
        cols = [*int_cols(m), *ext]
        for level in LEVELS:
            sql = (f"SELECT r.bucket_ns, r.rows, {', '.join('r.' + c for c in cols)}, {', '.join('s.' + t for t in tags)} "
                   f"FROM {level_table(m, level)} r JOIN {m}_series s ON s.id = r.series")
            for row in db.execute(sql):
                key: Key = ((m, *row[2 + len(cols):]), level.name, row[0])
                out[key] = {"rows": row[1], **{f: v for f, v in zip([*fields, *ext], row[2:2 + len(cols)])
                                               if v is not None}}
    return out


def conserved(db: sqlite3.Connection) -> None:
    """Σ jobs = node, exactly, for every pool and bucket of every rollup table."""
    pool_cols = ", ".join(f"s.{t}" for t in POOL_TAGS)
    for level in LEVELS:
        sums = {}
        for m in (WL_NODE, WL_JOB):
            sql = (f"SELECT r.bucket_ns, {pool_cols}, SUM(r.energy_uj) FROM {level_table(m, level)} r "
                   f"JOIN {m}_series s ON s.id = r.series GROUP BY 1, {pool_cols}")
            sums[m] = {tuple(r[:-1]): r[-1] for r in db.execute(sql)}
        for key, node_uj in sums[WL_NODE].items():
            assert sums[WL_JOB].get(key, 0) == node_uj, (level.name, key)


# -- pure parts --------------------------------------------------------------------------------------


@given(st.lists(st.floats(0, 1e7, allow_nan=False), min_size=1, max_size=30))
def test_apportion_sums_to_the_rounded_total_and_moves_no_share_by_a_whole_unit(shares: list[float]) -> None:
    target = round(math.fsum(shares))
    parts = apportion(target, shares)
    assert parts is not None and sum(parts) == target
    assert all(abs(p - s) < 1 for p, s in zip(parts, shares))


@given(st.lists(st.floats(0.0, 5e3, allow_nan=False), min_size=3, max_size=3),
       st.lists(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4), min_size=3, max_size=3))
def test_quantized_jobs_add_up_to_their_pool_exactly(energies: list[float], shares: list[list[float]]) -> None:
    q = quantize(tick(T0, energies, shares))
    for component, device, _ in POOLS:
        node = [x for x in q if x.point.measurement == WL_NODE and x.point.tags["device"] == device]
        jobs = [x for x in q if x.point.measurement == WL_JOB and x.point.tags["device"] == device]
        if jobs:
            assert sum(x.ints["energy_j"] or 0 for x in jobs) == node[0].ints["energy_j"]
            assert math.fsum(x.as_point().fields["energy_j"] for x in jobs) == pytest.approx(
                node[0].as_point().fields["energy_j"], rel=1e-12, abs=1e-6)


@given(st.lists(st.floats(0.0, 5e3, allow_nan=False), min_size=3, max_size=3),
       st.lists(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4), min_size=3, max_size=3))
def test_quantizing_the_stored_values_again_gives_the_same_integers(energies: list[float],
                                                                     shares: list[list[float]]) -> None:
    """What lets the agent hold ticks through a full disk as their stored points alone (store/guard.py)."""
    first = quantize(tick(T0, energies, shares))
    again = quantize([q.as_point() for q in first])
    assert [q.ints for q in again] == [q.ints for q in first]


spans = st.builds(lambda d, h, m, r: (d, h, m, r), st.integers(0, 3), st.integers(0, 30), st.integers(0, 300),
                  st.integers(0, 2000))


@given(st.integers(0, 4 * DAY_NS), st.integers(1, 4 * DAY_NS), st.integers(0, 4), st.integers(0, 96),
       st.integers(0, 96 * 60), st.booleans())
def test_a_plan_covers_its_range_with_aligned_disjoint_segments(since: int, length: int, days: int, hours: int,
                                                                 minutes: int, refuse_odd_days: bool) -> None:
    # Each level complete from the start up to its mark; marks nest (days <= hours <= minutes).
    d_mark = T0 + days * DAY_NS
    h_mark = max(d_mark, T0 + hours * HOUR_NS)
    m_mark = max(h_mark, T0 + minutes * MINUTE_NS)
    sp = [Span(DAY, T0, d_mark), Span(HOUR, T0, h_mark), Span(MINUTE, T0, m_mark)]
    allowed = {DAY: lambda b: (b // DAY_NS) % 2 == 0} if refuse_odd_days else None
    p = plan(T0 + since, T0 + since + length, sp, 0, allowed)
    assert (p.since_ns, p.until_ns, p.gaps) == (T0 + since, T0 + since + length, [])
    for a, b in zip(p.segments, p.segments[1:]):
        assert a.hi_ns == b.lo_ns
    for s in p.segments:
        assert s.lo_ns < s.hi_ns
        if s.level is not None:
            span = next(x for x in sp if x.level is s.level)
            assert s.lo_ns % s.level.size_ns == 0 and s.hi_ns % s.level.size_ns == 0
            assert span.kept_ns <= s.lo_ns and s.hi_ns <= span.folded_ns
        if refuse_odd_days and s.level is DAY:
            assert all((b // DAY_NS) % 2 == 0 for b in range(s.lo_ns, s.hi_ns, DAY_NS))


def test_a_range_older_than_the_raw_ticks_starts_at_the_next_boundary_it_can_cover() -> None:
    sp = [Span(DAY, T0, T0), Span(HOUR, T0, T0 + 48 * HOUR_NS), Span(MINUTE, T0 + 24 * HOUR_NS, T0 + 48 * HOUR_NS)]
    p = plan(T0 + 10 * HOUR_NS + 17 * MINUTE_NS, T0 + 30 * HOUR_NS, sp, T0 + 40 * HOUR_NS)
    assert p.since_ns == T0 + 11 * HOUR_NS  # 10:17 on day one: only whole hours are left
    assert p.until_ns == T0 + 30 * HOUR_NS and [s.level for s in p.segments] == [HOUR]


# -- the property over arbitrary tick streams -------------------------------------------------------


tick_streams = st.lists(
    st.tuples(st.integers(-1800, 4 * 3600), st.integers(0, NS_PER_S - 1),
              st.lists(st.floats(0.0, 500.0, allow_nan=False), min_size=3, max_size=3),
              st.lists(st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.3]), min_size=4, max_size=4),
                       min_size=3, max_size=3),
              st.booleans()),
    min_size=1, max_size=60)


@settings(max_examples=60)
@given(tick_streams, st.integers(1, 6), st.integers(6, 48))
def test_rollups_equal_raw_sums_and_conserve_in_every_bucket(stream: list[tuple[int, int, list[float],
                                                                          list[list[float]], bool]],
                                                             raw_h: int, minutes_h: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "l.sqlite3")
        compactor = Compactor(ledger, Retention(raw_h * 3600.0, minutes_h * 3600.0, 1e9))
        t, ticks = T0 + DAY_NS, []
        for step_s, ns, energies, shares, compact_now in stream:
            t = max(T0, t + step_s * NS_PER_S) + ns  # steps back now and then: a wall clock set back
            ticks.append(tick(t, energies, shares))
            ledger.append(ticks[-1])
            if compact_now:
                compactor.catch_up(t)
        newest = max(p.time_ns for points in ticks for p in points)
        compactor.catch_up(newest + 2 * DAY_NS)  # far ahead: everything old enough is folded and pruned
        want, db = expected(ticks), ledger.connection()
        got = stored(db)
        for key, cell in got.items():
            assert cell == {k: v for k, v in want[key].items()}, key
        # Every bucket below a level's mark that had rows is there, with nothing missing.
        meta = ledger.meta()
        for key in want:
            series, level_name, bucket = key
            table = f"{series[0]}_{level_name}"
            if int(meta.get(f"kept:{table}", 0)) <= bucket < int(meta.get(f"folded:{table}", 0)):
                assert key in got, key
        conserved(db)
        # The whole history through the read plan: exactly the raw ticks' sums per job.
        total: dict[str, int] = defaultdict(int)
        for points in ticks:
            for q in quantize(points):
                if q.point.measurement == WL_JOB:
                    total[q.point.tags["job"]] += q.ints["energy_j"] or 0
        sums = ledger.sums(WL_JOB, "energy_j", ("job",), 0, newest + 1)
        by_job: dict[str, float] = defaultdict(float)
        for _, (job,), e in sums.cells:
            by_job[job] += e
        assert {j: round(e * 1e6) for j, e in by_job.items() if e} == {j: v for j, v in total.items() if v}
        ledger.close()


def test_a_tick_stamped_before_folded_minutes_is_added_to_them(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    compactor = Compactor(ledger)
    for i in range(180):
        ledger.append(tick(T0 + i * NS_PER_S, [10.0, 20.0, 30.0], [[1, 1, 0, 0]] * 3))
    compactor.catch_up(T0 + 180 * NS_PER_S)
    assert ledger.get_meta("folded:wl_job_1m") == str(T0 + 2 * MINUTE_NS)
    ledger.append(tick(T0 + 30 * NS_PER_S + 1, [5.0, 0.0, 0.0], [[0, 1, 0, 0]] * 3))  # clock set back a minute
    db = ledger.connection()
    (bob,) = db.execute("SELECT r.energy_uj FROM wl_job_1m r JOIN wl_job_series s ON s.id = r.series WHERE "
                        "s.job = 'eval' AND s.device = 'package-0' AND r.bucket_ns = ?", (T0,)).fetchone()
    assert bob == 60 * 5_000_000 + 5_000_000
    conserved(db)


# -- summary, reports, space -------------------------------------------------------------------------


def test_the_job_summary_is_kept_as_ticks_are_written(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.append(tick(T0, [10.0, 300.0, 100.0], [[1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]], interval_s=2.0))
    ledger.append(tick(T0 + 2 * NS_PER_S, [10.0, 500.0, 0.0], [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]],
                       interval_s=2.0))
    rows = {(r["job"], r["component"]): r for r in ledger.job_summary({"user": "alice"})}
    gpu = rows[("train", "gpu")]
    assert (gpu["first_ns"], gpu["last_ns"], gpu["ticks"]) == (T0, T0 + 2 * NS_PER_S, 2)
    assert gpu["energy_j"] == pytest.approx(300 + 50 + 500)
    assert gpu["held_s"] == pytest.approx(2 + 2 + 2)  # GPU-seconds: two GPUs the first tick, one the second
    assert gpu["peak_w"] == pytest.approx(250.0)  # 500 J over 2 s on GPU-a (second tick)
    assert rows[("train", "cpu")]["energy_j"] == pytest.approx(20.0)
    from wattledger import report as rp
    from wattledger.config import Config

    life = rp.from_ledger(ledger, Config(), T0 + NS_PER_S, T0 + HOUR_NS).to_dict()["lifetimes"]
    train = next(x for x in life if x["job"] == "train")  # the window starts after its first tick: whole life
    assert (train["first_seen"], train["last_seen"]) == ("2024-03-05T00:00:00Z", "2024-03-05T00:00:02Z")
    assert train["gpu_seconds_held"] == pytest.approx(6.0) and train["peak_w"]["gpu"] == pytest.approx(250.0)
    # The embodied carbon has a summary of its own, per component (gpu, host), and the life carries it.
    grams = {r["component"]: r for r in ledger.job_summary({"job": "train"}, WL_EMBODIED)}
    assert grams["gpu"]["ticks"] == 2 and grams["gpu"]["embodied_g"] == pytest.approx(4.56e-3 * 2 * (1 + 0.5 + 1))
    assert grams["host"]["embodied_g"] == pytest.approx(4.56e-3 * 2 / 5 * 2)
    assert train["embodied_g_co2e"] == pytest.approx(float(str(grams["gpu"]["embodied_g"])) +
                                                     float(str(grams["host"]["embodied_g"])))


def make_hours(ledger: Ledger, hours: int, start: int = T0, step_s: int = 30) -> None:
    """``hours`` of ``step_s`` ticks whose energy changes with the hour."""
    per_hour = 3600 // step_s
    for i in range(hours * per_hour):
        t = start + i * step_s * NS_PER_S + 123_456_789
        h = i // per_hour
        ledger.append(tick(t, [10.0 + h, 20.0 + (i % 7), 5.0 * (h % 3)], [[1, 1, 1, 0], [2, 1, 0, 1], [0, 1, 3, 0]],
                           interval_s=float(step_s)))


@pytest.mark.slow
def test_reports_from_rollups_equal_reports_from_raw_ticks(tmp_path: Path) -> None:
    from wattledger import report as rp
    from wattledger.config import Config
    from wattledger.model.points import WL_CARBON

    raw, rolled = Ledger(tmp_path / "raw.sqlite3"), Ledger(tmp_path / "rolled.sqlite3")
    carbon = [Point(WL_CARBON, {"zone": "DE", "provider": "electricitymaps", "kind": "actual"},
                    {"g_per_kwh": 300.0 + 10 * (h % 2)}, T0 + DAY_NS + h * HOUR_NS) for h in range(6)]
    for ledger in (raw, rolled):
        make_hours(ledger, 50)
        ledger.append(carbon)
    Compactor(rolled, Retention(raw_s=6 * 3600.0, minutes_s=20 * 3600.0)).catch_up(T0 + 50 * HOUR_NS)
    assert rolled.raw_kept_ns() > T0  # some raw ticks are gone: only rollups hold them
    cfg = Config()
    cfg.carbon.zone, cfg.carbon.provider = "DE", "electricitymaps"
    # Ragged edges inside the kept raw ticks, whole hours and minutes between: identical reports.
    since, until = T0 + 44 * HOUR_NS + 7 * MINUTE_NS + 13 * NS_PER_S, T0 + 50 * HOUR_NS - 59 * NS_PER_S
    plan_used = rolled.sums(WL_JOB, "energy_j", ("job",), since, until).plan
    assert plan_used is not None and [s.level for s in plan_used.segments] == [None, MINUTE, HOUR, MINUTE, None]
    old_since = T0 + 20 * HOUR_NS + 7 * MINUTE_NS + 13 * NS_PER_S  # its minutes and ticks are gone: from 21:00
    for (lo, hi), by, hourly in itertools.product([(since, until), (old_since, until)], ("job", "user"),
                                                  (False, True)):
        b = rp.from_ledger(rolled, cfg, lo, hi, rp.Options(by=by), hourly=hourly)
        assert b.since_ns == (lo if lo == since else T0 + 21 * HOUR_NS)
        a = rp.from_ledger(raw, cfg, b.since_ns, hi, rp.Options(by=by), hourly=hourly).to_dict()
        got = b.to_dict()
        a.pop("origin"), got.pop("origin")
        assert a == got
        assert got["embodied"]["g_co2e"] > 0  # the embodied grams came through the rollups too
        # report --job's ticks (duration, host energy, unused capacity, GPU time held): the same.
        for job in ("train", "eval", "_idle"):
            assert rolled.job_ticks(job, b.since_ns, hi) == raw.job_ticks(job, b.since_ns, hi) != []


def test_a_constant_intensity_year_reads_days_not_hours(tmp_path: Path) -> None:
    from wattledger import report as rp
    from wattledger.config import Config

    ledger = Ledger(tmp_path / "l.sqlite3")
    make_hours(ledger, 74, step_s=300)
    Compactor(ledger).catch_up(T0 + 74 * HOUR_NS)
    r = rp.from_ledger(ledger, Config(), T0, T0 + 74 * HOUR_NS)
    rows = ledger.sums(WL_JOB, "energy_j", ("job",), T0, T0 + 74 * HOUR_NS, hour_class=lambda h: "one")
    assert rows.plan is not None and rows.plan.segments[0].level is DAY
    assert len(r.hours) == 74 and r.to_dict()["intensity"]["hours"] == 74
    hourly = rp.from_ledger(ledger, Config(), T0, T0 + 74 * HOUR_NS, hourly=True)
    assert r.total.it_j == hourly.total.it_j and r.total.g_co2e == pytest.approx(hourly.total.g_co2e, rel=1e-12)


def test_compaction_gives_space_back(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(path)
    make_hours(ledger, 30)
    compactor = Compactor(ledger, Retention(raw_s=3600.0, minutes_s=3600.0), reserve_pages=8)
    db = ledger.connection()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.stat().st_size
    compactor.catch_up(T0 + 30 * HOUR_NS)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    free, pages = db.execute("PRAGMA freelist_count").fetchone()[0], db.execute("PRAGMA page_count").fetchone()[0]
    assert free <= 8 and path.stat().st_size == pages * 4096
    assert path.stat().st_size < before / 3


def test_compaction_never_touches_undelivered_outbox_rows(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True, spool_max_rows=10**9)
    make_hours(ledger, 6, step_s=60)
    waiting = ledger.spool_counts()["spooled"]
    Compactor(ledger, Retention(raw_s=3600.0, minutes_s=3600.0)).catch_up(T0 + 6 * HOUR_NS)
    assert ledger.raw_kept_ns() >= T0 + 4 * HOUR_NS  # raw ticks older than an hour are gone ...
    assert ledger.spool_counts()["spooled"] == waiting == len(ledger.pending(10**6).ids)  # ... their points wait
    assert min(p.time_ns for p in ledger.pending(10).points) < T0 + HOUR_NS


def test_a_measurement_without_rows_does_not_hold_compaction_back(tmp_path: Path) -> None:
    """wl_embodied stays empty with [embodied] off: its watermark must not make the others fold from 1970
    a chunk at a time (that took ~1,900 steps, a tick each, before the fix)."""
    ledger = Ledger(tmp_path / "l.sqlite3")
    for i in range(240):
        ledger.append([p for p in tick(T0 + i * 30 * NS_PER_S, [10.0, 20.0, 30.0], [[1, 1, 0, 0]] * 3, 30.0)
                       if p.measurement != WL_EMBODIED])
    steps = Compactor(ledger).catch_up(T0 + 3 * HOUR_NS)
    assert steps < 20
    assert ledger.get_meta("folded:wl_job_1h") == ledger.get_meta("folded:wl_embodied_1h") == str(T0 + HOUR_NS)
    conserved(ledger.connection())
