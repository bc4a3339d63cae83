"""Hostile tags against the real InfluxDB: they never break a batch or add a measurement, tag key or field.

Job tags pass through ``jobs.sanitise_tag`` (the rule) and must then round-trip
unchanged. Values that skip the rule (user/project/phase handed straight to a
Point) must still not break the batch they travel in: either they are stored
exactly as given, or the point is set aside alone, because the sink refuses a
value line protocol cannot carry (control characters; a backslash before a
space, comma, '=', backslash or the end) or the server refuses its series key
(over InfluxDB's 64 KiB limit).
"""

from __future__ import annotations

import itertools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.influx_server import InfluxServer
from wattledger.agent.delivery import Deliverer
from wattledger.model.jobs import MAX_TAG_CHARS, sanitise_tag
from wattledger.store.ledger import Ledger
from wattledger.model.points import SCHEMA, WL_JOB, WL_NODE, Point
from wattledger.agent.sinks import InfluxV1Sink

pytestmark = pytest.mark.influx

T0 = 1_700_000_000_000_000_000
MAX_SERIES_KEY_BYTES = 65_535  # InfluxDB 1.x/2.x: longer series keys are refused (a partial write)
_clock = itertools.count(1)

NASTY = list(' ,="\'\n\r\t\\\x00\x0b\u2028\u00e9\u20ac\U0001F600#{}$;|&<>`') + ["\\ ", "\\,", "\\=", "\\\n", ' =', "=\\"]
nasty_text = st.one_of(
    st.lists(st.sampled_from(NASTY + ["a", "b", "1", "wl_node", "energy_j=1", "job=x"]), min_size=1, max_size=30).map("".join),
    st.text(min_size=1, max_size=40),
    # 10 kB strings of one awkward character (some far beyond the 64 KiB series-key limit in UTF-8)
    st.builds(lambda c, n: c * n, st.sampled_from(NASTY + ["x", "é", "😀"]), st.integers(1_000, 10_000)),
)


def schema_sets(server: InfluxServer, db: str) -> tuple[set[str], set[str], set[str]]:
    measurements = {r["name"] for r in server.series_values("SHOW MEASUREMENTS", db)}
    tag_keys = {r["tagKey"] for r in server.series_values("SHOW TAG KEYS", db)}
    field_keys = {r["fieldKey"] for r in server.series_values("SHOW FIELD KEYS", db)}
    return measurements, tag_keys, field_keys


def assert_schema_intact(server: InfluxServer, db: str) -> None:
    measurements, tag_keys, field_keys = schema_sets(server, db)
    assert measurements <= {WL_JOB, WL_NODE}, measurements
    assert tag_keys <= set(SCHEMA[WL_JOB][0]) | set(SCHEMA[WL_NODE][0]), tag_keys
    assert field_keys <= set(SCHEMA[WL_JOB][1]) | set(SCHEMA[WL_NODE][1]), field_keys


def job_point(t_ns: int, job: str, user: str = "alice", project: str = "", phase: str = "", e: float = 1.0) -> Point:
    return Point(WL_JOB, {"host": "h1", "job": job, "user": user, "project": project, "phase": phase,
                          "component": "cpu", "device": "package-0", "source": "rapl"},
                 {"energy_j": e, "dynamic_j": e, "static_j": 0.0, "driver_s": 0.1}, t_ns)


def stored_at(server: InfluxServer, db: str, t_ns: int) -> list[dict]:
    return server.series_values(f"SELECT energy_j, job, \"user\", project, phase FROM wl_job WHERE time = {t_ns}", db)


@pytest.fixture(scope="module")
def hostile_db(influxd: InfluxServer) -> str:
    influxd.create_db("hostile")
    return "hostile"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_job=nasty_text, raw_project=nasty_text, raw_phase=nasty_text)
def test_sanitised_tags_round_trip_unchanged(influxd: InfluxServer, hostile_db: str, raw_job: str,
                                             raw_project: str, raw_phase: str) -> None:
    job = sanitise_tag(raw_job) or "_untagged"
    project = sanitise_tag(raw_project) or ""
    phase = sanitise_tag(raw_phase) or ""
    for v in (job, project, phase):
        assert len(v) <= MAX_TAG_CHARS and "\n" not in v and " " not in v and "," not in v
    t = T0 + next(_clock)
    batch = [job_point(t, "before"), job_point(t, job, project=project, phase=phase, e=2.0), job_point(t, "after")]
    result = InfluxV1Sink(influxd.url, hostile_db).write(batch)
    assert result.ok, result
    rows = {r["job"]: r for r in stored_at(influxd, hostile_db, t)}
    assert set(rows) == {"before", job, "after"}
    assert rows[job]["energy_j"] == 2.0
    assert (rows[job]["project"] or "", rows[job]["phase"] or "") == (project, phase)
    assert_schema_intact(influxd, hostile_db)


