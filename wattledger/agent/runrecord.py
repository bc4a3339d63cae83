"""What a run record says besides its figures: the machine, the versions, how the figures were made.

``wattledger run`` appends ``run_record(...)`` to the per-user runs file
(store/runs.py), so a figure read months later still says on what hardware,
from which counters (RAPL, NVML or the model estimate), with which versions,
idle policy and carbon intensity it was made.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from wattledger.config import Config


def cpu_model(procfs_root: str | Path = "/proc") -> str:
    """The CPU's model name from cpuinfo ("" when it does not say: some ARM hosts)."""
    try:
        text = (Path(procfs_root) / "cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return ""


def machine(cfg: Config, result: Mapping[str, Any], gpus: list[str]) -> dict[str, Any]:
    """The host as the record describes it: CPU model and count, GPUs, and what measured each component."""
    by_component = dict(result.get("source_by_component", {}))
    kinds = set(",".join(by_component.values()).split(",")) - {""}
    return {
        "host": cfg.agent.host or platform.node(),
        "cpu_model": cpu_model(cfg.agent.procfs_root),
        "vcpus": os.cpu_count(),
        "gpus": gpus,
        "energy": "model" if kinds == {"model"} else ("rapl" if "rapl" in kinds else ",".join(sorted(kinds)) or "none"),
        "source_by_component": by_component,
    }


def versions() -> dict[str, str]:
    """wattledger, Python, the kernel, and the NVML binding when installed."""
    out = {"wattledger": _version("wattledger"), "python": sys.version.split()[0], "kernel": platform.release()}
    nvml = _version("nvidia-ml-py")
    if nvml:
        out["nvidia-ml-py"] = nvml
    return out


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def run_record(result: Mapping[str, Any], cfg: Config, *, project: str, phase: str, gpus: list[str],
               figures_from: str) -> dict[str, Any]:
    """One line of the runs file: the run's figures, the machine, the versions, the policy and intensity."""
    keep = ("job", "user", "command", "exit_code", "duration_s", "cpu_s", "start_ns", "end_ns", "energy_j",
            "energy_by_component_j", "below_resolution_j", "pue", "facility_energy_j", "carbon_g_per_kwh",
            "carbon_source", "co2e_g", "source", "source_by_component", "estimated")
    record = {k: result.get(k) for k in keep}
    a = cfg.attribution
    record.update(
        project=project, phase=phase, figures_from=figures_from,
        machine=machine(cfg, result, gpus), versions=versions(),
        static_policy={"cpu": str(a.cpu_static_policy), "dram": str(a.dram_static_policy),
                       "gpu": str(a.gpu_static_policy)},
        carbon_zone=cfg.carbon.zone,
    )
    return record
