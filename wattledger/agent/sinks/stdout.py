"""Line protocol on stdout: for piping into another tool, and for seeing what would be sent.

Local and immediate: ``remote`` is False, so the ledger spools nothing for it
and no deliverer retries it. The agent loop calls ``write`` once per tick with
the tick's points; each call prints at once and flushes. A point that line
protocol cannot carry (an unsafe tag, no finite field: ``base.encode_lines``)
is skipped, never half-printed, and the rest of the tick is still printed;
the result is then ``rejected``, naming the first skipped point and the count,
for the caller to report (once). A closed or broken stream is ``retry``
(nothing printed; the caller decides whether to go on).
"""

from __future__ import annotations

import sys
from typing import TextIO

from wattledger.model.points import Point
from wattledger.agent.sinks.base import Outcome, WriteResult, encode_lines
from wattledger.model.readings import ProbeResult, SourceState

SOURCE = "stdout"


class StdoutSink:
    name = SOURCE
    remote = False

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        # Looked up per call, so a redirected sys.stdout (tests, click) is honoured.
        return self._stream if self._stream is not None else sys.stdout

    def write(self, points: list[Point]) -> WriteResult:
        """Print every point that can be encoded, now; REJECTED (after printing the rest) if any could not."""
        lines: list[str] = []
        skipped: list[WriteResult] = []
        for p in points:
            encoded = encode_lines([p])
            if isinstance(encoded, WriteResult):
                skipped.append(encoded)
            else:
                lines.extend(encoded)
        try:
            if lines:
                self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError) as e:  # ValueError: closed file
            return WriteResult.unreachable(e)
        if skipped:
            first = skipped[0].detail.replace("point 0 ", "a point ", 1)
            return WriteResult(Outcome.REJECTED, None, f"{len(skipped)} of {len(points)} point(s) not printed; "
                                                       f"first: {first}")
        return WriteResult.success()

    def probe(self) -> ProbeResult:
        return ProbeResult(SOURCE, SourceState.FOUND, "line protocol on standard output")

    def close(self) -> None:
        pass
