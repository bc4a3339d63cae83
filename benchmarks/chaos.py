"""The chaos run of issue 17, with figures: random kill -9s of the real agent, one disk-full episode and
one influxd outage, tagged CPU burners on a live fake powercap tree (tests/chaos.py drives it).

    sudo .venv/bin/python benchmarks/chaos.py [--kills 30] [--seed 17] [--json]

It needs root (the state dir lives on a small tmpfs so the disk can be filled) and Debian's influxd
(scripts/test.sh installs it). It prints what the counter counted, what the ledger charged (per job,
``_unobserved`` being the restarts' gaps), how the ticks tile the run, and how InfluxDB compares with
the ledger; the figures go into benchmarks/RESULTS.md ("Chaos").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos import ChaosFigures, Plan, run_chaos  # noqa: E402


def table(f: ChaosFigures) -> str:
    rows = [
        ("kill -9s", f"{f.kills}"),
        ("run", f"{f.run_s:.1f} s ({f.node_ticks} ticks of the package pool)"),
        ("disk full / influxd down", f"{f.disk_full_s:.1f} s / {f.outage_s:.1f} s"),
        ("counter delta", f"{f.counted_j:.6f} J"),
        ("Σ wl_node", f"{f.node_j:.6f} J ({f.node_j - f.counted_j:+.2e})"),
        ("Σ wl_job (with _unobserved)", f"{f.jobs_j:.6f} J ({f.jobs_j - f.counted_j:+.2e})"),
        ("_unobserved", f"{f.unobserved_j:.3f} J in {f.gap_rows} gap rows "
                        f"({100 * f.unobserved_j / f.counted_j if f.counted_j else 0:.1f}%)"),
        ("duplicate ticks", f"{f.duplicate_ticks}"),
        ("intervals / span", f"{f.covered_s:.3f} s / {f.span_s:.3f} s"),
        ("points: ledger / InfluxDB", f"{f.ledger_points} / {f.influx_points} "
                                      f"(missing {f.missing_in_influx}, extra {f.extra_in_influx})"),
        ("lost (disk) / dropped (spool)", f"{f.lost_points} / {f.dropped_points}"),
    ]
    rows += [(f"  job {job}", f"{j:.3f} J") for job, j in f.per_job_j.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=30, help="how many times the agent is killed (default 30)")
    ap.add_argument("--seed", type=int, default=17, help="the random plan's seed (default 17)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--keep", type=Path, help="run in this (new) directory and keep it: agents' logs, "
                                              "influxd's data, the final state dir (state-after)")
    args = ap.parse_args()
    outage = (max(1, args.kills // 2), max(2, args.kills * 3 // 4))
    plan = Plan(kills=args.kills, seed=args.seed, disk_full=(max(1, args.kills // 4), max(2, args.kills // 4 + 2)),
                outage=outage)
    if args.keep:
        args.keep.mkdir(parents=True)
        figures = run_chaos(args.keep.resolve(), plan)
    else:
        with tempfile.TemporaryDirectory(prefix="wattledger-chaos-") as work:
            figures = run_chaos(Path(work), plan)
    print(json.dumps(figures.as_dict(), indent=2) if args.json else table(figures))


if __name__ == "__main__":
    main()
