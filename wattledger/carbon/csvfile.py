"""Your own intensity series from a CSV file (``[carbon] csv_path``).

Format: a header row, then one row per interval::

    timestamp,g_per_kwh
    2024-03-05T00:00:00Z,212.5
    1709600400,198.0

``timestamp`` is the start of the interval the figure describes, ISO-8601
(UTC when no zone is given) or Unix seconds. An optional ``kind`` column
(actual | forecast | marginal) is kept; without it rows are ``actual``. Blank
lines and lines starting with ``#`` are ignored. A bad row stops the read
with its line number: a silently skipped hour would be reported as static.
"""

from __future__ import annotations

import csv
from pathlib import Path

from wattledger.carbon.base import ACTUAL, KINDS, CarbonProviderError, IntensityPoint
from wattledger.util.timeutil import NS_PER_S, BadTime, parse_iso_ns


def _time_ns(text: str) -> int:
    s = text.strip()
    try:
        return int(round(float(s) * NS_PER_S))
    except ValueError:
        return parse_iso_ns(s)


class CsvFile:
    name = "csv"

    def __init__(self, zone: str, path: str | Path) -> None:
        if not str(path):
            raise CarbonProviderError("csv: no file; set [carbon] csv_path to a CSV of timestamp,g_per_kwh")
        self.zone = zone
        self.path = Path(path)

    def read(self) -> list[IntensityPoint]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise CarbonProviderError(f"csv: cannot read {self.path}: {e.strerror or e}; check [carbon] csv_path") from None
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
                 if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            return []
        reader = csv.reader([line for _, line in lines])
        header = [h.strip().lower() for h in next(reader)]
        if "timestamp" not in header or "g_per_kwh" not in header:
            raise CarbonProviderError(
                f"csv: {self.path} line {lines[0][0]}: header must name timestamp and g_per_kwh, got {header}"
            )
        it, ig = header.index("timestamp"), header.index("g_per_kwh")
        ik = header.index("kind") if "kind" in header else None
        out: dict[int, IntensityPoint] = {}
        for (lineno, _), row in zip(lines[1:], reader):
            try:
                t = _time_ns(row[it])
                g = float(row[ig])
                kind = row[ik].strip().lower() if ik is not None and len(row) > ik and row[ik].strip() else ACTUAL
            except (IndexError, ValueError, BadTime) as e:
                raise CarbonProviderError(f"csv: {self.path} line {lineno}: {e}") from None
            if kind not in KINDS:
                raise CarbonProviderError(f"csv: {self.path} line {lineno}: kind must be one of {', '.join(KINDS)}")
            if g < 0:
                raise CarbonProviderError(f"csv: {self.path} line {lineno}: negative intensity {g}")
            out[t] = IntensityPoint(t, g, self.zone, self.name, kind)
        return sorted(out.values(), key=lambda p: p.time_ns)

    def fetch(self, since_ns: int, until_ns: int) -> list[IntensityPoint]:
        return [p for p in self.read() if since_ns <= p.time_ns < until_ns]
