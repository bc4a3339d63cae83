"""``report --job/--user/--project``: a researcher finds their own figures among everyone's."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from wattledger.cli.main import main
from wattledger.model.points import WL_JOB, Point
from wattledger.store.ledger import Ledger

T0 = 1_700_000_000_000_000_000


def job_point(t_ns: int, job: str, user: str, project: str, energy_j: float) -> Point:
    return Point(WL_JOB, {"host": "h", "job": job, "user": user, "project": project, "component": "cpu",
                          "device": "package-0", "source": "rapl"},
                 {"energy_j": energy_j, "dynamic_j": energy_j, "static_j": 0.0, "driver_s": 1.0}, t_ns)


def test_filters_keep_only_the_named_job_user_and_project(tmp_path: Path) -> None:
    ledger = Ledger.in_state_dir(tmp_path)
    points = []
    for i in range(30):
        points.append(job_point(T0 + i * 10**9, f"job-{i % 3}", ["alice", "bob"][i % 2], f"p{i % 2}", 100.0))
    ledger.append(points)
    ledger.close()
    base = ["report", "--config", "/dev/null", "--state-dir", str(tmp_path), "--since", "2023-11-14",
            "--until", "2023-11-16", "--format", "json", "--zone", "FR"]

    def rows(*extra: str) -> list[dict]:
        r = CliRunner().invoke(main, [*base, *extra])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["rows"]

    assert len(rows()) == 6  # 3 jobs x 2 users
    mine = rows("--job", "job-1")
    assert {(r["job"], r["user"]) for r in mine} == {("job-1", "alice"), ("job-1", "bob")}
    only = rows("--job", "job-1", "--user", "bob")
    assert [(r["job"], r["user"]) for r in only] == [("job-1", "bob")]
    assert only[0]["it_kwh"] * 3.6e6 == 500.0  # 5 of the 30 points
    assert {r["user"] for r in rows("--user", "alice")} == {"alice"}
    assert {r["job"] for r in rows("--project", "p0")} == {"job-0", "job-1", "job-2"}
    assert rows("--job", "nobody-ran-this") == []
