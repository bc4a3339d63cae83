"""What issue 17's safeguards add to every tick: the counter checkpoint and the tag guard.

* checkpoint (``agent/restart.py``): every commit writes the counters'
  readings (JSON) into the ledger's ``meta`` in the tick's own transaction.
  Measured as the difference between appending a tick with and without them
  to a real ledger in a state dir on the disk under ``--dir`` (default: the
  repository's, like /var/lib), for a host with 2 packages + 2 DRAM zones and
  8 GPUs (12 ``wl_node`` points a tick).
* tag guard (``accounting/tags.py``): every pool's charges pass through
  ``TagGuard.fold``; the usual tick (every tag set admitted before) and a tick
  in which every job is new to the day.

    .venv/bin/python benchmarks/faults_cost.py [--ticks 2000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wattledger.accounting.attribution import Charge  # noqa: E402
from wattledger.accounting.gpu import GpuPools  # noqa: E402
from wattledger.accounting.resume import CounterStore  # noqa: E402
from wattledger.accounting.tags import TagGuard  # noqa: E402
from wattledger.agent.pools import CpuPools  # noqa: E402
from wattledger.agent.restart import checkpoint  # noqa: E402
from wattledger.model.jobs import JobKey  # noqa: E402
from wattledger.model.points import WL_NODE, Point  # noqa: E402
from wattledger.model.readings import EnergyCounter  # noqa: E402
from wattledger.model.units import NS_PER_S  # noqa: E402
from wattledger.store.ledger import Ledger  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _appends_us(ledger: Ledger, ticks: int, first: int, state: Callable[[int], dict[str, str] | None]
                ) -> tuple[float, float]:
    """(wall, CPU) microseconds per tick appended (12 wl_node points) with ``state(k)`` as its meta."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for k in range(first, first + ticks):
        points = [Point(WL_NODE, {"host": "h", "component": "gpu", "device": f"GPU-{i}", "source": "nvml"},
                        {"energy_j": 300.0, "power_w": 300.0, "interval_s": 1.0}, k * NS_PER_S) for i in range(12)]
        ledger.append(points, state(k))
    return (time.perf_counter() - start) / ticks * 1e6, (time.process_time() - cpu_start) / ticks * 1e6


def checkpoint_us(state_dir: Path, ticks: int) -> tuple[float, float]:
    """(wall, CPU) microseconds a tick's commit spends on the counters' readings."""
    cpu, gpu = CpuPools(), GpuPools()
    for i in range(2):
        cpu.tracker.delta(EnergyCounter("cpu", f"package-{i}", "rapl", 1_000, 2**32), 1)
        cpu.tracker.delta(EnergyCounter("dram", f"package-{i}", "rapl", 1_000, 2**32), 1)
    for i in range(8):
        gpu._tracker.delta(EnergyCounter("gpu", f"GPU-{i:04x}", "nvml", 1_000), 1)
    store = CounterStore("boot")
    ledger = Ledger.in_state_dir(state_dir)
    try:
        plain = _appends_us(ledger, ticks, 0, lambda k: None)
        with_state = _appends_us(ledger, ticks, ticks, lambda k: checkpoint(store, cpu, gpu, [], k))
    finally:
        ledger.close()
    return with_state[0] - plain[0], with_state[1] - plain[1]


def guard_us(ticks: int, jobs: int, fresh: bool) -> float:
    guard = TagGuard(cap=100_000)
    charges = {JobKey(f"job-{i}", f"user-{i % 10}", "proj", "train"): Charge(1.0, 0.5, 1.0) for i in range(jobs)}
    start = time.perf_counter()
    for k in range(ticks):
        if fresh:
            charges = {JobKey(f"job-{k}-{i}", f"user-{i % 10}"): c for i, c in enumerate(charges.values())}
        guard.fold(charges, k)
    return (time.perf_counter() - start) / ticks * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=REPO, help="where the temporary state dir goes (its disk counts)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wl-faults-cost-", dir=args.dir) as tmp:
        wall, ck = checkpoint_us(Path(tmp), args.ticks)
    usual = guard_us(args.ticks, 40, fresh=False)
    new = guard_us(args.ticks // 4, 40, fresh=True)
    print(f"checkpoint, 12 counters, in the tick's transaction: {ck:.0f} us of CPU per tick ({ck / 1e4:.3f}% of a "
          f"core at 1 s ticks), {wall:.0f} us of wall time")
    print(f"tag guard, 40 jobs in a pool: {usual:.1f} us per pool and tick (all admitted), "
          f"{new:.0f} us (all new to the day)")


if __name__ == "__main__":
    main()
