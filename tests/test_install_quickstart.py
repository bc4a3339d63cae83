"""deploy/quickstart.sh end to end (the README's first set-up command), without its pip step.

The script is run as written, with the test venv standing in for ./.venv
(QUICKSTART_NO_INSTALL: tests have no network) and the state dir in tmp. It
must start the agent, run the tagged demo job, stop the agent cleanly and
print a report in which the demo job's energy appears; the agent's own ledger
must hold energy charged to the demo (so the report is not just echoing
`wattledger run`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_JOB

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_runs_agent_demo_and_report(tmp_path: Path) -> None:
    state = tmp_path / "wl-state"
    venv = Path(sys.executable).parent.parent
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "QUICKSTART_NO_INSTALL": "1",
        "QUICKSTART_VENV": str(venv),
        "QUICKSTART_STATE": str(state),
        "QUICKSTART_DEMO_S": "2",
    }
    r = subprocess.run(["bash", str(REPO / "deploy" / "quickstart.sh")], capture_output=True, text=True, env=env,
                       timeout=180, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    out = r.stdout
    # `wattledger run` printed the demo's own figures.
    assert "wattledger: job demo" in out
    # The agent stopped on SIGTERM after its ticks, cleanly.
    assert "agent: stopped after" in out
    # The report came last and names the demo job.
    report = out.split("==> wattledger report", 1)[1]
    assert "demo" in report
    # ... and drew it, as the README's tour does (the `plot` extra the quickstart installs).
    png = state / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot written to {png}" in r.stderr

    ledger = Ledger.in_state_dir(state)
    try:
        demo_j = sum(float(row["energy_j"] or 0.0) for row in ledger.rows(WL_JOB) if row["job"] == "demo")
    finally:
        ledger.close()
    assert demo_j > 0, "the agent charged no energy to the demo job"
