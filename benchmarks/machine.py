"""The machine a benchmark ran on, for RESULTS.md: every figure is written down with it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": model or platform.processor(), "kernel": platform.release(),
            "python": platform.python_version()}


def machine_line() -> str:
    m = machine()
    return f"{m['nproc']} CPUs (nproc), {m['cpu'] or 'unknown CPU'}; Python {m['python']}; Linux {m['kernel']}"
