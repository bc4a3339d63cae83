#!/usr/bin/env python3
"""Our side of the NVML collector's cost per tick: NvmlCollector.read through the real pynvml.

Without a GPU the driver's own time (its ioctls) cannot be measured, but
everything above it can: the collector's Python, the attribution inputs it
builds, and pynvml's ctypes marshalling (structures, the two-call buffer
protocol), with the real pynvml loaded over tests/fake_nvml_driver.py, whose
answers cost next to nothing. That is the floor of the collector's cost; on
a GPU host add the driver's time per call (benchmarks/gpu_trace.py record
measures the whole of it).

Per configuration (GPUs x processes per GPU, all of them busy, utilisation
samples every 0.2 s, 1 s between reads): CPU time of one read (thread CPU
time) minus the CPU time the fake driver spent answering (it times itself),
over 300 reads after 10 warm-up reads. Appends its table to RESULTS.md
with --write.

    python benchmarks/nvml_cost.py [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import machine_line  # noqa: E402
from tests.fake_nvml import FakeGpu, FakeNvml, Load  # noqa: E402
from tests.fake_nvml_driver import real_pynvml  # noqa: E402
from wattledger.accounting.gpu import GpuPools  # noqa: E402
from wattledger.collectors.nvml import NvmlCollector  # noqa: E402

CONFIGS = [(1, 2), (1, 16), (8, 2), (8, 16)]
READS, WARMUP = 300, 10


def measure(gpus: int, procs: int) -> dict[str, float]:
    pids = {g: [10_000 + 100 * g + k for k in range(procs)] for g in range(gpus)}
    fake = FakeNvml([FakeGpu(f"GPU-{g:02d}", compute={p: 1 << 30 for p in pids[g]}) for g in range(gpus)])
    loads = {g: Load(300.0, {p: 100.0 / procs for p in pids[g]}) for g in range(gpus)}
    cpu_s: list[float] = []
    ours_s: list[float] = []
    with real_pynvml(fake) as driver:
        collector = NvmlCollector(driver.pynvml)
        pools = GpuPools()
        collector.probe()
        for n in range(WARMUP + READS):
            fake.step(1.0, loads)
            for gpu in fake.gpus:  # the fake keeps every sample; a driver keeps a short buffer
                gpu.samples = gpu.samples[-10 * procs:]
            t0, fake0 = time.thread_time(), driver.cpu_s
            sample = pools.update(collector.read(fake.now_ns))
            if n >= WARMUP:
                spent = time.thread_time() - t0
                cpu_s.append(spent)
                ours_s.append(spent - (driver.cpu_s - fake0))
            assert len(sample.devices) == gpus and not sample.failures
        collector.close()
    ours_s.sort()
    mean_s = statistics.fmean(ours_s)
    return {"total_ms": statistics.fmean(cpu_s) * 1e3, "mean_ms": mean_s * 1e3,
            "p95_ms": ours_s[int(0.95 * len(ours_s))] * 1e3, "per_gpu_ms": mean_s * 1e3 / gpus,
            "core_pct_at_1s": mean_s * 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    rows = []
    for gpus, procs in CONFIGS:
        r = measure(gpus, procs)
        rows.append(f"| {gpus} | {procs} | {r['mean_ms']:.3f} | {r['p95_ms']:.3f} | {r['per_gpu_ms']:.3f} | "
                    f"{r['core_pct_at_1s']:.3f} | {r['total_ms']:.3f} |")
    text = "\n".join([
        "",
        "## NVML collector, our side of the cost (issue 5)",
        "",
        "`NvmlCollector.read` through the real pynvml (nvidia-ml-py) loaded over the fake "
        "`libnvidia-ml` of tests/fake_nvml_driver.py, which answers in next to no time: the "
        "collector's Python and pynvml's ctypes marshalling, not the driver's ioctls (those need "
        "a GPU: `benchmarks/gpu_trace.py record`). All processes busy, samples every 0.2 s, 1 s "
        f"between reads, {READS} reads after {WARMUP} warm-up. The fake driver's own CPU time (its "
        "Python, timed inside every answer) is subtracted; the last column keeps it.",
        "",
        f"Machine: {machine_line()}. Command: `.venv/bin/python benchmarks/nvml_cost.py --write`",
        "",
        "| GPUs | processes per GPU | our CPU ms per read (mean) | p95 ms | ms per GPU | % of a core at 1 s ticks "
        "| with the fake driver's own time, ms |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    print(text)
    if args.write:
        with open(REPO / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
