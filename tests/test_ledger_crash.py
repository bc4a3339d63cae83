"""Issue 14: kill -9 during compaction, again and again at random points: after each restart the ledger's
totals equal what was written, every rollup bucket equals its raw ticks, and Σ jobs = node still holds."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.test_ledger_rollups import DAY_NS, HOUR_NS, NS_PER_S, T0, Key, conserved, expected, stored, tick
from wattledger.model.points import WL_JOB, Point
from wattledger.store.ledger import LEDGER_FILE, Ledger
from wattledger.store.quantize import quantize

REPO = Path(__file__).resolve().parent.parent
STEP_S = 5

COMPACT = """
import sys
sys.path.insert(0, {repo!r})
from wattledger.store.compact import Compactor, Retention
from wattledger.store.ledger import Ledger
ledger = Ledger({path!r})
print("open", flush=True)
Compactor(ledger, Retention(raw_s=3 * 3600.0, minutes_s=8 * 3600.0, hours_s=1e9), budget_s=0.002).catch_up({now})
print("done", flush=True)
"""


def batches(first_hour: int, hours: int, rnd: random.Random) -> list[list[Point]]:
    """Ticks every STEP_S seconds over ``hours`` hours from ``first_hour``, in appends of ~2000 points."""
    out: list[list[Point]] = []
    batch: list[Point] = []
    per_hour = 3600 // STEP_S
    for i in range(first_hour * per_hour, (first_hour + hours) * per_hour):
        t = T0 + i * STEP_S * NS_PER_S + rnd.randrange(NS_PER_S)
        batch += tick(t, [rnd.uniform(0, 300), rnd.uniform(0, 3000), rnd.uniform(0, 3000)],
                      [[rnd.choice([0, 1, 2.5]) for _ in range(4)] for _ in range(3)], interval_s=float(STEP_S))
        if len(batch) > 2000:
            out.append(batch)
            batch = []
    return out + [batch]


class Written:
    """What was appended, summed as the ledger must hold it: per (series, level, bucket) and per job."""

    def __init__(self) -> None:
        self.buckets: dict[Key, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.by_job: dict[str, int] = defaultdict(int)

    def add(self, points: list[Point]) -> None:
        for key, cell in expected([points]).items():
            for f, v in cell.items():
                have = self.buckets[key]
                if f == "first_ns":  # job_tick's extrema: the bucket's first tick start, its last tick end
                    have[f] = min(have.get(f, v), v)
                elif f == "last_ns":
                    have[f] = max(have.get(f, v), v)
                else:
                    have[f] += v
        for q in quantize(points):
            if q.point.measurement == WL_JOB:
                self.by_job[q.point.tags["job"]] += q.ints["energy_j"] or 0


def check(path: Path, written: Written) -> None:
    ledger = Ledger(path)
    try:
        db = ledger.connection()
        for key, cell in stored(db).items():
            assert cell == dict(written.buckets[key]), key  # a bucket holds exactly its raw ticks
        conserved(db)
        sums = ledger.sums(WL_JOB, "energy_j", ("job",), 0, T0 + DAY_NS * 10)
        got: dict[str, int] = defaultdict(int)
        for _, (job,), e in sums.cells:
            got[job] += round(e * 1e6)
        assert {j: v for j, v in got.items() if v} == {j: v for j, v in written.by_job.items() if v}
    finally:
        ledger.close()


@pytest.mark.slow
def test_kill_9_during_compaction_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """Each trial: more ticks arrive, compaction starts (tiny pieces, as on a busy agent), kill -9 at a
    random moment, then the whole ledger is checked against every tick ever written."""
    path = tmp_path / LEDGER_FILE
    rnd = random.Random(11)
    ledger, written = Ledger(path), Written()
    kills, hour = 0, 0
    for trial in range(15):
        for points in batches(hour, 3, rnd):
            ledger.append(points)
            written.add(points)
        hour += 3
        now = T0 + hour * HOUR_NS
        proc = subprocess.Popen([sys.executable, "-c", COMPACT.format(repo=str(REPO), path=str(path), now=now)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        time.sleep(rnd.uniform(0.0, 0.1))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        kills += proc.returncode == -signal.SIGKILL and "done" not in out
        check(path, written)
    ledger.close()
    assert kills >= 10  # most trials were cut off mid-compaction
    done = subprocess.run([sys.executable, "-c", COMPACT.format(repo=str(REPO), path=str(path),
                                                                now=T0 + hour * HOUR_NS)],
                          capture_output=True, text=True, timeout=300)
    assert "done" in done.stdout, done.stderr
    check(path, written)
    meta = Ledger(path, readonly=True).meta()
    assert int(meta["kept:wl_job_raw"]) > T0 and int(meta["folded:wl_job_1h"]) > T0  # it did fold and prune
