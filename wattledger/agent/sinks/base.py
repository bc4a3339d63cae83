"""What every sink shares: the write outcome classes and how HTTP answers map onto them.

Sinks are deliberately dumb (telegraf's outputs are the model): ``write`` makes
exactly one attempt and says what happened; it never retries, sleeps or drops
anything by itself. The spool (``agent.ledger``) and the retry policy
(``agent.delivery``) live in one place, so that "marked delivered only after a
2xx" holds for every sink alike.

Status codes (docs/delivery.md has the same table):

====================  ================  =============================================
HTTP answer           outcome           what the deliverer does
====================  ================  =============================================
2xx                   ok                mark the points delivered
400, 422              rejected          bad data: split down to the bad point(s),
                                        set those aside, log once, never retry them
401, 403              unauthorized      keep everything, one loud error, back off
404, other 4xx, 3xx   misconfigured     database/bucket/URL wrong: as unauthorized
413                   too_large         split the batch in halves and send each
408, 429, 5xx,        retry             back off (exponential, jittered), at least
timeouts, refused                       as long as the server's Retry-After
====================  ================  =============================================
"""

from __future__ import annotations

import enum
import json
import logging
import re
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

from wattledger.model.points import Point
from wattledger.model.readings import ProbeResult
# The longest server-requested wait we honour (a bogus "Retry-After: 86400" must
# not silence delivery for a day: the spool would fill and drop data), and the parser.
from wattledger.util.backoff import MAX_RETRY_AFTER_S, parse_retry_after
from wattledger.util.logonce import LogOnce
from wattledger.util.redact import redact_text

__all__ = [
    "Expired", "MAX_RETRY_AFTER_S", "Outcome", "Sink", "WriteResult", "classify", "describe_error", "encode_lines",
    "error_message", "parse_retry_after", "unsafe_tag",
]
_MAX_DETAIL_CHARS = 300


class Outcome(str, enum.Enum):
    OK = "ok"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"
    MISCONFIGURED = "misconfigured"
    TOO_LARGE = "too_large"
    RETRY = "retry"


@dataclass(frozen=True)
class WriteResult:
    """The classified outcome of one write attempt."""

    outcome: Outcome
    status: int | None = None          # HTTP status; None when no answer came back
    detail: str = ""                   # the server's own words, shortened; never a credential
    retry_after_s: float | None = None  # from Retry-After, when the server sent one

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @classmethod
    def success(cls, status: int | None = None) -> "WriteResult":
        return cls(Outcome.OK, status)

    @classmethod
    def unreachable(cls, error: BaseException) -> "WriteResult":
        """A timeout, refused connection, reset, DNS failure: try again later."""
        return cls(Outcome.RETRY, None, describe_error(error))


@runtime_checkable
class Sink(Protocol):
    """Where points go besides the local ledger. One attempt per ``write``."""

    name: str
    remote: bool  # True when points leave the host (the ledger then spools them)

    def write(self, points: list[Point]) -> WriteResult: ...

    def probe(self) -> ProbeResult: ...

    def close(self) -> None: ...


class Expired:
    """Points a sink left out as older than their tier's retention (sinks/routing.py): counted, said once."""

    def __init__(self, sink_name: str) -> None:
        self.sink_name = sink_name
        self.points = 0
        self._once = LogOnce(logging.getLogger("wattledger.sink"))

    def count(self, n: int) -> None:
        if n <= 0:
            return
        self.points += n
        self._once.problem("expired", "%s: %d point(s) older than their tier's retention ([influx] raw_days, "
                           "minutes_days, hours_days) were not sent: InfluxDB would refuse them. Their energy "
                           "is in the minute and hour sums, which are sent; later ones are only counted",
                           logging.WARNING, self.sink_name, n)


_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>:?\s*")


def describe_error(error: BaseException) -> str:
    """``Type: message`` without urllib3's ``<...Connection object at 0x...>`` noise."""
    return _shorten(redact_text(f"{type(error).__name__}: {_OBJECT_REPR.sub('', str(error))}"))


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 3] + "..."


