"""util.logonce: a problem is reported once, and again only after it cleared."""

from __future__ import annotations

import logging

import pytest

from wattledger.util.logonce import LogOnce

log = logging.getLogger("wattledger.test.logonce")


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == log.name]


def test_once_until_cleared_then_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    once = LogOnce(log)
    assert once.problem(("read", "rapl"), "rapl: read failed: %s", logging.WARNING, "EIO")
    assert not once.problem(("read", "rapl"), "rapl: read failed: %s", logging.WARNING, "EIO")
    assert once.active(("read", "rapl")) and once.active()
    assert not once.cleared(("read", "nvml"), "never reported: silent")
    assert once.cleared(("read", "rapl"), "rapl: reading again")
    assert not once.cleared(("read", "rapl"), "rapl: reading again")
    assert once.problem(("read", "rapl"), "rapl: read failed: %s", logging.ERROR, "ENODEV")
    assert messages(caplog) == [
        (logging.WARNING, "rapl: read failed: EIO"),
        (logging.INFO, "rapl: reading again"),
        (logging.ERROR, "rapl: read failed: ENODEV"),
    ]


def test_repeats_at_debug_and_clearing_by_predicate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    once = LogOnce(log, repeat_level=logging.DEBUG)
    once.problem(("gpu-1", "fail:lost"), "lost")
    once.problem(("gpu-1", "fail:lost"), "lost")
    once.problem(("gpu-2", "fail:lost"), "lost too")
    assert once.cleared_where(lambda k: isinstance(k, tuple) and k[0] == "gpu-1", "gpu-1 %s", "back",
                              level=logging.WARNING)
    assert not once.active(("gpu-1", "fail:lost")) and once.active(("gpu-2", "fail:lost"))
    assert once.clear_all() and not once.active() and not once.clear_all("nothing was active")
    assert messages(caplog) == [
        (logging.WARNING, "lost"), (logging.DEBUG, "lost"), (logging.WARNING, "lost too"),
        (logging.WARNING, "gpu-1 back"),
    ]


def test_a_message_with_a_percent_sign_and_no_args_is_logged_as_is(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    LogOnce(log).problem("disk", "disk 100% full")
    assert messages(caplog) == [(logging.WARNING, "disk 100% full")]
