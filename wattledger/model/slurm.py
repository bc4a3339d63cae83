"""What Slurm tells a job's processes about the job, and the job-output file names it uses.

Slurm puts the job's details into the environment of every process it
launches (batch script, ``srun`` steps, and so their children):
``SLURM_JOB_ID``, ``SLURM_JOB_ACCOUNT``, ``SLURM_JOB_PARTITION``,
``SLURM_JOB_NAME``, ``SLURM_ARRAY_JOB_ID``/``SLURM_ARRAY_TASK_ID`` and the
GPUs it allocated (``SLURM_JOB_GPUS``, ``CUDA_VISIBLE_DEVICES``...). The
process reader reads them once per process, with the tag variables.

They are *not* tags: an account, a partition or a job name per ``wl_job``
series would multiply the series (cardinality) and InfluxDB would carry them
forever. They live beside the ledger, one row per job (``store.jobinfo``).

They come from the job's own environment, which the job's user can change
for their own processes: they describe the job well enough for a report
and an Epilog, not for billing (use ``sacct`` for that). Pure functions only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

SCHEDULER = "slurm"
TAG_PREFIX = "slurm-"
JOB_ID_VAR = "SLURM_JOB_ID"
INFO_VARS: tuple[str, ...] = (
    JOB_ID_VAR, "SLURM_JOB_ACCOUNT", "SLURM_JOB_PARTITION", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
)
# Where Slurm names the GPUs it allocated, most trustworthy first: SLURM_JOB_GPUS and
# SLURM_STEP_GPUS hold the node's global GPU ids even when devices are constrained
# (task/cgroup renumbers CUDA_VISIBLE_DEVICES from 0 inside the job); CUDA_VISIBLE_DEVICES
# may also name GPUs by UUID, which is exact.
DEFAULT_GPU_VARS: tuple[str, ...] = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
MAX_INFO_CHARS = 128
# Slurm's Prolog and Epilog scripts carry the job's id in their environment but are the
# scheduler's work, not the job's (an Epilog summing a job must not change its figure).
SCRIPT_CONTEXT_VAR = "SLURM_SCRIPT_CONTEXT"
SCRIPT_CONTEXTS = frozenset({"prolog_slurmd", "epilog_slurmd", "prolog_slurmctld", "epilog_slurmctld"})
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
_GPU_ID = re.compile(r"^(?:\d{1,4}|(?:GPU|MIG)-[0-9A-Za-z/-]{1,96})$")


def _clean(value: str | None) -> str:
    """A value as kept: control characters become ``_``, at most MAX_INFO_CHARS characters."""
    return _UNPRINTABLE.sub("_", value or "").strip()[:MAX_INFO_CHARS]


@dataclass(frozen=True)
class SlurmJob:
    """One Slurm job as its processes' environment describes it (every field as Slurm wrote it)."""

    job_id: str
    array_job_id: str = ""
    array_task_id: str = ""
    name: str = ""
    account: str = ""
    partition: str = ""
    gpus: tuple[str, ...] = ()  # allocated GPUs: node-global indices ("0") or UUIDs ("GPU-...", "MIG-...")

    @property
    def tag(self) -> str:
        """The ledger's job tag for this job (model.jobs gives the same from the id or the cgroup)."""
        return TAG_PREFIX + self.job_id

    @property
    def display_id(self) -> str:
        """The id as ``sacct`` shows it: ``42``, or ``41_3`` for task 3 of array job 41."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    def merged(self, other: SlurmJob) -> SlurmJob:
        """This job with the fields it lacks taken from ``other`` (another process of the same job)."""
        if other == self:
            return self
        return replace(self, **{f: getattr(other, f) for f in ("array_job_id", "array_task_id", "name", "account",
                                                               "partition", "gpus") if not getattr(self, f)})


def parse_gpu_ids(value: str | None) -> tuple[str, ...]:
    """GPU ids from one allocation variable: ``"0,2"``, ``"GPU-8f...,GPU-1c..."``; nothing for
    ``NoDevFiles``, ``-1``, an empty value or anything that is not a GPU id."""
    ids = []
    for part in (value or "").split(","):
        part = part.strip()
        if _GPU_ID.match(part) and part not in ids:
            ids.append(part)
    return tuple(ids)


def slurm_job(env: Mapping[str, str], gpu_vars: tuple[str, ...] = DEFAULT_GPU_VARS) -> SlurmJob | None:
    """The Slurm job a process's environment names (None without a usable ``SLURM_JOB_ID``)."""
    job_id = env.get(JOB_ID_VAR, "").strip()
    if not job_id.isdigit() or len(job_id) > 20:
        return None
    gpus: tuple[str, ...] = ()
    for var in gpu_vars:
        if var in env:
            gpus = parse_gpu_ids(env[var])
            break
    return SlurmJob(job_id, array_job_id=_clean(env.get("SLURM_ARRAY_JOB_ID")),
                    array_task_id=_clean(env.get("SLURM_ARRAY_TASK_ID")), name=_clean(env.get("SLURM_JOB_NAME")),
                    account=_clean(env.get("SLURM_JOB_ACCOUNT")), partition=_clean(env.get("SLURM_JOB_PARTITION")),
                    gpus=gpus)


def is_scheduler_script(env: Mapping[str, str]) -> bool:
    """True for a Prolog or Epilog that Slurm runs for a job (and its children): not the job's processes."""
    return env.get(SCRIPT_CONTEXT_VAR, "") in SCRIPT_CONTEXTS


def job_id_of_tag(tag: str) -> str | None:
    """``"42"`` for the tag ``slurm-42``; None for any other tag."""
    rest = tag[len(TAG_PREFIX):] if tag.startswith(TAG_PREFIX) else ""
    return rest if rest.isdigit() else None


# -- job output files (sbatch --output) ---------------------------------------------------------------

DEFAULT_OUTPUT = "slurm-%j.out"
DEFAULT_ARRAY_OUTPUT = "slurm-%A_%a.out"
_PATTERN = re.compile(r"%(\d*)([%AaJjNnstux])")


def output_fields(job: SlurmJob, user: str, node: str) -> dict[str, str]:
    """The values of sbatch's filename patterns for a batch job (its batch step, task 0, node 0)."""
    fields = {"j": job.job_id, "J": f"{job.job_id}.batch", "s": "batch", "t": "0", "n": "0", "u": user}
    fields["A"] = job.array_job_id or job.job_id
    if job.array_task_id:
        fields["a"] = job.array_task_id
    if job.name:
        fields["x"] = job.name
    if node:
        fields["N"] = node
    return fields


def expand_output(pattern: str, fields: Mapping[str, str]) -> str | None:
    """sbatch's ``--output`` pattern with its ``%`` fields filled in (``%%`` is ``%``, ``%4j`` pads
    numbers with zeros); None when it names a field we do not know. A backslash anywhere turns the
    expansion off, as in sbatch (the backslashes are dropped)."""
    if "\\" in pattern:
        return pattern.replace("\\", "")
    missing = False

    def fill(m: re.Match[str]) -> str:
        nonlocal missing
        width, letter = m.group(1), m.group(2)
        if letter == "%":
            return "%"
        value = fields.get(letter)
        if value is None:
            missing = True
            return ""
        return value.zfill(int(width)) if width and value.isdigit() else value

    out = _PATTERN.sub(fill, pattern)
    return None if missing else out