def error_message(body: bytes | str | None, headers: Mapping[str, str] | None = None) -> str:
    """The server's explanation: v2 ``{"code","message"}``, v1 ``{"error"}``, else header/text."""
    text = ""
    if isinstance(body, bytes):
        text = body.decode("utf-8", "replace")
    elif isinstance(body, str):
        text = body
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            msg = doc.get("message") or doc.get("error")
            if msg:
                code = doc.get("code")
                return _shorten(f"{code}: {msg}" if code else str(msg))
    if not text and headers is not None:
        text = _header(headers, "X-Influxdb-Error") or ""
    return _shorten(text)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None:  # plain dicts are case-sensitive
        lowered = name.lower()
        for k, v in headers.items():
            if str(k).lower() == lowered:
                return str(v)
    return None if value is None else str(value)


def classify(status: int, body: bytes | str | None = None, headers: Mapping[str, str] | None = None) -> WriteResult:
    """Map one HTTP answer to an outcome (the table in the module docstring)."""
    detail = error_message(body, headers) if not 200 <= status < 300 else ""
    if 200 <= status < 300:
        return WriteResult(Outcome.OK, status)
    if status in (400, 422):
        return WriteResult(Outcome.REJECTED, status, detail)
    if status in (401, 403):
        return WriteResult(Outcome.UNAUTHORIZED, status, detail)
    if status == 413:
        return WriteResult(Outcome.TOO_LARGE, status, detail)
    if status in (408, 429) or status >= 500:
        return WriteResult(Outcome.RETRY, status, detail, parse_retry_after(_header(headers, "Retry-After")))
    return WriteResult(Outcome.MISCONFIGURED, status, detail)


# Tag values that line protocol cannot carry faithfully through influxdb-client's
# escaping: control characters (newline, tab and CR come out as two characters;
# a NUL breaks InfluxDB 1.x's error header), and a backslash before a space,
# comma, '=', another backslash or the end. The library does not escape
# backslashes, so InfluxDB's line splitter and its tag parser read such a value
# differently: with a '="' after it, the splitter takes the newline into a
# "quoted string" and two lines of the batch run together. Job tags, projects
# and phases never hold these (jobs.sanitise_tag); a backslash before a letter
# (DOMAIN\user names) is safe and passes.
_UNSAFE_TAG_VALUE = re.compile(r"[\x00-\x1f\x7f]|\\(?=[\\ ,=]|$)")


def unsafe_tag(point: Point) -> str | None:
    """The first tag whose value line protocol cannot carry faithfully, or None."""
    for key, value in point.tags.items():
        if value and _UNSAFE_TAG_VALUE.search(value):
            return key
    return None


def encode_lines(points: Sequence[Point]) -> list[str] | WriteResult:
    """Line protocol for each point (escaping by influxdb-client), or REJECTED if one cannot be written.

    A point that has no finite field (NaN/inf are left out by the library), a
    value that is not a number, or a tag value line protocol cannot carry
    (``_UNSAFE_TAG_VALUE``) can never be stored as it is; rejecting the batch
    lets the deliverer split it down to that point and set it aside alone,
    without ever sending it.
    """
    lines: list[str] = []
    for i, p in enumerate(points):
        bad_tag = unsafe_tag(p)
        if bad_tag is not None:
            return WriteResult(
                Outcome.REJECTED, None,
                f"point {i} ({p.measurement}): tag '{bad_tag}' holds a control character or a backslash before "
                "a space, comma, '=', backslash or its end, which line protocol cannot carry; sanitise it where "
                "it is made (jobs.sanitise_tag)",
            )
        try:
            line = p.to_line()
        except (TypeError, ValueError) as e:
            return WriteResult(Outcome.REJECTED, None, _shorten(f"point {i} ({p.measurement}) cannot be encoded: {e}"))
        if not line:
            return WriteResult(Outcome.REJECTED, None, f"point {i} ({p.measurement}) has no finite field value")
        lines.append(line)
    return lines
