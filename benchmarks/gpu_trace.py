#!/usr/bin/env python3
"""Record, synthesise and report NVML traces of two tagged jobs sharing one GPU.

Three commands:

``record`` (a GPU host with torch and nvidia-ml-py): starts two PyTorch jobs
of different intensity on one GPU (fp16 matmul loops with duty cycles
0.8 and 0.3 by default; the light one holds more memory on purpose, so a
memory split would get it wrong) and runs these phases:
baseline (no process on the GPU: idle power), spawn, hold (both hold a
context, idle), heavy-alone, light-alone, shared, hold-end. Every tick it
reads the raw NVML values (energy counter mJ, averaged and instantaneous
power, compute/graphics processes with used memory, per-process utilisation
samples since the last tick), times one ``NvmlCollector.read`` on the real
library, and at the end writes a JSON-lines trace (format:
tests/fixtures/nvml/README.md) and prints the report below.

    python benchmarks/gpu_trace.py record --out tests/fixtures/nvml/h100-2jobs.jsonl

``synthetic``: the same phases simulated on the fake NVML (tests/fake_nvml.py)
with a simple power model; the trace is labelled synthetic. This is how
tests/fixtures/nvml/synthetic-2jobs.jsonl was made:

    python benchmarks/gpu_trace.py synthetic --out tests/fixtures/nvml/synthetic-2jobs.jsonl

``report TRACE``: replays a trace through the fake NVML, the real
NvmlCollector, the counter tracker, ``gpu_drivers`` and ``attribute`` and
prints: sum of per-job GPU energy vs the energy-counter delta; each job's
attributed dynamic energy per phase and per iteration, alone vs shared;
counter vs integrated power (instantaneous and 1 s averaged); collector cost
per tick (recorded on the real library for a recorded trace).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fake_nvml import (  # noqa: E402 - after the path set-up
    TRACE_FORMAT,
    TRACE_VERSION,
    FakeGpu,
    FakeNvml,
    Trace,
    UtilSample,
    load_trace,
)
from wattledger.accounting.attribution import Pool, StaticPolicy, attribute  # noqa: E402
from wattledger.accounting.counters import CounterTracker  # noqa: E402
from wattledger.accounting.gpu import GpuPools, gpu_drivers, measure_for, unexplained_job  # noqa: E402
from wattledger.model.jobs import JobKey  # noqa: E402
from wattledger.collectors.nvml import NvmlCollector  # noqa: E402

PHASES = ("heavy-alone", "light-alone", "shared")
GIB = 1 << 30


# -- the recorder: raw NVML readings of one GPU ---------------------------------------

def _err(nvml: Any, e: BaseException) -> dict[str, int]:
    return {"error": int(getattr(e, "value", -1))}


def _procs(rows: Any) -> list[dict[str, Any]]:
    return [{"pid": int(p.pid), "usedGpuMemory": None if p.usedGpuMemory is None else int(p.usedGpuMemory)}
            for p in rows]


def snapshot(nvml: Any, handle: Any, uuid: str, last_seen_us: int) -> tuple[dict[str, Any], int]:
    """One GPU's raw readings now; util samples newer than last_seen_us. Errors kept as {"error": code}."""
    rec: dict[str, Any] = {"uuid": uuid}
    calls = {
        "energy_mj": lambda: int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)),
        "power_mw": lambda: int(nvml.nvmlDeviceGetPowerUsage(handle)),
        "compute_procs": lambda: _procs(nvml.nvmlDeviceGetComputeRunningProcesses(handle)),
        "graphics_procs": lambda: _procs(nvml.nvmlDeviceGetGraphicsRunningProcesses(handle)),
    }
    for key, call in calls.items():
        try:
            rec[key] = call()
        except nvml.NVMLError as e:
            rec[key] = _err(nvml, e)
    try:
        fv = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
        rec["power_instant_mw"] = int(fv.value.uiVal) if int(fv.nvmlReturn) == 0 else {"error": int(fv.nvmlReturn)}
    except nvml.NVMLError as e:
        rec["power_instant_mw"] = _err(nvml, e)
    try:
        samples = nvml.nvmlDeviceGetProcessUtilization(handle, last_seen_us)
        rows = [{"pid": int(s.pid), "timeStamp": int(s.timeStamp), "smUtil": int(s.smUtil),
                 "memUtil": int(s.memUtil), "encUtil": int(s.encUtil), "decUtil": int(s.decUtil)}
                for s in samples if int(s.timeStamp) > last_seen_us]
        rec["util_samples"] = rows
        last_seen_us = max([last_seen_us] + [r["timeStamp"] for r in rows])
    except nvml.NVMLError as e:
        if e.value in (nvml.NVML_ERROR_NOT_FOUND, nvml.NVML_SUCCESS):
            rec["util_samples"] = []
        else:
            rec["util_samples"] = _err(nvml, e)
    return rec, last_seen_us


