"""Two tagged CPU burners side by side (100% and 50% duty): the agent's shares of
dynamic energy match the CPU time the burners measured themselves, within 2 points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from wattledger.config import Config, Estimate
from wattledger.store.ledger import Ledger
from wattledger.agent.factory import build_agent

BURNER = r"""
import json, sys, time
duty, seconds, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
start = time.monotonic()
while time.monotonic() - start < seconds:
    slot = time.monotonic()
    while time.monotonic() - slot < 0.1 * duty:
        pass
    rest = 0.1 * (1 - duty)
    if rest:
        time.sleep(rest)
t = __import__("os").times()
json.dump({"cpu_s": t.user + t.system}, open(out, "w"))
"""


def test_two_burners_shares_match_cpu_time(tmp_path: Path) -> None:
    cfg = Config()
    cfg.agent.estimate = Estimate.ALWAYS  # this machine has no RAPL: the model still drives attribution
    points = []
    agent = build_agent(cfg, Ledger.in_state_dir(tmp_path), on_tick=lambda r: points.extend(r.points))
    agent.commit(agent.tick())
    procs = []
    for tag, duty in (("full", 1.0), ("half", 0.5)):
        env = dict(os.environ, WATTLEDGER_JOB=tag)
        procs.append(subprocess.Popen([sys.executable, "-c", BURNER, str(duty), "4", str(tmp_path / f"{tag}.json")],
                                      env=env))
    # tick until both exited, then one more tick so their final CPU is seen through our cutime
    while any(p.poll() is None for p in procs):
        time.sleep(0.5)
        agent.commit(agent.tick())
    agent.commit(agent.tick())
    measured = {tag: json.loads((tmp_path / f"{tag}.json").read_text())["cpu_s"] for tag in ("full", "half")}
    dyn = {tag: sum(p.fields["dynamic_j"] for p in points if p.measurement == "wl_job"
                    and p.tags["job"] == tag and p.tags["component"] == "cpu") for tag in ("full", "half")}
    assert dyn["full"] > 0 and dyn["half"] > 0
    share_energy = dyn["full"] / (dyn["full"] + dyn["half"])
    share_cpu = measured["full"] / (measured["full"] + measured["half"])
    assert abs(share_energy - share_cpu) <= 0.02, (dyn, measured)
