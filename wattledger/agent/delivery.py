"""Delivery: from the ledger's outbox (the spool) to a sink, with nothing lost or doubled.

The one place that decides what a sink's answer means for the spooled rows
(docs/delivery.md has the same rules as a table):

- ok (2xx): the rows are marked delivered, and only then.
- rejected (400/422): bad data can never succeed, so it is not retried; but a
  batch of 5,000 points must not be thrown away for one bad line, and servers
  write the good lines of a partial write anyway. The batch is halved until
  the bad point(s) stand alone; those are set aside (the ledger's ``rejected``
  table, kept for inspection) and logged once. Resending the good halves is
  harmless: every point has an explicit timestamp, so a resend overwrites.
- too_large (413): the batch is halved and each half sent; later batches are
  fetched no larger than the half that fitted.
- unauthorized (401/403) and misconfigured (404, other 4xx): nothing can get
  through until an admin acts; data stays spooled, one loud error, back off.
- retry (408/429/5xx, timeouts, refused connections): back off exponentially
  with jitter, never sooner than the server's Retry-After.

``step`` is called by the loop after every tick and is bounded in time: it
sends while there is backlog and its budget lasts (batches sized from the
measured rate to fit), and returns at once while backing off. A server that
hangs can still hold one request for up to the sink's ``timeout_s``.
``flush`` is for SIGTERM. A crash between the server's 2xx and
``mark_delivered`` only means the batch is sent again on restart (idempotent).
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable

from wattledger.store.ledger import Ledger
from wattledger.model.points import Batch
from wattledger.agent.sinks.base import Outcome, Sink, WriteResult
from wattledger.util.backoff import Backoff
from wattledger.util.logonce import LogOnce

log = logging.getLogger("wattledger.delivery")


class _Progress(enum.Enum):
    IDLE = "idle"          # nothing to send
    MOVED = "moved"        # something was delivered, set aside or split: go on
    BLOCKED = "blocked"    # backing off


_STOP_OUTCOMES = (Outcome.UNAUTHORIZED, Outcome.MISCONFIGURED)
MIN_STEP_POINTS = 100
_ALARM = "alarm"  # LogOnce keys (_ALARM, outcome): the sink problem currently reported


def _is_alarm(key: Hashable) -> bool:
    return isinstance(key, tuple) and key[0] == _ALARM


class Deliverer:
    def __init__(
        self,
        ledger: Ledger,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        batch_points: int = 5000,
        step_budget_s: float = 0.25,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        wall_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if batch_points < 1:
            raise ValueError("batch_points must be >= 1")
        self.ledger = ledger
        self.sink = sink
        self._clock = clock
        self._batch_points = batch_points
        self._step_budget_s = step_budget_s
        self._backoff = Backoff(base_backoff_s, max_backoff_s, clock=clock, rng=rng)
        self._wall_ns = wall_ns
        self._sleep = sleep
        # Parts of a split batch still to send, oldest first. Their rows stay in
        # the outbox until delivered, so the outbox is read only when this is empty.
        self._queue: deque[Batch] = deque()
        self._last: WriteResult | None = None  # the last failed answer
        self._once = LogOnce(log)  # the sink problem currently reported; the first rejection; the first 413
        self._counts: Counter[str] = Counter()
        self._rate_pts_per_s: float | None = None  # measured: spool read + encode + request + mark

    # -- the loop's interface ---------------------------------------------
    def step(self) -> None:
        """Send what is due, for about ``step_budget_s`` at most.

        Batches read from the spool are sized from the measured delivery rate
        so that one request fits in what is left of the budget (never fewer
        than MIN_STEP_POINTS, never more than batch_points): a backlog drains
        over many ticks instead of delaying one tick by a 5,000-point write.
        """
        start = self._clock()
        if start < self._backoff.next_at:
            return
        while True:
            left_s = self._step_budget_s - (self._clock() - start)
            if self._attempt(self._fetch_limit(left_s)) is not _Progress.MOVED:
                return
            if self._clock() - start >= self._step_budget_s:
                return

    def flush(self, deadline_s: float) -> bool:
        """Try to empty the spool within ``deadline_s`` seconds from now (SIGTERM); True if it is empty.

        The first attempt ignores any backoff in progress (the server may be
        back); after that, waits follow the backoff but never pass the deadline.
        Whatever is left stays spooled for the next start.
        """
        end = self._clock() + deadline_s
        self._backoff.allow_now()
        while True:
            progress = self._attempt()
            if progress is _Progress.IDLE:
                return True
            if progress is _Progress.BLOCKED:
                if self._last is not None and self._last.outcome in _STOP_OUTCOMES:
                    break
                wait_s = self._backoff.next_at - self._clock()
                if self._clock() + wait_s >= end:
                    break
                self._sleep(max(wait_s, 0.0))
            elif self._clock() >= end:
                break
        left = self.backlog_points()
        if left:
            log.warning(
                "delivery: %d point(s) still spooled at shutdown; they stay in %s and are sent on the next start",
                left, self.ledger.path,
            )
        return left == 0

    def stats(self) -> dict[str, int]:
        """Counters for the wl_agent point and doctor: write_errors and friends."""
        keys = (
            "writes", "write_errors", "delivered_points", "rejected_points", "splits",
            "retries", "unauthorized", "misconfigured",
        )
        return {k: int(self._counts[k]) for k in keys}

    def backlog_points(self) -> int:
        return int(self.ledger.spool_counts()["spooled"])

    @property
    def backing_off_s(self) -> float:
        """Seconds until the next attempt (0 when one is due)."""
        return self._backoff.wait_s

    # -- one attempt -------------------------------------------------------
    def _fetch_limit(self, budget_left_s: float) -> int:
        if self._rate_pts_per_s is None:
            return self._batch_points
        fits = int(self._rate_pts_per_s * max(budget_left_s, 0.0))
        return max(1, min(self._batch_points, max(MIN_STEP_POINTS, fits)))

    def _next_batch(self, limit: int) -> Batch:
        if self._queue:
            return self._queue.popleft()
        return self.ledger.pending(limit)

    def _attempt(self, limit: int | None = None) -> _Progress:
        started = self._clock()
        batch = self._next_batch(self._batch_points if limit is None else limit)
        if not batch.ids:
            return _Progress.IDLE
        self._counts["writes"] += 1
        try:
            result = self.sink.write(batch.points)
        except Exception as e:  # a bug in a sink must not stop the loop or lose the batch
            log.exception("delivery: sink %s raised instead of answering; will retry", self.sink.name)
            result = WriteResult.unreachable(e)
        if result.ok:
            self._delivered(batch)
            elapsed_s = self._clock() - started
            if elapsed_s > 0:
                rate = len(batch.ids) / elapsed_s
                old = self._rate_pts_per_s
                self._rate_pts_per_s = rate if old is None else 0.7 * old + 0.3 * rate
            return _Progress.MOVED
        self._counts["write_errors"] += 1
        if result.outcome is Outcome.REJECTED:
            self._rejected(batch, result)
            return _Progress.MOVED
        if result.outcome is Outcome.TOO_LARGE:
            self._too_large(batch, result)
            return _Progress.MOVED
        self._queue.appendleft(batch)  # keep it; nothing is lost
        self._back_off(result)
        return _Progress.BLOCKED

    def _delivered(self, batch: Batch) -> None:
        self.ledger.mark_delivered(batch.ids)
        self._counts["delivered_points"] += len(batch.ids)
        self._once.cleared_where(_is_alarm, "delivery to %s resumed after %d failed attempt(s)",
                                 self.sink.name, self._backoff.failures, level=logging.WARNING)
        self._backoff.succeeded()
        self._last = None

    def _split(self, batch: Batch) -> None:
        half = len(batch.ids) // 2
        self._queue.appendleft(Batch(batch.points[half:], batch.ids[half:]))
        self._queue.appendleft(Batch(batch.points[:half], batch.ids[:half]))
        self._counts["splits"] += 1

    def _rejected(self, batch: Batch, result: WriteResult) -> None:
        if len(batch.ids) > 1:
            self._split(batch)  # find the bad point(s); the good ones are sent again
            return
        reason = f"HTTP {result.status}: {result.detail}" if result.status else result.detail
        self.ledger.set_aside(batch.ids, reason, self._wall_ns())
        self._counts["rejected_points"] += 1
        p = batch.points[0]
        if not self._once.problem(
            "rejected",
            "delivery: %s refused a %s point as bad data (%s); it is set aside in the ledger's "
            "'rejected' table and not retried. Later rejections are only counted (rejected_points); "
            "inspect them with: sqlite3 %s 'SELECT * FROM rejected'",
            logging.WARNING, self.sink.name, p.measurement, reason, self.ledger.path,
        ):
            log.debug("delivery: set aside a %s point: %s", p.measurement, reason)

    def _too_large(self, batch: Batch, result: WriteResult) -> None:
        if len(batch.ids) == 1:
            self._rejected(batch, WriteResult(Outcome.REJECTED, result.status, f"too large alone: {result.detail}"))
            return
        self._batch_points = max(1, min(self._batch_points, len(batch.ids) // 2))
        self._once.problem(
            "too_large",
            "delivery: %s said a batch of %d points is too large (HTTP 413); sending at most %d per "
            "request from now on (raise the server's max body size to send more at once)",
            logging.WARNING, self.sink.name, len(batch.ids), self._batch_points,
        )
        self._split(batch)

    def _back_off(self, result: WriteResult) -> None:
        self._last = result
        if result.outcome is Outcome.RETRY:
            self._counts["retries"] += 1
        else:
            self._counts[result.outcome.value] += 1
        delay_s = self._backoff.failed(result.retry_after_s)  # never sooner than the server's Retry-After
        key = (_ALARM, result.outcome)
        if self._once.active(key):
            log.debug("delivery: %s again (%s); next try in %.1f s", result.outcome.value, result.detail, delay_s)
            return
        self._once.cleared_where(_is_alarm)  # a different problem replaces the one reported
        self._once.problem(key, *self._alarm_message(result, delay_s))

    def _alarm_message(self, result: WriteResult, delay_s: float) -> tuple[str, int]:
        """(message, level) for the first failure of a kind: what happened, what is kept, what to do."""
        name, spooled, detail = self.sink.name, self.backlog_points(), result.detail
        what = f"HTTP {result.status}" if result.status else "no answer"
        if result.outcome is Outcome.RETRY:
            return (f"delivery: {name} not available ({what}: {detail}); {spooled} point(s) kept in the spool, "
                    f"retrying with backoff (next in {delay_s:.1f} s)", logging.WARNING)
        if result.outcome is Outcome.UNAUTHORIZED:
            return (f"delivery: {name} REFUSED OUR CREDENTIALS ({what}: {detail}). Nothing is sent until this "
                    f"is fixed; {spooled} point(s) are kept in the spool (bounded: the oldest are dropped when "
                    "it is full). Fix [sink] token or username/password (WATTLEDGER_SINK_TOKEN / _USERNAME / "
                    "_PASSWORD), then check with: wattledger doctor", logging.ERROR)
        return (f"delivery: {name} cannot take our writes ({what}: {detail}): the database/bucket or URL is "
                f"probably wrong. {spooled} point(s) are kept in the spool. Fix [sink] url/database/bucket/org, "
                "check with: wattledger doctor", logging.ERROR)
