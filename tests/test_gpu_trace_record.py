"""Smoke test of `benchmarks/gpu_trace.py record` without a GPU.

The recorder is what a session with a real GPU runs (tests/fixtures/nvml/README.md);
device time is short, so its whole path is run here first: the real pynvml
over a live fake GPU (tests/fake_nvml_live.py), two tagged worker processes
(the cpu backend: busy loops instead of matmuls), phases, the trace file,
the replay report, and `wattledger agent` started beside it as a subprocess
(given its own live fake GPU by tests/nvml_site/sitecustomize.py) whose
ledger is checked at the end.
"""

from __future__ import annotations

import io
import math
import os
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.fake_nvml import load_trace
from tests.fake_nvml_driver import real_pynvml
from tests.fake_nvml_live import MARKER, TOKEN, LiveGpuNvml
from tests.test_gpu_replay import _load_script, assert_agent_ledger_balances

SITE = Path(__file__).parent / "nvml_site"


def test_record_runs_end_to_end_on_a_fake_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _load_script()
    monkeypatch.setenv(MARKER, TOKEN)                     # the workers are this fake GPU's users
    monkeypatch.setenv("WATTLEDGER_TEST_LIVE_GPU", "1")  # the agent subprocess gets a fake GPU too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "smoke.jsonl"
    buf = io.StringIO()
    with real_pynvml(LiveGpuNvml()), redirect_stdout(buf):
        mod.main(["record", "--backend", "cpu", "--out", str(out), "--interval-s", "0.25", "--phase-s", "1.5",
                  "--baseline-s", "1.0", "--spawn-timeout-s", "5", "--period-s", "0.05"])
    report = buf.getvalue()
    trace = load_trace(out)
    assert trace.synthetic and trace.header["note"].startswith("SMOKE TEST")
    assert sorted(trace.job_of_pid().values()) == ["heavy", "light"]
    assert trace.header["nvml_saw_processes"] is True
    phases = {t["phase"] for t in trace.ticks}
    assert {"baseline", "hold", "heavy-alone", "light-alone", "shared", "hold-end"} <= phases
    assert all("collector_read_s" in t for t in trace.ticks)
    iterations = trace.summary["iterations"]
    assert iterations["heavy"]["heavy-alone"] > 0 and iterations["light"]["light-alone"] > 0
    # the agent ran beside it and its ledger balances (the agent's fake GPU is its own
    # instance, so its counter agrees with the recorder's only roughly)
    agent = trace.summary["agent"]
    assert_agent_ledger_balances(agent, counter_rel=0.25)
    (gpu,) = agent["gpus"].values()
    assert gpu["ticks"] >= 10 and gpu["sources"] == ["nvml"]
    alone = gpu["dynamic_j_by_phase"]["heavy-alone"]
    assert alone.get("heavy", 0.0) > alone.get("light", 0.0)
    assert "5. the agent" in report and "sum of per-job GPU energy" in report
    assert "== SYNTHETIC trace" in report and "SMOKE TEST" in report  # never passed off as a recording
    assert math.isfinite(gpu["node_j"])
