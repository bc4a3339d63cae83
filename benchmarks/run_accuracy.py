"""`wattledger run` at any length: busy loops of 0.1 s to 30 s of CPU, on a live fake powercap tree and on this VM.

On the tree (tests/live_powercap.py: P = 20 W + 10 W per busy vCPU, DRAM 3 W)
the truth for a command of c CPU seconds (``cpu_s``, the kernel's figure
when ``run`` reaps it) is 10 W x c + (20 W + 3 W) x c / ncpu: its dynamic
energy plus its capacity share of the idle draw. On this VM (no counters)
the figures are the model's estimate: they must be non-zero and flagged.

    .venv/bin/python benchmarks/run_accuracy.py [--lengths 0.1 0.5 3 30] [--repeat 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import machine  # noqa: E402
from tests.live_powercap import LinearModel, LivePowercap, busy_reader  # noqa: E402

BUSY = "import sys, time\nend = time.process_time() + float(sys.argv[1])\nwhile time.process_time() < end: pass\n"


def wl_run(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "wattledger.cli.main", "run", "--json", "--no-record",
                        "--no-service", *args], capture_output=True, text=True, timeout=600, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def on_tree(lengths: list[float], repeat: int) -> list[dict[str, Any]]:
    model = LinearModel()
    rows = []
    with tempfile.TemporaryDirectory(prefix="wl-run-acc-") as tmp:
        cfg = Path(tmp) / "config.toml"
        cfg.write_text('[agent]\nestimate = "never"\ngpus = "never"\n'
                       f'[attribution]\nidle_power_w = {{ cpu = {model.idle_w}, dram = {model.dram_w} }}\n')
        with LivePowercap(Path(tmp) / "sysfs", model) as tree:
            for cpu_s in lengths:
                errors, stalled, diluted, last = [], [], [], {}
                for _ in range(repeat):
                    before = tree.stalls()
                    last = wl_run("--config", str(cfg), "--sysfs-root", str(tree.root), "-t", f"loop-{cpu_s:g}",
                                  "--", sys.executable, "-c", BUSY, str(cpu_s))
                    truth = model.true_charge_j(last["cpu_s"], os.cpu_count() or 1)
                    errors.append(100 * (last["energy_j"] / truth - 1))
                    stalled.append(tree.stalls() > before)
                    diluted.append(last["diluted_pct"])
                rows.append({"loop_s": cpu_s, "cpu_s": last["cpu_s"], "wall_s": last["duration_s"],
                             "energy_j": last["energy_j"], "truth_j": model.true_charge_j(last["cpu_s"], os.cpu_count() or 1),
                             "errors_pct": errors, "stalled": stalled, "diluted_pct": diluted,
                             "worst_pct": max((e for e, d in zip(errors, diluted) if d < 2.0), key=abs,
                                              default=0.0)})
    return rows


def on_vm(lengths: list[float]) -> list[dict[str, Any]]:
    rows = []
    for cpu_s in lengths:
        out = wl_run("-t", f"vm-loop-{cpu_s:g}", "--", sys.executable, "-c", BUSY, str(cpu_s))
        rows.append({"loop_s": cpu_s, "cpu_s": out["cpu_s"], "energy_j": out["energy_j"],
                     "by_component_j": out["energy_by_component_j"], "source": out["source"],
                     "estimated": out["estimated"]})
    return rows


def _cell(error: float, stalled: bool, diluted: float) -> str:
    return f"{error:+.1f}" + ("*" if stalled else "") + (f" [{diluted:.0f}]" if diluted >= 2.0 else "")


def markdown(report: dict[str, Any], command: str) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; tree busy time "
             f"from {report['busy_source']}. Command: `{command}`", "",
             "| loop (CPU s) | cpu_s | wall s | run J | truth J | error per run, % (* tree stalled; [d]: run said "
             "diluted d%) | worst undiluted |",
             "|---:|---:|---:|---:|---:|---|---:|"]
    for r in report["tree"]:
        lines.append(f"| {r['loop_s']:g} | {r['cpu_s']:.3f} | {r['wall_s']:.2f} | {r['energy_j']:.3f} | "
                     f"{r['truth_j']:.3f} | {', '.join(_cell(e, s, d) for e, s, d in zip(r['errors_pct'], r['stalled'], r['diluted_pct']))} "
                     f"| {r['worst_pct']:+.1f} |")
    lines += ["", "On this VM (model estimate, no counters):", "",
              "| loop (CPU s) | cpu_s | energy J | cpu J | dram J | source | flagged |", "|---:|---:|---:|---:|---:|---|---|"]
    for r in report["vm"]:
        c = r["by_component_j"]
        lines.append(f"| {r['loop_s']:g} | {r['cpu_s']:.3f} | {r['energy_j']:.3f} | {c.get('cpu', 0):.3f} | "
                     f"{c.get('dram', 0):.3f} | {r['source']} | {'ESTIMATE' if r['estimated'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=float, nargs="+", default=[0.1, 0.5, 3.0, 30.0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    report: dict[str, Any] = {"machine": machine(), "busy_source": busy_reader()[0],
                              "tree": on_tree(args.lengths, args.repeat), "vm": on_vm(args.lengths)}
    report["worst_pct"] = max((r["worst_pct"] for r in report["tree"]), key=abs)
    report["mean_abs_pct"] = statistics.fmean(abs(e) for r in report["tree"] for e in r["errors_pct"])
    cmd = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    print(markdown(report, cmd) if args.markdown else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