def write_trace(path: Path, header: dict[str, Any], ticks: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for obj in [header, *ticks, summary]:
            f.write(json.dumps(obj, separators=(",", ":")) + "\n")


def header_for(synthetic: bool, note: str, gpus: list[dict[str, Any]], jobs: dict[int, str],
               interval_s: float, workload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kind": "header", "format": TRACE_FORMAT, "version": TRACE_VERSION, "synthetic": synthetic,
            "note": note, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gpus": gpus,
            "jobs": {str(pid): tag for pid, tag in jobs.items()}, "interval_s": interval_s,
            "workload": workload, **extra}


# -- record: two real PyTorch jobs ------------------------------------------------------

def worker(args: argparse.Namespace) -> None:
    """A job: work for duty x period seconds of every period; commands on stdin.

    Backend ``torch``: fp16 matmuls on the GPU (the real thing). Backend
    ``cpu``: a Python busy loop, for smoke tests of the recorder on a fake GPU
    whose SM utilisation is the process's CPU utilisation (tests/fake_nvml_live.py).
    """
    if args.backend == "torch":
        import torch

        n = args.size
        a = torch.randn(n, n, device="cuda", dtype=torch.float16)
        b = torch.randn(n, n, device="cuda", dtype=torch.float16)
        c = torch.empty(n, n, device="cuda", dtype=torch.float16)
        ballast = torch.empty(int(args.extra_mem_gib * GIB), dtype=torch.uint8, device="cuda")  # noqa: F841
        torch.cuda.synchronize()

        def one_iteration() -> None:
            torch.matmul(a, b, out=c)
            torch.cuda.synchronize()
    else:
        def one_iteration() -> None:
            sum(range(20_000))
    print("ready", flush=True)
    phase, duty = "hold", 0.0
    counts: dict[str, int] = defaultdict(int)
    busy_s: dict[str, float] = defaultdict(float)
    while True:
        while select.select([sys.stdin], [], [], 0)[0]:
            line = sys.stdin.readline().split()
            if not line or line[0] == "stop":
                print(json.dumps({"iterations": counts, "busy_s": busy_s}), flush=True)
                return
            phase, duty = line[1], float(line[2])
        start = time.perf_counter()
        busy_until = start + duty * args.period_s
        while time.perf_counter() < busy_until:
            one_iteration()
            counts[phase] += 1
        busy_s[phase] += time.perf_counter() - start
        time.sleep(max(0.0, start + args.period_s - time.perf_counter()))


@dataclass
class Job:
    tag: str
    duty: float
    extra_mem_gib: float
    proc: subprocess.Popen | None = None
    nvml_pid: int | None = None
    ready: bool = False
    ready_at: float | None = None
    nvml_pid_guessed: bool = False
    result: dict[str, Any] = field(default_factory=dict)


def record(args: argparse.Namespace) -> None:
    import pynvml

    torch_version = "none (cpu backend)"
    if args.backend == "torch":
        import torch

        torch_version = torch.__version__
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
    uuid = pynvml.nvmlDeviceGetUUID(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    mig = pynvml.nvmlDeviceGetMigMode(handle)[0] if _try(lambda: pynvml.nvmlDeviceGetMigMode(handle)) else None
    if mig == pynvml.NVML_DEVICE_MIG_ENABLE:
        sys.exit("record: MIG is enabled on this GPU; trace format v1 records whole GPUs only")
    collector = NvmlCollector(pynvml)
    pools = GpuPools()
    probe = collector.probe()
    print(f"probe: {probe.state.value}: {probe.detail}", file=sys.stderr)
    jobs = [Job("heavy", args.heavy_duty, args.heavy_mem_gib), Job("light", args.light_duty, args.light_mem_gib)]
    schedule = [("hold", 0.0, 0.0), ("heavy-alone", args.heavy_duty, 0.0), ("light-alone", 0.0, args.light_duty),
                ("shared", args.heavy_duty, args.light_duty), ("hold-end", 0.0, 0.0)]
    ticks: list[dict[str, Any]] = []
    last_seen = 0
    phase, phase_end, step = "baseline", time.monotonic() + args.baseline_s, -1
    env = dict(os.environ, CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(args.gpu))
    agent = start_agent(args) if args.agent else None
    next_at = time.monotonic()
    known_pids: set[int] = set()
    try:
        while True:
            t_ns = time.time_ns()
            rec, last_seen = snapshot(pynvml, handle, uuid, last_seen)
            w0, c0 = time.perf_counter(), time.thread_time()
            pools.update(collector.read(t_ns))
            read_s, cpu_s = time.perf_counter() - w0, time.thread_time() - c0
            ticks.append({"kind": "tick", "t_ns": t_ns, "phase": phase, "gpus": [rec],
                          "collector_read_s": round(read_s, 6), "collector_cpu_s": round(cpu_s, 6)})
            pids = {p["pid"] for p in rec["compute_procs"]} if isinstance(rec["compute_procs"], list) else set()
            now = time.monotonic()
            if phase == "baseline" and now >= phase_end:
                phase = "spawn"
                known_pids = set(pids)
            if phase == "spawn":
                _spawn_next(jobs, env, args, pids, known_pids)
                if all(j.nvml_pid is not None for j in jobs):
                    step, phase = 0, schedule[0][0]
                    phase_end = now + args.phase_s
                    _command(jobs, schedule[0])
            elif step >= 0 and now >= phase_end:
                step += 1
                if step == len(schedule):
                    break
                phase = schedule[step][0]
                phase_end = now + (args.phase_s if phase != "hold-end" else args.baseline_s)
                _command(jobs, schedule[step])
            next_at += args.interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        for j in jobs:
            if j.proc is not None and j.proc.poll() is None:
                assert j.proc.stdin is not None and j.proc.stdout is not None
                j.proc.stdin.write("stop\n")
                j.proc.stdin.flush()
                line = j.proc.stdout.readline()
                j.result = json.loads(line) if line.strip() else {}
                j.proc.wait(timeout=30)
        agent_log = stop_agent(agent) if agent is not None else ""
    collector.close()
    driver = pynvml.nvmlSystemGetDriverVersion()
    real = args.backend == "torch"
    note = (f"RECORDED on {name} ({socket.gethostname()}), driver {driver}, torch {torch_version}" if real else
            f"SMOKE TEST (cpu backend, not a GPU measurement) on {name}, driver {driver}")
    header = header_for(
        not real, note, [{"index": args.gpu, "uuid": uuid, "name": name, "mig_mode": mig}],
        {j.nvml_pid: j.tag for j in jobs if j.nvml_pid is not None}, args.interval_s,
        {"backend": args.backend, "size": args.size, "period_s": args.period_s, "duty": {j.tag: j.duty for j in jobs},
         "extra_mem_gib": {j.tag: j.extra_mem_gib for j in jobs}},
        driver_version=driver, nvml_saw_processes=all(not j.nvml_pid_guessed for j in jobs))
    summary: dict[str, Any] = {
        "kind": "summary", "iterations": {j.tag: j.result.get("iterations", {}) for j in jobs},
        "busy_s": {j.tag: j.result.get("busy_s", {}) for j in jobs}}
    trace = Trace(header, ticks, summary)
    if agent is not None:
        try:
            summary["agent"] = agent_check(agent.state_dir, trace)
        except Exception as e:  # noqa: BLE001 - the trace is worth keeping even if this fails
            summary["agent"] = {"error": f"{type(e).__name__}: {e}", "log_tail": agent_log[-2000:]}
    write_trace(Path(args.out), header, ticks, summary)
    print(f"wrote {args.out}: {len(ticks)} ticks", file=sys.stderr)
    print_report(analyse(load_trace(Path(args.out))))


# -- the agent beside the recorder ----------------------------------------------------------

@dataclass
class AgentRun:
    proc: subprocess.Popen
    state_dir: Path
    log: Any  # the open log file


def start_agent(args: argparse.Namespace) -> AgentRun:
    """``wattledger agent`` on a fresh state dir, ledger only, ticking at the trace's interval."""
    import tempfile

    state_dir = Path(tempfile.mkdtemp(prefix="wl-gpu-trace-agent-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("WATTLEDGER_JOB", None)
    log = open(state_dir / "agent.log", "w")  # noqa: SIM115 - closed by stop_agent
    cmd = [sys.executable, "-m", "wattledger.cli.main", "agent", "--state-dir", str(state_dir),
           "--interval", str(args.interval_s), "--sink", "none"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"agent: pid {proc.pid}, state dir {state_dir}", file=sys.stderr)
    return AgentRun(proc, state_dir, log)


def stop_agent(agent: AgentRun) -> str:
    """SIGTERM (the service's stop), wait, and return its log."""
    proc = agent.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    agent.log.close()
    text = (agent.state_dir / "agent.log").read_text(errors="replace")
    if proc.returncode not in (0, -15):
        print(f"agent exited with {proc.returncode}:\n{text[-2000:]}", file=sys.stderr)
    return text


def counter_j_at(trace: Trace, uuid: str, t_ns: int) -> float | None:
    """The GPU's energy counter (J) at t_ns, linearly interpolated between the trace's ticks."""
    pts = [(t["t_ns"], g["energy_mj"] / 1000.0) for t in trace.ticks for g in t["gpus"]
           if g["uuid"] == uuid and isinstance(g.get("energy_mj"), int)]
    for (t0, e0), (t1, e1) in zip(pts, pts[1:]):
        if t0 <= t_ns <= t1 and t1 > t0 and e1 >= e0:
            return e0 + (e1 - e0) * (t_ns - t0) / (t1 - t0)
    return None


def agent_check(state_dir: Path, trace: Trace) -> dict[str, Any]:
    """What the agent's ledger charged for each GPU, against the counter the recorder read."""
    from wattledger.store.ledger import Ledger

    ledger = Ledger.in_state_dir(state_dir, readonly=True)
    try:
        nodes = [r for r in ledger.rows("wl_node") if r["component"] == "gpu"]
        jobs = [r for r in ledger.rows("wl_job") if r["component"] == "gpu"]
    finally:
        ledger.close()
    phases = [(t["t_ns"], t.get("phase", "")) for t in trace.ticks]

    def phase_at(t_ns: int) -> str:
        return next((ph for tt, ph in phases if tt >= t_ns), "after")

    out: dict[str, Any] = {"gpus": {}}
    for g in trace.header["gpus"]:
        uuid = g["uuid"]
        mine = [r for r in nodes if r["device"] == uuid and r["energy_j"] is not None]
        charged = [r for r in jobs if r["device"] == uuid and r["energy_j"] is not None]
        if not mine:
            out["gpus"][uuid] = {"error": "the agent wrote no wl_node row for this GPU"}
            continue
        per_tick: dict[int, float] = defaultdict(float)
        for r in charged:
            per_tick[int(r["time_ns"])] += float(r["energy_j"])
        worst = max(abs(per_tick[int(r["time_ns"])] - float(r["energy_j"])) for r in mine)
        # The counter comparison covers the agent's ticks that lie inside the recording
        # (the agent starts after the recorder and stops after it).
        first_ns, last_ns = trace.ticks[0]["t_ns"], trace.ticks[-1]["t_ns"]

        def start_of(r: dict[str, Any]) -> int:
            return int(r["time_ns"] - float(r["interval_s"] or 0.0) * 1e9)

        inside = [r for r in mine if start_of(r) >= first_ns and r["time_ns"] <= last_ns]
        c0 = counter_j_at(trace, uuid, start_of(inside[0])) if inside else None
        c1 = counter_j_at(trace, uuid, int(inside[-1]["time_ns"])) if inside else None
        by_phase: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for r in charged:
            by_phase[phase_at(int(r["time_ns"]))][str(r["job"])] += float(r["dynamic_j"] or 0.0)
        out["gpus"][uuid] = {
            "ticks": len(mine),
            "node_j": math.fsum(float(r["energy_j"]) for r in mine),
            "jobs_j": math.fsum(float(r["energy_j"]) for r in charged),
            "worst_tick_gap_j": worst,
            "node_j_in_window": math.fsum(float(r["energy_j"]) for r in inside),
            "counter_j_same_window": None if c0 is None or c1 is None else c1 - c0,
            "sources": sorted({str(r["source"]) for r in mine}),
            "dynamic_j_by_phase": {ph: dict(v) for ph, v in by_phase.items()},
        }
    return out


def _try(call: Any) -> bool:
    try:
        call()
        return True
    except Exception:  # noqa: BLE001 - only probing
        return False


def _spawn_next(jobs: list[Job], env: dict[str, str], args: argparse.Namespace, pids: set[int],
                known: set[int]) -> None:
    """Start the jobs one at a time; a job's NVML pid is the new pid on the GPU once it is ready.

    NVML reports host pids, which differ from Popen.pid inside a pid namespace
    (containers), hence matching by appearance rather than by Popen.pid. Where
    NVML shows no new process within --spawn-timeout-s of a job being ready
    (some sandboxes hide GPU processes), the job's own pid is used and the
    trace says so (``nvml_saw_processes: false``).
    """
    for j in jobs:
        if j.proc is None:
            j.proc = subprocess.Popen(
                [sys.executable, __file__, "worker", "--backend", args.backend, "--size", str(args.size),
                 "--period-s", str(args.period_s), "--extra-mem-gib", str(j.extra_mem_gib)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(env, WATTLEDGER_JOB=j.tag))
            return
        if j.nvml_pid is None:
            assert j.proc.stdout is not None
            if not j.ready and select.select([j.proc.stdout], [], [], 0)[0]:
                j.ready = j.proc.stdout.readline().strip() == "ready"
                if not j.ready:
                    raise SystemExit(f"worker {j.tag} failed to start (exit code {j.proc.poll()})")
                j.ready_at = time.monotonic()
            new = pids - known
            if j.ready and new:
                j.nvml_pid = j.proc.pid if j.proc.pid in new else min(new)
                known.add(j.nvml_pid)
            elif j.ready_at is not None and time.monotonic() - j.ready_at > args.spawn_timeout_s:
                print(f"record: NVML shows no new process for job {j.tag} after {args.spawn_timeout_s} s; "
                      f"using its pid {j.proc.pid}", file=sys.stderr)
                j.nvml_pid, j.nvml_pid_guessed = j.proc.pid, True
            return


def _command(jobs: list[Job], step: tuple[str, float, float]) -> None:
    phase, heavy, light = step
    for j, duty in zip(jobs, (heavy, light)):
        assert j.proc is not None and j.proc.stdin is not None
        j.proc.stdin.write(f"phase {phase} {duty}\n")
        j.proc.stdin.flush()


# -- synthetic: the same phases on the fake NVML ------------------------------------------

SYNTH_UUID = "GPU-00000000-5717-4e71-0000-000000000000"  # "SYNTHETIC": not a real board


def synthetic(args: argparse.Namespace) -> None:
    """Simulate the record phases with a simple power model; write a trace labelled synthetic.

    Model (10 ms steps): a job is "on" for duty x 100 ms of every 100 ms
    (phase-shifted); jobs on together share the SMs equally (time slicing);
    power = idle + dynamic x (SMs busy) + noise; an iteration costs 2 ms of
    SM time. The recorder is the same ``snapshot`` as for a real GPU.
    """
    rng = random.Random(args.seed)
    heavy_pid, light_pid = 4101, 4202
    gpu = FakeGpu(SYNTH_UUID, name="SYNTHETIC H100 (fake NVML, simulated)", energy_mj=987_654_321)
    fake = FakeNvml([gpu])
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    idle_w, dyn_w, step_s, period_s, iter_s = 70.0, 280.0, 0.01, 0.1, 0.002
    duty = {heavy_pid: args.heavy_duty, light_pid: args.light_duty}
    offset = {heavy_pid: 0.0, light_pid: 0.037}
    schedule = [("baseline", args.baseline_s, None), ("spawn", 3.0, (0.0, 0.0)), ("hold", args.phase_s, (0.0, 0.0)),
                ("heavy-alone", args.phase_s, (1.0, 0.0)), ("light-alone", args.phase_s, (0.0, 1.0)),
                ("shared", args.phase_s, (1.0, 1.0)), ("hold-end", args.baseline_s, (0.0, 0.0))]
    ticks: list[dict[str, Any]] = []
    last_seen = 0
    t_s = 0.0
    recent_power: deque[float] = deque(maxlen=int(1.0 / step_s))
    iterations: dict[str, dict[str, float]] = {"heavy": defaultdict(float), "light": defaultdict(float)}
    tag = {heavy_pid: "heavy", light_pid: "light"}
    steps_per_tick = int(round(args.interval_s / step_s))
    per_sample = int(round(1 / 6 / step_s))
    bucket: dict[int, float] = defaultdict(float)
    bucket_n = 0
    for phase, dur_s, on in schedule:
        gpu.compute = {} if on is None else {heavy_pid: int(args.heavy_mem_gib * GIB) + 600 * 2**20,
                                             light_pid: int(args.light_mem_gib * GIB) + 600 * 2**20}
        for _ in range(int(round(dur_s / args.interval_s))):
            for _ in range(steps_per_tick):
                active = []
                if on is not None:
                    for pid, enabled in zip((heavy_pid, light_pid), on):
                        if enabled and ((t_s + offset[pid]) % period_s) < duty[pid] * period_s:
                            active.append(pid)
                for pid in active:
                    share = 1.0 / len(active)
                    bucket[pid] += share
                    iterations[tag[pid]][phase] += share * step_s / iter_s
                power_w = idle_w + (dyn_w if active else 0.0) + rng.gauss(0.0, 2.0)
                recent_power.append(power_w)
                gpu.add_energy_j(power_w * step_s)
                t_s += step_s
                fake.now_us += int(step_s * 1e6)
                bucket_n += 1
                if bucket_n == per_sample:
                    for pid, busy in sorted(bucket.items()):
                        gpu.samples.append(UtilSample(pid=pid, timeStamp=fake.now_us, smUtil=round(100 * busy / bucket_n),
                                                      memUtil=round(40 * busy / bucket_n), encUtil=0, decUtil=0))
                    bucket.clear()
                    bucket_n = 0
            gpu.power_mw = int(round(statistics.fmean(recent_power) * 1000))
            gpu.power_instant_mw = int(round(recent_power[-1] * 1000))
            rec, last_seen = snapshot(fake, handle, gpu.uuid, last_seen)
            ticks.append({"kind": "tick", "t_ns": fake.now_ns, "phase": phase, "gpus": [rec]})
    header = header_for(
        True,
        "SYNTHETIC: simulated by benchmarks/gpu_trace.py synthetic on the fake NVML; not a measurement. "
        "It exercises the trace format and the replay; replace or add a recorded trace (gpu_trace.py record).",
        [{"index": 0, "uuid": gpu.uuid, "name": gpu.name, "mig_mode": 0}], {heavy_pid: "heavy", light_pid: "light"},
        args.interval_s,
        {"model": {"idle_w": idle_w, "dynamic_w": dyn_w, "noise_w_sd": 2.0, "iteration_sm_s": iter_s},
         "period_s": period_s, "duty": {"heavy": args.heavy_duty, "light": args.light_duty},
         "extra_mem_gib": {"heavy": args.heavy_mem_gib, "light": args.light_mem_gib}, "seed": args.seed})
    summary = {"kind": "summary",
               "iterations": {t: {p: round(v) for p, v in d.items()} for t, d in iterations.items()}}
    write_trace(Path(args.out), header, ticks, summary)
    print(f"wrote {args.out}: {len(ticks)} ticks (synthetic)", file=sys.stderr)
    print_report(analyse(load_trace(Path(args.out))))


# -- report: replay a trace through the real collector and attribution ----------------------

def baseline_idle_w(trace: Trace) -> dict[str, float]:
    """Mean power per GPU over the baseline phase, from the energy counter."""
    out: dict[str, float] = {}
    base = [t for t in trace.ticks if t.get("phase") == "baseline"]
    if len(base) < 2:
        return out
    for first in base[0]["gpus"]:
        last = next(g for g in base[-1]["gpus"] if g["uuid"] == first["uuid"])
        if isinstance(first.get("energy_mj"), int) and isinstance(last.get("energy_mj"), int):
            dt_s = (base[-1]["t_ns"] - base[0]["t_ns"]) / 1e9
            out[first["uuid"]] = (last["energy_mj"] - first["energy_mj"]) / 1000.0 / dt_s
    return out


def integrated_power_j(trace: Trace, uuid: str, key: str) -> tuple[float, float] | None:
    """(trapezoid integral of a power field, counter delta) over the ticks where both are numeric."""
    pts = []
    for t in trace.ticks:
        g = next((g for g in t["gpus"] if g["uuid"] == uuid), None)
        if g and isinstance(g.get(key), int) and isinstance(g.get("energy_mj"), int):
            pts.append((t["t_ns"] / 1e9, g[key] / 1000.0, g["energy_mj"] / 1000.0))
    if len(pts) < 2:
        return None
    integral = math.fsum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))
    return integral, pts[-1][2] - pts[0][2]


def analyse(trace: Trace) -> dict[str, Any]:
    from tests.fake_nvml import FakeNvml as _Fake

    fake = _Fake.from_trace(trace)
    collector = NvmlCollector(fake)
    pools = GpuPools()
    tracker = CounterTracker()
    job_of_pid = {pid: JobKey(tag) for pid, tag in trace.job_of_pid().items()}  # others: _untagged

    idle = baseline_idle_w(trace)
    per_phase: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    counter_j = 0.0
    charged_j = 0.0
    worst_gap_j = 0.0
    drivers: dict[str, int] = defaultdict(int)
    replay_cost_s: list[float] = []
    for tick in trace.ticks:
        fake.apply_tick(tick)
        t0 = time.perf_counter()
        sample = pools.update(collector.read(int(tick["t_ns"])))
        replay_cost_s.append(time.perf_counter() - t0)
        for r in sample.devices:
            d = tracker.delta(r.counter, sample.read_ns)
            if d is None or r.interval_s is None:
                continue
            driver_s, holders = gpu_drivers(r, job_of_pid)
            drivers[measure_for(r).value] += 1
            pool = Pool("gpu", r.device, r.counter.source, d.energy_j, r.interval_s, idle.get(r.device),
                        StaticPolicy.OCCUPANCY)
            charges = attribute(pool, driver_s, holders, unexplained_job(r))
            total = math.fsum(c.energy_j for c in charges.values())
            worst_gap_j = max(worst_gap_j, abs(total - d.energy_j))
            counter_j += d.energy_j
            charged_j += total
            phase = tick.get("phase", "")
            per_phase[phase]["_pool"]["energy_j"] += d.energy_j
            per_phase[phase]["_pool"]["seconds"] += r.interval_s
            for job, c in charges.items():
                row = per_phase[phase][job.tag]
                row["energy_j"] += c.energy_j
                row["dynamic_j"] += c.dynamic_j
                row["static_j"] += c.static_j
                row["driver_s"] += c.driver_s
    collector.close()
    first, last = trace.ticks[0], trace.ticks[-1]
    span = {}
    for g0 in first["gpus"]:
        g1 = next(g for g in last["gpus"] if g["uuid"] == g0["uuid"])
        if isinstance(g0.get("energy_mj"), int) and isinstance(g1.get("energy_mj"), int):
            span[g0["uuid"]] = (g1["energy_mj"] - g0["energy_mj"]) / 1000.0
    power = {}
    for g in trace.header["gpus"]:
        for key in ("power_instant_mw", "power_mw"):
            res = integrated_power_j(trace, g["uuid"], key)
            if res:
                power[f"{g['uuid']} {key}"] = res
    recorded_cost = [t["collector_read_s"] for t in trace.ticks if "collector_read_s" in t]
    recorded_cpu = [t["collector_cpu_s"] for t in trace.ticks if "collector_cpu_s" in t]
    return {"synthetic": trace.synthetic, "note": trace.header.get("note", ""), "idle_w": idle,
            "counter_j": counter_j, "charged_j": charged_j, "worst_tick_gap_j": worst_gap_j, "span_j": span,
            "per_phase": {p: {j: dict(v) for j, v in rows.items()} for p, rows in per_phase.items()},
            "iterations": trace.summary.get("iterations", {}), "power": power, "drivers": dict(drivers),
            "recorded_cost_s": recorded_cost, "recorded_cpu_s": recorded_cpu, "replay_cost_s": replay_cost_s,
            "ticks": len(trace.ticks), "agent": trace.summary.get("agent"),
            "nvml_saw_processes": trace.header.get("nvml_saw_processes", True)}


def _stats(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
    return f"mean {statistics.fmean(xs) * 1e3:.3f} ms, p50 {xs[len(xs) // 2] * 1e3:.3f} ms, " \
           f"p95 {p95 * 1e3:.3f} ms, max {xs[-1] * 1e3:.3f} ms over {len(xs)} ticks"


def print_report(res: dict[str, Any]) -> None:
    label = "SYNTHETIC trace (simulated, not a measurement)" if res["synthetic"] else "RECORDED trace"
    print(f"== {label}: {res['note']}")
    print("idle power from the baseline phase: " + ", ".join(f"{u}: {w:.1f} W" for u, w in res["idle_w"].items()))
    print("\n1. conservation")
    print(f"   sum of per-job GPU energy  {res['charged_j']:.3f} J")
    print(f"   energy-counter deltas      {res['counter_j']:.3f} J  (attributed ticks; worst tick gap "
          f"{res['worst_tick_gap_j']:.2e} J)")
    for uuid, j in res["span_j"].items():
        print(f"   counter first->last tick   {j:.3f} J on {uuid} (the first tick is the baseline read)")
    print(f"   dynamic driver used per pool-tick: {res['drivers']}")
    print("\n2. attributed dynamic energy per job, alone vs shared")
    print(f"   {'phase':<12} {'job':<10} {'dynamic_J':>10} {'static_J':>9} {'driver_s':>8} {'iters':>8} {'mJ/iter':>8}")
    per_iter: dict[str, dict[str, float]] = defaultdict(dict)
    for phase in ("hold", *PHASES):
        rows = res["per_phase"].get(phase, {})
        for job in sorted(j for j in rows if j != "_pool"):
            row = rows[job]
            iters = res["iterations"].get(job, {}).get(phase)
            mj = row["dynamic_j"] / iters * 1e3 if iters else float("nan")
            if iters:
                per_iter[job][phase] = mj
            print(f"   {phase:<12} {job:<10} {row['dynamic_j']:>10.1f} {row['static_j']:>9.1f} "
                  f"{row['driver_s']:>8.2f} {iters if iters is not None else '-':>8} {mj:>8.3f}")
    for job, alone in (("heavy", "heavy-alone"), ("light", "light-alone")):
        a, s = per_iter.get(job, {}).get(alone), per_iter.get(job, {}).get("shared")
        if a and s:
            print(f"   {job}: {a:.3f} mJ/iteration alone, {s:.3f} shared ({(s / a - 1) * 100:+.1f}%)")
    print("\n3. energy counter vs integrated power")
    for key, (integral, counter) in res["power"].items():
        print(f"   {key:<60} integral {integral:10.1f} J, counter {counter:10.1f} J "
              f"({(integral / counter - 1) * 100 if counter else float('nan'):+.2f}%)")
    print("\n4. collector cost per tick (NvmlCollector.read)")
    if res["recorded_cost_s"]:
        print(f"   on the real NVML, wall: {_stats(res['recorded_cost_s'])}")
        print(f"   on the real NVML, CPU:  {_stats(res['recorded_cpu_s'])}")
    else:
        print("   no real-library timings in this trace")
    print(f"   replay on the fake NVML (not a hardware cost): {_stats(res['replay_cost_s'])}")
    if not res["nvml_saw_processes"]:
        print("\n!! NVML listed no process for at least one job: per-process attribution was not exercised")
    agent = res.get("agent")
    print("\n5. the agent (`wattledger agent`, run beside the recorder): its ledger vs the counter")
    if not agent:
        print("   not run (record --no-agent, or a trace from before this check)")
    elif "error" in agent:
        print(f"   failed: {agent['error']}")
    else:
        for uuid, g in agent["gpus"].items():
            if "error" in g:
                print(f"   {uuid}: {g['error']}")
                continue
            counter = g["counter_j_same_window"]
            in_window = g.get("node_j_in_window", g["node_j"])
            diff = f"({(in_window / counter - 1) * 100:+.2f}%)" if counter else ""
            print(f"   {uuid}: {g['ticks']} ticks, source {','.join(g['sources'])}")
            print(f"   sum of per-job GPU energy {g['jobs_j']:.3f} J, wl_node {g['node_j']:.3f} J "
                  f"(worst tick gap {g['worst_tick_gap_j']:.2e} J)")
            if counter is not None:
                print(f"   agent's ticks inside the recording: wl_node {in_window:.3f} J, the recorder's counter "
                      f"over the same span {counter:.3f} J {diff}")
            for phase in ("hold", *PHASES):
                row = g["dynamic_j_by_phase"].get(phase)
                if row:
                    print(f"   {phase:<12} dynamic J by job: " +
                          ", ".join(f"{job} {j:.1f}" for job, j in sorted(row.items())))


# -- CLI ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", required=True)
        sp.add_argument("--interval-s", type=float, default=1.0)
        sp.add_argument("--phase-s", type=float, default=20.0)
        sp.add_argument("--baseline-s", type=float, default=10.0)
        sp.add_argument("--heavy-duty", type=float, default=0.8)
        sp.add_argument("--light-duty", type=float, default=0.3)
        sp.add_argument("--heavy-mem-gib", type=float, default=1.0)
        sp.add_argument("--light-mem-gib", type=float, default=6.0)

    rec = sub.add_parser("record", help="run two PyTorch jobs on a real GPU and record a trace")
    common(rec)
    rec.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU")
    rec.add_argument("--size", type=int, default=8192, help="matmul size (fp16)")
    rec.add_argument("--period-s", type=float, default=0.1)
    rec.add_argument("--backend", choices=["torch", "cpu"], default="torch",
                     help="torch: matmuls on the GPU; cpu: busy loops, for smoke tests on a fake GPU")
    rec.add_argument("--agent", action=argparse.BooleanOptionalAction, default=True,
                     help="run `wattledger agent` beside the recorder and check its ledger [default: on]")
    rec.add_argument("--spawn-timeout-s", type=float, default=30.0,
                     help="how long to wait for NVML to show a ready job's process")
    syn = sub.add_parser("synthetic", help="simulate the phases on the fake NVML")
    common(syn)
    syn.add_argument("--seed", type=int, default=1)
    rep = sub.add_parser("report", help="replay a trace and print the report")
    rep.add_argument("trace")
    rep.add_argument("--json", action="store_true")
    wk = sub.add_parser("worker", help=argparse.SUPPRESS)
    wk.add_argument("--backend", choices=["torch", "cpu"], default="torch")
    wk.add_argument("--size", type=int, required=True)
    wk.add_argument("--period-s", type=float, required=True)
    wk.add_argument("--extra-mem-gib", type=float, required=True)
    args = p.parse_args(argv)
    if args.cmd == "record":
        record(args)
    elif args.cmd == "synthetic":
        synthetic(args)
    elif args.cmd == "report":
        res = analyse(load_trace(Path(args.trace)))
        if args.json:
            res.pop("replay_cost_s")
            print(json.dumps(res, indent=1, default=str))
        else:
            print_report(res)
    else:
        worker(args)


if __name__ == "__main__":
    main()
