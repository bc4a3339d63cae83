"""One full tick over the Intel fixture tree, compared with a golden line-protocol file.

Like node_exporter's end-to-end test: the whole pipeline (RAPL collector,
counters, attribution, points, line protocol) over a fixture tree, with the
process activity scripted. Regenerate with WATTLEDGER_UPDATE_GOLDEN=1 after a
deliberate change, and review the diff.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from pathlib import Path

from tests.conftest import FIXTURES
from wattledger.config import Config
from wattledger.model.policies import StaticPolicy
from wattledger.model.jobs import AGENT_JOB, SYSTEM_JOB, JobKey
from wattledger.store.ledger import Ledger
from tests.clocks import FakeClock
from wattledger.agent.factory import build_agent
from wattledger.model.activity import ProcSample
from wattledger.collectors.rapl import RaplCollector

GOLDEN = Path(__file__).parent / "golden" / "intel-2s-tick.lp"
T0 = 1_700_000_000_000_000_000


class ScriptedProcs:
    """Per-job CPU seconds for each tick, as the procs collector would report them."""

    name = "procfs"

    def __init__(self, ticks: list[dict[JobKey, float]]) -> None:
        self.ticks = ticks
        self.i = 0
        self.last_ns: int | None = None

    def read(self, read_ns: int, want_pids: object = ()) -> ProcSample:
        interval = None if self.last_ns is None else (read_ns - self.last_ns) / 1e9
        drivers = {} if interval is None else self.ticks[self.i]
        if interval is not None:
            self.i += 1
        self.last_ns = read_ns
        return ProcSample(read_ns, interval is None, sum(drivers.values()), 64 * (interval or 0), 64, dict(drivers),
                          {j: 1.0 for j in drivers if j.tag != "_agent"})


def run_tick(tmp_path: Path) -> tuple[str, list]:
    root = tmp_path / "sysfs"
    shutil.copytree(FIXTURES / "sysfs-intel-2s", root, symlinks=True)
    cfg = Config()
    # The figures below were made under proportional (the default before issue 13); the house's
    # jobs (_system, _agent) pay for their own use only (capacity rate) under every policy.
    cfg.attribution.cpu_static_policy = cfg.attribution.dram_static_policy = StaticPolicy.PROPORTIONAL
    cfg.attribution.idle_power_w = {"cpu": 40.0, "dram": 2.0}
    # Embodied carbon from a server archetype's parts, not from this machine's /proc and /sys.
    cfg.embodied.archetype = "p5.48xlarge"
    clock = iter([T0, T0 + 2_000_000_000])
    resnet = JobKey("resnet50-sweep", "alice", "vision", "train")
    procs = ScriptedProcs([{resnet: 1.5, JobKey("_untagged", "bob"): 0.5, SYSTEM_JOB: 0.25, AGENT_JOB: 0.01}])
    out = io.StringIO()
    agent = build_agent(cfg, Ledger.in_state_dir(tmp_path / "state"), out=out, energy=[RaplCollector(root)],
                        procs=procs, clock=FakeClock(lambda: next(clock)), host="gpu01")
    agent.commit(agent.tick())
    zones = root / "class" / "powercap"
    for zone, add_uj in {"intel-rapl:0": 170_000_000, "intel-rapl:0:0": 9_000_000,
                         "intel-rapl:1": 2_000_000, "intel-rapl:1:0": 7_000_000}.items():
        f = zones / zone / "energy_uj"
        f.write_text(str((int(f.read_text()) + add_uj) % 262143328851) + "\n")
    result = agent.tick()
    agent.commit(result)
    lines = [ln for ln in out.getvalue().splitlines() if not ln.startswith("wl_agent")]
    return "\n".join(lines) + "\n", result.points


def test_golden_tick(tmp_path: Path) -> None:
    text, points = run_tick(tmp_path)
    if os.environ.get("WATTLEDGER_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    # and the invariant, per pool: jobs sum to the node
    for node in (p for p in points if p.measurement == "wl_node"):
        jobs = [p for p in points if p.measurement == "wl_job" and p.tags["device"] == node.tags["device"]
                and p.tags["component"] == node.tags["component"]]
        assert math.isclose(sum(j.fields["energy_j"] for j in jobs), node.fields["energy_j"], rel_tol=1e-12)
    assert {p.measurement for p in points} == {"wl_node", "wl_job", "wl_agent", "wl_embodied"}
    # and embodied carbon: the jobs and _idle carry each part's accrual over the tick (2 s of p5.48xlarge)
    embodied = [p for p in points if p.measurement == "wl_embodied"]
    rate_g_per_s = {"cpu_g": 60.2, "dram_g": 4000.0, "storage_g": 1300.0, "chassis_g": 66.1 + 150 + 150 + 6.68}
    for name, kg in rate_g_per_s.items():  # as the ledger stores them: whole nano-grams per point
        assert math.isclose(sum(p.fields[name] for p in embodied), kg * 1000 / (4 * 365.25 * 86400) * 2.0,
                            rel_tol=0, abs_tol=0.5e-9 * len(embodied))