def cannot_be_carried(v: str) -> bool:
    """The sink's refusal rule, restated: control characters, or a backslash before [space , = \\] or the end."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in v):
        return True
    return any(c == "\\" and (i + 1 == len(v) or v[i + 1] in "\\ ,=") for i, c in enumerate(v))


def test_why_such_values_are_refused_before_sending(influxd: InfluxServer) -> None:
    """The library leaves backslashes alone; InfluxDB's line splitter then sees an unescaped space, takes '="' for
    the start of a string field and swallows the newline: the rest of the batch is lost with that one line."""
    import urllib3

    influxd.create_db("why")
    lines = [job_point(T0 + 1, "nasty", phase='\\ \\="').to_line(), job_point(T0 + 2, "good").to_line(),
             job_point(T0 + 3, "good2").to_line()]
    resp = urllib3.PoolManager(retries=False).request(
        "POST", f"{influxd.url}/write?db=why&precision=ns", body="\n".join(lines).encode())
    assert resp.status == 400
    assert influxd.series_values("SELECT energy_j FROM wl_job", "why") == []  # the good lines went with it
    assert cannot_be_carried('\\ \\="') and not cannot_be_carried("DOMAIN\\alice")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=nasty_text, project=nasty_text, phase=nasty_text,
       more=st.lists(st.tuples(nasty_text, nasty_text, nasty_text), max_size=2))
@example(user="😀" * 10_000, project="😀" * 10_000, phase="x", more=[])  # 80 kB series key: refused, alone
@example(user="a\\", project="p\nq\tr", phase='" ,=\\ job=evil energy_j=1e9', more=[])
@example(user="\\" * 10_000, project="\n" * 10_000, phase="=" * 10_000, more=[])
# found by hypothesis: swallowed the rest of the batch, and the NUL echoed in the 400's header broke the response
@example(user="0", project="0", phase='\x00\\ \\="', more=[])
@example(user="DOMAIN\\alice", project="a b,c=d", phase='"quoted"', more=[('x="', "y", '"')])  # stored unchanged
def test_unsanitised_values_never_break_a_batch(influxd: InfluxServer, tmp_path_factory: pytest.TempPathFactory,
                                                user: str, project: str, phase: str,
                                                more: list[tuple[str, str, str]]) -> None:
    db = "unsanitised"
    influxd.create_db(db)
    ledger = Ledger(tmp_path_factory.mktemp("hostile") / "l.sqlite3", spool=True)
    t = T0 + next(_clock)
    values = [(user, project, phase), *more]
    nasty = [job_point(t, f"nasty{k}", user=u, project=p, phase=ph, e=5.0 + k) for k, (u, p, ph) in enumerate(values)]
    good = [job_point(t, f"good{i}", e=float(i)) for i in range(4)]
    ledger.append([good[0], nasty[0], good[1], *nasty[1:], good[2], good[3]])
    d = Deliverer(ledger, InfluxV1Sink(influxd.url, db), step_budget_s=60)
    d.step()
    counts = ledger.spool_counts()
    assert counts["spooled"] == 0
    rows = {r["job"]: r for r in stored_at(influxd, db, t)}
    assert {f"good{i}" for i in range(4)} <= set(rows)  # the batch survived
    expected_rejected = 0
    for k, (point, triple) in enumerate(zip(nasty, values)):
        series_key = point.to_line().rsplit(" ", 2)[0]  # fields and timestamp hold no spaces
        refused = any(cannot_be_carried(v) for v in triple)
        too_long = len(series_key.encode()) > MAX_SERIES_KEY_BYTES
        # Set aside (alone) exactly when the sink refuses a value or the server refuses the series key.
        if refused or too_long:
            expected_rejected += 1
            assert f"nasty{k}" not in rows
        else:  # stored: exactly as given
            row = rows[f"nasty{k}"]
            assert row["energy_j"] == 5.0 + k
            assert (row["user"], row["project"], row["phase"]) == triple
    assert counts["rejected"] == expected_rejected
    assert_schema_intact(influxd, db)
    ledger.close()
