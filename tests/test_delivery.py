"""The Deliverer's rules, against a scripted sink and the real SQLite ledger, with a fake clock."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattledger.agent.delivery import Deliverer
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_JOB, Point
from wattledger.agent.sinks.base import Outcome, WriteResult
from wattledger.model.readings import ProbeResult, SourceState

T0 = 1_700_000_000_000_000_000


def pt(i: int, job: str = "j") -> Point:
    return Point(WL_JOB, {"host": "h", "job": job, "component": "cpu", "device": "package-0"},
                 {"energy_j": float(i)}, T0 + i)


def key(p: Point) -> tuple[object, ...]:
    return (p.measurement, tuple(sorted(p.tags.items())), p.time_ns)


class ScriptedSink:
    """Answers from a script (then ``default``); stores accepted points like InfluxDB (by series+time)."""

    name = "scripted"
    remote = True

    def __init__(self, *script: WriteResult | Callable[[list[Point]], WriteResult],
                 is_bad: Callable[[Point], bool] = lambda p: False, max_points: int | None = None,
                 on_write: Callable[[], None] | None = None) -> None:
        self.script = list(script)
        self.is_bad = is_bad
        self.max_points = max_points
        self.on_write = on_write
        self.stored: dict[tuple[object, ...], Point] = {}
        self.writes: list[int] = []  # batch sizes

    def write(self, points: list[Point]) -> WriteResult:
        self.writes.append(len(points))
        if self.on_write:
            self.on_write()
        if self.script:
            answer = self.script.pop(0)
            answer = answer(points) if callable(answer) else answer
            if not answer.ok:
                return answer
        if self.max_points is not None and len(points) > self.max_points:
            return WriteResult(Outcome.TOO_LARGE, 413, "too large")
        good = [p for p in points if not self.is_bad(p)]
        for p in good:  # a partial write keeps the good lines, as InfluxDB does
            self.stored[key(p)] = p
        if len(good) < len(points):
            return WriteResult(Outcome.REJECTED, 400, "partial write: unable to parse")
        return WriteResult.success(204)

    def probe(self) -> ProbeResult:
        return ProbeResult(self.name, SourceState.FOUND, "scripted")

    def close(self) -> None:
        pass


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


RETRY = WriteResult(Outcome.RETRY, 503, "unavailable")
UNAUTH = WriteResult(Outcome.UNAUTHORIZED, 401, "unauthorized access")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.sqlite3", spool=True)
    yield led
    led.close()


def deliverer(ledger: Ledger, sink: ScriptedSink, t: FakeTime, **kw: object) -> Deliverer:
    args: dict[str, object] = {"clock": t.clock, "rng": lambda: 0.5, "sleep": t.sleep, "step_budget_s": 1e9}
    args.update(kw)
    return Deliverer(ledger, sink, **args)  # type: ignore[arg-type]


def test_ok_marks_delivered_in_batches(ledger: Ledger) -> None:
    ledger.append([pt(i) for i in range(25)])
    sink, t = ScriptedSink(), FakeTime()
    d = deliverer(ledger, sink, t, batch_points=10)
    d.step()
    assert sink.writes == [10, 10, 5]
    assert ledger.spool_counts() == {"spooled": 0, "delivered": 25, "dropped": 0, "rejected": 0}
    assert len(sink.stored) == 25
    assert d.stats()["write_errors"] == 0 and d.stats()["delivered_points"] == 25


def test_nothing_is_marked_delivered_before_the_sink_said_ok(ledger: Ledger) -> None:
    ledger.append([pt(i) for i in range(5)])
    seen: list[int] = []
    sink = ScriptedSink(on_write=lambda: seen.append(ledger.spool_counts()["spooled"]))
    deliverer(ledger, sink, FakeTime()).step()
    assert seen == [5] and ledger.spool_counts()["spooled"] == 0


def test_one_bad_point_is_isolated_set_aside_and_logged_once(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    points = [pt(i) for i in range(64)]
    bad = {points[5].time_ns, points[41].time_ns}
    ledger.append(points)
    sink = ScriptedSink(is_bad=lambda p: p.time_ns in bad)
    d = deliverer(ledger, sink, FakeTime())
    with caplog.at_level(logging.DEBUG, logger="wattledger.delivery"):
        d.step()
    counts = ledger.spool_counts()
    assert (counts["spooled"], counts["delivered"], counts["rejected"]) == (0, 62, 2)
    assert {p.time_ns for p in sink.stored.values()} == {p.time_ns for p in points} - bad
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "set aside" in warnings[0].getMessage() and "rejected" in warnings[0].getMessage()
    assert d.stats()["rejected_points"] == 2
    assert len(sink.writes) < 30  # bisection, not one request per point
    rows = ledger._db.execute("SELECT time_ns, reason FROM rejected ORDER BY time_ns").fetchall()
    assert [r[0] for r in rows] == sorted(bad) and all("HTTP 400" in r[1] for r in rows)
    # Set aside for good: nothing is retried later.
    before = len(sink.writes)
    d.step()
    assert len(sink.writes) == before


def test_413_splits_and_later_batches_are_smaller(ledger: Ledger) -> None:
    ledger.append([pt(i) for i in range(100)])
    sink = ScriptedSink(max_points=30)
    d = deliverer(ledger, sink, FakeTime(), batch_points=100)
    d.step()
    assert sink.writes[:3] == [100, 50, 25]
    assert ledger.spool_counts()["spooled"] == 0 and len(sink.stored) == 100
    ledger.append([pt(i) for i in range(100, 160)])
    sink.writes.clear()
    d.step()
    assert max(sink.writes) <= 25  # remembered: no 413 round trip per batch


def test_413_on_a_single_point_sets_it_aside(ledger: Ledger) -> None:
    ledger.append([pt(0), pt(1)])
    sink = ScriptedSink(max_points=0)
    deliverer(ledger, sink, FakeTime()).step()
    assert ledger.spool_counts()["rejected"] == 2 and ledger.spool_counts()["spooled"] == 0


def test_retry_backs_off_exponentially_with_jitter(ledger: Ledger) -> None:
    ledger.append([pt(0)])
    t = FakeTime()
    sink = ScriptedSink(RETRY, RETRY, RETRY, RETRY)
    jitter = iter([0.0, 1.0, 0.0, 1.0])
    d = deliverer(ledger, sink, t, rng=lambda: next(jitter), base_backoff_s=2.0, max_backoff_s=5.0)
    waits = []
    for _ in range(4):
        d.step()
        waits.append(d.backing_off_s)
        d.step()  # not due yet: no request
        t.now += d.backing_off_s
    assert waits == [1.0, 4.0, 2.5, 5.0]  # caps 2, 4, 5, 5 with equal jitter in [cap/2, cap]
    assert len(sink.writes) == 4
    d.step()
    assert ledger.spool_counts()["spooled"] == 0 and d.backing_off_s == 0
    assert d.stats()["retries"] == 4 and d.stats()["write_errors"] == 4


def test_retry_after_is_honoured_and_a_late_request_is_not_sent(ledger: Ledger) -> None:
    ledger.append([pt(0)])
    t = FakeTime()
    sink = ScriptedSink(WriteResult(Outcome.RETRY, 429, "slow down", retry_after_s=60.0))
    d = deliverer(ledger, sink, t)
    d.step()
    assert d.backing_off_s == 60.0
    t.now += 59.9
    d.step()
    assert len(sink.writes) == 1
    t.now += 0.2
    d.step()
    assert len(sink.writes) == 2 and ledger.spool_counts()["spooled"] == 0


def test_unauthorized_keeps_data_and_is_loud_once(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    ledger.append([pt(i) for i in range(10)])
    t = FakeTime()
    sink = ScriptedSink(UNAUTH, UNAUTH, UNAUTH)
    d = deliverer(ledger, sink, t)
    with caplog.at_level(logging.INFO, logger="wattledger.delivery"):
        for _ in range(3):
            d.step()
            assert ledger.spool_counts()["spooled"] == 10
            t.now += 1000
        d.step()
        assert ledger.spool_counts()["spooled"] == 0  # fixed by the 4th try
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "CREDENTIALS" in errors[0].getMessage() and "10 point(s)" in errors[0].getMessage()
    assert any("resumed" in r.getMessage() for r in caplog.records)
    assert d.stats()["unauthorized"] == 3 and ledger.spool_counts()["rejected"] == 0


def test_step_is_bounded_in_time(ledger: Ledger) -> None:
    ledger.append([pt(i) for i in range(50)])
    t = FakeTime()
    sink = ScriptedSink(on_write=lambda: setattr(t, "now", t.now + 0.1))
    d = deliverer(ledger, sink, t, batch_points=5, step_budget_s=0.25)
    d.step()
    assert len(sink.writes) == 3  # 0.1 s each; stops once 0.25 s are used
    d.step()
    assert len(sink.writes) == 6


def test_step_sizes_batches_to_fit_the_budget(ledger: Ledger) -> None:
    """After one measured write, a step reads only what fits its budget: a backlog never stalls a tick."""
    ledger.append([pt(i) for i in range(3000)])
    t = FakeTime()
    sink = ScriptedSink()
    sink.on_write = lambda: setattr(t, "now", t.now + 0.001 * sink.writes[-1])  # 1,000 points/s
    d = deliverer(ledger, sink, t, batch_points=1000, step_budget_s=0.25)
    d.step()
    assert sink.writes == [1000]  # nothing measured yet: one full batch
    for _ in range(4):
        started = t.now
        d.step()
        assert t.now - started <= 0.25 + 1e-9
    assert sink.writes[1:] == [250] * 4
    assert d.flush(deadline_s=60) and sink.writes[-1] == 1000  # flush goes for throughput


def test_a_sink_that_raises_is_retried_not_fatal(ledger: Ledger) -> None:
    ledger.append([pt(0)])

    def boom(points: list[Point]) -> WriteResult:
        raise RuntimeError("bug")

    t = FakeTime()
    sink = ScriptedSink(boom)
    d = deliverer(ledger, sink, t)
    d.step()
    assert ledger.spool_counts()["spooled"] == 1 and d.stats()["write_errors"] == 1
    t.now += d.backing_off_s
    d.step()
    assert ledger.spool_counts()["spooled"] == 0


def test_flush_drains_within_the_deadline(ledger: Ledger) -> None:
    ledger.append([pt(i) for i in range(30)])
    t = FakeTime()
    sink = ScriptedSink(RETRY, RETRY)
    d = deliverer(ledger, sink, t, batch_points=10)
    d.step()  # backing off now
    assert d.flush(deadline_s=10.0) is True
    assert ledger.spool_counts()["spooled"] == 0
    assert t.slept == [pytest.approx(1.5)]  # first flush attempt ignores the backoff; then waits once


def test_flush_gives_up_at_the_deadline_and_keeps_the_data(ledger: Ledger) -> None:
    ledger.append([pt(i) for i in range(3)])
    t = FakeTime()
    sink = ScriptedSink(*([RETRY] * 100))
    d = deliverer(ledger, sink, t, base_backoff_s=1.0)
    started = t.now
    assert d.flush(deadline_s=5.0) is False
    assert t.now - started <= 5.0
    assert ledger.spool_counts()["spooled"] == 3


def test_flush_stops_at_once_when_unauthorized(ledger: Ledger) -> None:
    ledger.append([pt(0)])
    t = FakeTime()
    d = deliverer(ledger, ScriptedSink(UNAUTH, UNAUTH), t)
    assert d.flush(deadline_s=60.0) is False and t.slept == []


def test_new_ticks_during_an_outage_wait_behind_the_old_ones(ledger: Ledger) -> None:
    t = FakeTime()
    sink = ScriptedSink(RETRY, RETRY)
    d = deliverer(ledger, sink, t, batch_points=4)
    for tick in range(3):
        ledger.append([pt(tick * 3 + k) for k in range(3)])
        d.step()
        t.now += 10
    assert [p.fields["energy_j"] for p in sink.stored.values()] == [float(i) for i in range(9)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_points=st.integers(1, 60),
    bad=st.sets(st.integers(0, 59), max_size=5),
    answers=st.lists(
        st.sampled_from(["ok", "retry", "unauth", "misconf", "retry_after", "big", "raise"]), max_size=12
    ),
    max_points=st.one_of(st.none(), st.integers(1, 20)),
    batch_points=st.integers(1, 25),
)
def test_property_nothing_lost_nothing_doubled(
    tmp_path_factory: pytest.TempPathFactory, n_points: int, bad: set[int], answers: list[str],
    max_points: int | None, batch_points: int,
) -> None:
    """Whatever the server answers, once it behaves: every good point stored, every bad one set aside, once."""
    led = Ledger(tmp_path_factory.mktemp("prop") / "l.sqlite3", spool=True)
    points = [pt(i) for i in range(n_points)]
    led.append(points)

    def raising(_: list[Point]) -> WriteResult:
        raise ConnectionResetError("reset")

    table: dict[str, WriteResult | Callable[[list[Point]], WriteResult]] = {
        "ok": WriteResult.success(), "retry": RETRY, "unauth": UNAUTH,
        "misconf": WriteResult(Outcome.MISCONFIGURED, 404, "database not found"),
        "retry_after": WriteResult(Outcome.RETRY, 429, "", 3.0),
        # A 413 for a single point is permanent (set aside): scripted only for larger batches.
        "big": lambda pts: WriteResult(Outcome.TOO_LARGE, 413, "") if len(pts) > 1 else WriteResult.success(),
        "raise": raising,
    }
    sink = ScriptedSink(*[table[a] for a in answers], is_bad=lambda p: p.time_ns - T0 in bad, max_points=max_points)
    t = FakeTime()
    d = deliverer(led, sink, t, batch_points=batch_points, max_backoff_s=50.0)
    for _ in range(400):
        d.step()
        t.now += 60
        if led.spool_counts()["spooled"] == 0:
            break
    counts = led.spool_counts()
    n_bad = len([i for i in bad if i < n_points])
    assert counts["spooled"] == 0
    assert counts["delivered"] == n_points - n_bad
    assert counts["rejected"] == n_bad
    assert set(sink.stored) == {key(p) for p in points if p.time_ns - T0 not in bad}
    set_aside = {r[0] for r in led._db.execute("SELECT time_ns FROM rejected")}
    assert set_aside == {T0 + i for i in bad if i < n_points}
    led.close()


def test_spool_counts_stay_exact_when_the_bound_drops_rows_in_flight(tmp_path: Path) -> None:
    """The outbox size is kept in meta (no COUNT(*) per tick); rows dropped mid-delivery are not 'delivered'."""
    led = Ledger(tmp_path / "l.sqlite3", spool=True, spool_max_rows=10)
    t = FakeTime()
    for i in range(0, 8, 2):  # ticks of two points: the bound drops whole ticks (issue 17, item 7)
        led.append([pt(i), pt(i + 1)])
    in_flight = led.pending(8)

    def outbox_rows() -> int:
        return int(led._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    for i in range(8, 14, 2):
        led.append([pt(i), pt(i + 1)])  # 14 > 10: the 4 oldest (two ticks) are dropped, counted
    assert led.spool_counts()["spooled"] == outbox_rows() == 10
    assert led.spool_counts()["dropped"] == 4
    led.mark_delivered(in_flight.ids)  # 4 of these 8 ids were already dropped
    assert led.spool_counts()["delivered"] == 4
    assert led.spool_counts()["spooled"] == outbox_rows() == 6
    d = deliverer(led, ScriptedSink(is_bad=lambda p: p.time_ns == T0 + 9), t)
    d.step()
    counts = led.spool_counts()
    assert (counts["spooled"], counts["delivered"], counts["rejected"], counts["dropped"]) == (0, 9, 1, 4)
    assert outbox_rows() == 0
    led.close()
    reopened = Ledger(tmp_path / "l.sqlite3", spool=True)
    assert reopened.spool_counts()["spooled"] == 0
    reopened.close()
