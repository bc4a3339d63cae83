"""The stdout sink as the loop uses it: once per tick, printed and flushed at once, unsafe points skipped."""

from __future__ import annotations

import io

from wattledger.agent.sinks import Outcome, StdoutSink
from wattledger.model.points import WL_JOB, WL_NODE, Point


class CountingStream(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_each_write_is_printed_and_flushed_at_once_nothing_spooled() -> None:
    out = CountingStream()
    sink = StdoutSink(out)
    assert sink.remote is False  # the ledger spools nothing for it; no deliverer retries it
    tick1 = [Point(WL_NODE, {"host": "h", "component": "cpu"}, {"energy_j": 2.0}, 5)]
    assert sink.write(tick1).ok and out.getvalue() == "wl_node,component=cpu,host=h energy_j=2 5\n"
    assert out.flushes == 1
    assert sink.write([]).ok and out.flushes == 2  # an empty tick prints nothing


def test_an_unsafe_point_is_skipped_the_rest_of_the_tick_printed() -> None:
    out = io.StringIO()
    bad = Point(WL_JOB, {"host": "h", "job": "a\nb"}, {"energy_j": 1.0}, 7)
    good = Point(WL_JOB, {"host": "h", "job": "ok"}, {"energy_j": 1.0}, 7)
    result = StdoutSink(out).write([bad, good, bad])
    assert out.getvalue() == "wl_job,host=h,job=ok energy_j=1 7\n"  # never a half line, never the newline
    assert result.outcome is Outcome.REJECTED
    assert result.detail.startswith("2 of 3 point(s) not printed; first: a point (wl_job): tag 'job'")
