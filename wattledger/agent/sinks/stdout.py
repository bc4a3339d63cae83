"""Line protocol on stdout: for piping into another tool, and for seeing what would be sent."""

from __future__ import annotations

import sys
from typing import TextIO

from wattledger.model.points import Point
from wattledger.agent.sinks.base import WriteResult, encode_lines
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
        lines = encode_lines(points)
        if isinstance(lines, WriteResult):
            return lines
        try:
            if lines:
                self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError) as e:  # ValueError: closed file
            return WriteResult.unreachable(e)
        return WriteResult.success()

    def probe(self) -> ProbeResult:
        return ProbeResult(SOURCE, SourceState.FOUND, "line protocol on standard output")

    def close(self) -> None:
        pass
