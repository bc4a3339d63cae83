"""The GPU in the tick loop: wl_node/wl_job rows per GPU pool, failures isolated, doctor rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import NvmlApi
from tests import fake_nvml as F
from tests.fake_nvml import FakeGpu, FakeNvml, Load
from wattledger.cli.main import main
from wattledger.config import Config, Gpus
from wattledger.model.jobs import IDLE_JOB, SYSTEM_JOB, JobKey
from wattledger.store.ledger import Ledger
from tests.clocks import FakeClock
from wattledger.agent.factory import build_agent, choose_gpu_collector
from wattledger.agent.loop import Agent
from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergyCounter, EnergySample
from wattledger.collectors.nvml import NvmlCollector
from wattledger.model.activity import ProcSample

GIB = 1 << 30
T0 = 1_700_000_000_000_000_000
A = JobKey("llm-a", "alice", "nlp", "train")
B = JobKey("vision-b", "bob")


class FakeCpu:
    """A CPU package counter rising 50 J per second of fake time."""

    name = "fakecpu"

    def read(self, read_ns: int) -> EnergySample:
        return EnergySample(read_ns, (EnergyCounter("cpu", "package-0", "fake", int((read_ns - T0) / 1e9 * 50e6)),))


class Procs:
    name = "procfs"

    def __init__(self) -> None:
        self.last_ns: int | None = None

    def read(self, read_ns: int, want_pids: Sequence[int] = ()) -> ProcSample:
        interval = None if self.last_ns is None else (read_ns - self.last_ns) / 1e9
        self.last_ns = read_ns
        drivers = {} if interval is None else {A: 0.5 * interval}
        jobs = {pid: {101: A, 102: B}.get(pid, JobKey("_untagged", "")) for pid in want_pids}
        return ProcSample(read_ns, interval is None, 0.5 * (interval or 0), 2 * (interval or 0), 2, drivers, {A: 1.0},
                          jobs)


def make_agent(tmp_path: Path, fake: FakeNvml, cfg: Config | None = None,
               api: NvmlApi = lambda fake: fake) -> tuple[Agent, list[Point]]:
    cfg = cfg or Config()
    cfg.attribution.idle_power_w = {"gpu": 60.0, "cpu": 10.0}
    points: list[Point] = []
    agent = build_agent(cfg, Ledger.in_state_dir(tmp_path), energy=[FakeCpu()], procs=Procs(),
                        clock=FakeClock(lambda: fake.now_ns), host="gpu01", gpu=NvmlCollector(api(fake)),
                        on_tick=lambda r: points.extend(r.points))
    return agent, points


def rows(points: list[Point], measurement: str, component: str, device: str | None = None) -> list[Point]:
    return [p for p in points if p.measurement == measurement and p.tags["component"] == component
            and (device is None or p.tags["device"] == device)]


def gpus() -> FakeNvml:
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: 2 * GIB, 102: 2 * GIB}), FakeGpu("GPU-b")],
                    start_us=T0 // 1000)
    return fake


def test_one_node_row_per_gpu_and_job_rows_that_sum_to_it(tmp_path: Path, nvml_api: NvmlApi) -> None:
    fake = gpus()
    agent, points = make_agent(tmp_path, fake, api=nvml_api)
    agent.commit(agent.tick())
    fake.step(2.0, {0: Load(360.0, {101: 75, 102: 25}), 1: Load(70.0)})
    agent.commit(agent.tick())
    node_a = rows(points, WL_NODE, "gpu", "GPU-a")
    assert len(node_a) == 1 and node_a[0].tags["source"] == "nvml"
    assert node_a[0].fields["energy_j"] == pytest.approx(720.0)
    assert node_a[0].fields["interval_s"] == pytest.approx(2.0)
    jobs_a = {p.tags["job"]: p.fields for p in rows(points, WL_JOB, "gpu", "GPU-a")}
    assert math.fsum(f["energy_j"] for f in jobs_a.values()) == pytest.approx(720.0)
    # dynamic 720 - 2 s x 60 W = 600 J split 3:1 by SM-busy seconds; static 120 J by memory 1:1
    assert jobs_a["llm-a"]["dynamic_j"] == pytest.approx(450.0)
    assert jobs_a["vision-b"]["dynamic_j"] == pytest.approx(150.0)
    assert jobs_a["llm-a"]["static_j"] == pytest.approx(60.0)
    assert jobs_a["llm-a"]["driver_s"] == pytest.approx(1.5)
    # GPU-b held by nobody: all of its energy is idle (static up to its idle power, the rest too)
    jobs_b = {p.tags["job"]: p.fields for p in rows(points, WL_JOB, "gpu", "GPU-b")}
    assert set(jobs_b) == {IDLE_JOB.tag}
    assert jobs_b[IDLE_JOB.tag]["static_j"] == pytest.approx(120.0)
    assert jobs_b[IDLE_JOB.tag]["energy_j"] == pytest.approx(140.0)
    assert rows(points, WL_NODE, "cpu")  # the CPU ledger is there too


def test_lost_gpu_does_not_stop_the_other_gpu_or_the_cpu(tmp_path: Path, nvml_api: NvmlApi) -> None:
    fake = gpus()
    agent, points = make_agent(tmp_path, fake, api=nvml_api)
    agent.commit(agent.tick())
    fake.gpus[0].lost = True
    fake.step(1.0, {0: Load(300.0), 1: Load(70.0)})
    agent.commit(agent.tick())
    assert not rows(points, WL_NODE, "gpu", "GPU-a")
    assert rows(points, WL_NODE, "gpu", "GPU-b")[0].fields["energy_j"] == pytest.approx(70.0)
    assert rows(points, WL_NODE, "cpu")[0].fields["energy_j"] == pytest.approx(50.0)
    # back: one baseline read (the gap is not charged to this tick's jobs), then normal
    fake.gpus[0].lost = False
    points.clear()
    fake.step(1.0, {0: Load(300.0), 1: Load(70.0)})
    agent.commit(agent.tick())
    assert not rows(points, WL_NODE, "gpu", "GPU-a")
    fake.step(1.0, {0: Load(300.0), 1: Load(70.0)})
    agent.commit(agent.tick())
    assert rows(points, WL_NODE, "gpu", "GPU-a")[-1].fields["energy_j"] == pytest.approx(300.0)


def test_a_crashing_gpu_collector_never_stops_the_cpu_ledger(tmp_path: Path) -> None:
    fake = gpus()
    agent, points = make_agent(tmp_path, fake)
    agent.commit(agent.tick())

    def boom(now_ns: int) -> None:
        raise RuntimeError("bug")

    agent.sources.gpu.read = boom  # type: ignore[union-attr,method-assign]
    fake.step(1.0)
    agent.commit(agent.tick())
    assert rows(points, WL_NODE, "cpu") and not rows(points, WL_NODE, "gpu")


def test_choose_gpu_collector() -> None:
    cfg = Config()
    gpu, found = choose_gpu_collector(cfg, FakeNvml([FakeGpu("GPU-a"), FakeGpu("GPU-b")]))
    assert gpu is not None and [r.source for r in found] == ["nvml"] * 3
    assert found[0].devices == ("GPU-a", "GPU-b")
    gpu, found = choose_gpu_collector(cfg, FakeNvml([FakeGpu("GPU-a")], init_error=12))
    assert gpu is None and found[0].detail.startswith("library missing")
    assert choose_gpu_collector(cfg, FakeNvml([]))[0] is None  # no GPU at all
    # driver not loaded (yet): kept, to probe again
    gpu, found = choose_gpu_collector(cfg, FakeNvml([FakeGpu("GPU-a")], init_error=9))
    assert gpu is not None and found[0].detail.startswith("driver not loaded")
    cfg.agent.gpus = Gpus.NEVER
    assert choose_gpu_collector(cfg, FakeNvml([FakeGpu("GPU-a")])) == (None, [])


def test_doctor_shows_the_nvml_probe(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{tmp_path}"\n')
    result = CliRunner().invoke(main, ["doctor", "--config", str(cfg), "--json"])
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    nvml = [x for x in lines if x["source"] == "nvml"]
    assert nvml, result.output
    if nvml[0]["state"] != "found":  # this host: no NVIDIA driver
        assert nvml[0]["fix"] and ":" in nvml[0]["detail"]
    else:  # pragma: no cover - a GPU host: one row per GPU after the probe
        assert len(nvml) >= 2


def test_doctor_lists_each_gpu_through_the_real_pynvml(tmp_path: Path) -> None:
    """doctor on a host whose libnvidia-ml sees two GPUs, one lost (the fake driver)."""
    from tests.fake_nvml_driver import real_pynvml

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{tmp_path}"\n')
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: GIB}), FakeGpu("GPU-b", lost=True)])
    with real_pynvml(fake):
        result = CliRunner().invoke(main, ["doctor", "--config", str(cfg), "--json"])
    lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
    nvml = [x for x in lines if x["source"] == "nvml"]
    assert [x["state"] for x in nvml] == ["found", "found", "error"], result.output
    assert nvml[0]["devices"] == ["GPU-a"] and "1 failed" in nvml[0]["detail"]
    assert "GPU-a" in nvml[1]["detail"] and "energy counter" in nvml[1]["detail"]
    assert nvml[2]["detail"].startswith("GPU lost") and "dmesg" in nvml[2]["fix"]


def test_a_gpu_nobody_uses_is_idle_even_before_its_idle_power_is_known(tmp_path: Path, nvml_api: NvmlApi) -> None:
    """No baseline yet: its energy is all "dynamic", and with no process on the GPU that is idle, not _system."""
    fake = FakeNvml([FakeGpu("GPU-a")], start_us=T0 // 1000)
    cfg = Config()
    agent, points = make_agent(tmp_path, fake, cfg, api=nvml_api)
    agent.cfg.attribution.idle_power_w = {"cpu": 10.0}  # nothing configured for the GPU
    agent.commit(agent.tick())
    fake.step(2.0, {0: Load(65.0)})
    agent.commit(agent.tick())
    (node,) = rows(points, WL_NODE, "gpu", "GPU-a")
    assert "idle_w" not in node.fields  # no baseline known
    jobs = {p.tags["job"]: p.fields for p in rows(points, WL_JOB, "gpu", "GPU-a")}
    assert set(jobs) == {IDLE_JOB.tag} and jobs[IDLE_JOB.tag]["energy_j"] == pytest.approx(130.0)


def test_a_gpu_whose_processes_cannot_be_listed_is_unexplained_not_idle(tmp_path: Path, nvml_api: NvmlApi) -> None:
    no = {"nvmlDeviceGetComputeRunningProcesses": F.NVML_ERROR_NO_PERMISSION,
          "nvmlDeviceGetGraphicsRunningProcesses": F.NVML_ERROR_NO_PERMISSION}
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: GIB}, errors=dict(no))], start_us=T0 // 1000)
    agent, points = make_agent(tmp_path, fake, api=nvml_api)
    agent.commit(agent.tick())
    fake.step(1.0, {0: Load(300.0)})  # somebody we cannot see keeps it busy
    agent.commit(agent.tick())
    jobs = {p.tags["job"]: p.fields for p in rows(points, WL_JOB, "gpu", "GPU-a")}
    assert jobs[SYSTEM_JOB.tag]["dynamic_j"] == pytest.approx(240.0)  # above 60 W idle: unexplained
    assert jobs[IDLE_JOB.tag]["static_j"] == pytest.approx(60.0)


def test_a_gpu_whose_contexts_are_held_but_idle_teaches_the_idle_baseline(tmp_path: Path) -> None:
    """A notebook kernel holding a context all day: SM-busy 0, so those ticks are idle ticks."""
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: 2 * GIB})], start_us=T0 // 1000)
    agent, points = make_agent(tmp_path, fake)
    agent.cfg.attribution.idle_power_w = {"cpu": 10.0}  # nothing configured for the GPU: learn it
    agent.commit(agent.tick())
    for _ in range(35):
        fake.step(1.0, {0: Load(72.0)})  # held, nobody computing
        agent.commit(agent.tick())
    last = rows(points, WL_NODE, "gpu", "GPU-a")[-1]
    assert last.fields.get("idle_w") == pytest.approx(72.0, rel=0.02)
    # and with the baseline known, that job pays it as static energy (occupancy), not as dynamic
    (charge,) = [p.fields for p in rows(points, WL_JOB, "gpu", "GPU-a") if p.time_ns == last.time_ns]
    assert charge["static_j"] == pytest.approx(last.fields["energy_j"], rel=0.02)


def test_nothing_is_lost_across_a_transient_nvml_error(tmp_path: Path, nvml_api: NvmlApi) -> None:
    fake = gpus()
    agent, points = make_agent(tmp_path, fake, api=nvml_api)
    agent.commit(agent.tick())
    first_mj = fake.gpus[0].energy_mj
    for n in range(6):
        fake.step(1.0, {0: Load(300.0, {101: 60, 102: 20}), 1: Load(70.0)})
        if n == 2:
            fake.gpus[0].errors_once["nvmlDeviceGetProcessUtilization"] = F.NVML_ERROR_UNKNOWN
        agent.commit(agent.tick())
    charged_j = math.fsum(p.fields["energy_j"] for p in rows(points, WL_JOB, "gpu", "GPU-a"))
    assert charged_j == pytest.approx((fake.gpus[0].energy_mj - first_mj) / 1000.0)
    node = rows(points, WL_NODE, "gpu", "GPU-a")
    assert len(node) == 5 and max(p.fields["interval_s"] for p in node) == pytest.approx(2.0)


def test_gpus_whose_driver_loads_after_the_agent_started_are_measured(tmp_path: Path, nvml_api: NvmlApi) -> None:
    """At boot the service may start before the NVIDIA module is loaded: it probes again."""
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: GIB})], init_error=F.NVML_ERROR_DRIVER_NOT_LOADED,
                    start_us=T0 // 1000)
    cfg = Config()
    gpu, rows_ = choose_gpu_collector(cfg, nvml_api(fake))
    assert gpu is not None and not rows_[0].ok
    gpu.reprobe_every = 3
    agent, points = make_agent(tmp_path, fake, cfg, api=nvml_api)
    agent.sources.gpu = gpu
    agent.commit(agent.tick())
    fake.step(1.0, {0: Load(200.0, {101: 100})})
    agent.commit(agent.tick())
    assert not rows(points, WL_NODE, "gpu")
    fake.init_error = None  # modprobe nvidia
    for _ in range(4):
        fake.step(1.0, {0: Load(200.0, {101: 100})})
        agent.commit(agent.tick())
    node = rows(points, WL_NODE, "gpu", "GPU-a")
    assert node and node[-1].fields["energy_j"] == pytest.approx(200.0)
    assert {p.tags["job"] for p in rows(points, WL_JOB, "gpu", "GPU-a")} == {"llm-a"}
