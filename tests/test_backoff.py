"""util.backoff: the one retry-timing rule (delivery, carbon APIs, sinks' Retry-After)."""

from __future__ import annotations

import email.utils

import pytest

from wattledger.util import backoff
from wattledger.util.backoff import MAX_RETRY_AFTER_S, Backoff, backoff_s, parse_retry_after


def test_equal_jitter_under_a_doubling_cap() -> None:
    assert [backoff_s(n, 2.0, 5.0, lambda: 0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 2.5, 2.5]
    assert [backoff_s(n, 2.0, 5.0, lambda: 1.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]
    assert backoff_s(10_000, 1.0, 300.0, lambda: 1.0) == 300.0  # no overflow after many failures
    assert backoff_s(0, 1.0, 300.0, lambda: 1.0) == 1.0


def test_retry_after_seconds_date_garbage_and_cap() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now_s=now) == pytest.approx(42.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=now) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("  ") is None
    assert parse_retry_after("soon") is None and parse_retry_after("nan") is None and parse_retry_after("inf") is None
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("99999999") == MAX_RETRY_AFTER_S
    assert parse_retry_after("3600", cap_s=86_400.0) == 3600.0


def test_backoff_schedules_counts_and_honours_retry_after() -> None:
    now = [100.0]
    b = Backoff(1.0, 10.0, clock=lambda: now[0], rng=lambda: 1.0)
    assert b.due() and b.wait_s == 0.0
    assert b.failed() == 1.0 and b.failures == 1 and not b.due() and b.wait_s == 1.0
    assert b.failed(retry_after_s=60.0) == 60.0 and b.next_at == 160.0
    now[0] = 160.0
    assert b.due()
    b.allow_now()
    assert b.failures == 2 and b.due()
    b.succeeded()
    assert b.failures == 0 and b.wait_s == 0.0


def test_one_copy_of_the_rule() -> None:
    """The sinks and the carbon client use util.backoff, not copies of their own."""
    from wattledger.agent.sinks import base
    from wattledger.carbon import http

    assert base.parse_retry_after is backoff.parse_retry_after
    assert base.MAX_RETRY_AFTER_S == backoff.MAX_RETRY_AFTER_S
    assert http.parse_retry_after is backoff.parse_retry_after and http.backoff_s is backoff.backoff_s
