"""Process activity: what the process reader saw since its previous read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from wattledger.model.jobs import JobKey
from wattledger.model.slurm import SlurmJob


@dataclass(frozen=True)
class ProcSample:
    """CPU activity per job since the previous read (``collectors.procs``), stamped with the monotonic clock.

    ``charged_s`` is what the processes explain, per job (``_agent`` and the
    kernel threads' ``_system`` included); the host's busy time they do not
    explain (``busy_s`` minus their sum) is ``_system``'s, worked out by
    ``accounting.cpu``. ``capacity_s`` is all CPUs' time that passed, as the
    kernel counted it. ``jobs_by_pid`` names the job of each pid the caller
    asked about (GPU processes).
    """

    read_ns: int
    baseline: bool                      # the first read: nothing to charge yet
    busy_s: float                       # host busy CPU seconds (/proc/stat)
    capacity_s: float                   # CPU seconds that passed, all CPUs
    ncpu: int
    charged_s: Mapping[JobKey, float]   # CPU seconds per job that processes explain
    holders: Mapping[JobKey, float]     # jobs with a live process (occupancy policy), weight 1
    jobs_by_pid: Mapping[int, JobKey] = field(default_factory=dict)
    processes_read: int = 0
    full_scan: bool = False
    environ_denied: int = 0
    cold_scan: bool = False  # cold processes were read because busy time was unexplained
    listed: bool = True  # /proc was listed (something was born or died)
    cgroups_read: int = 0
    processes: int = 0  # processes known (alive at the last listing)
    slurm: Mapping[JobKey, SlurmJob] = field(default_factory=dict)  # jobs with a live process that Slurm launched
