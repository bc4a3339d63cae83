"""Job identity: who a process belongs to.

A job is (user, tag). The tag comes from the process environment (the first
configured variable that is set: by default WATTLEDGER_JOB, SLURM_JOB_ID,
PBS_JOBID, LSB_JOBID), else from the cgroup path (Slurm ``job_<id>``, container
ids). Because the user is part of the key, a user who sets another user's tag
gets a job of their own, never a share of the other's.

Tags are user input. ``sanitise_tag`` is the one rule applied before a tag
reaches any store: NUL-free text, at most ``MAX_TAG_CHARS`` characters from
``[A-Za-z0-9._:+@/=-]``; every run of other characters becomes one ``_``;
leading ``_`` are removed (names starting with ``_`` are reserved for the
ledger's own jobs). A tag that is empty after this is no tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TAG_CHARS = 128
DEFAULT_TAG_VARS: tuple[str, ...] = ("WATTLEDGER_JOB", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")
PROJECT_VAR = "WATTLEDGER_PROJECT"
PHASE_VAR = "WATTLEDGER_PHASE"

# Reserved jobs (DESIGN.md, "Attribution").
IDLE = "_idle"            # static energy nobody used
UNTAGGED = "_untagged"    # processes without a tag, kept per user
SYSTEM = "_system"        # busy time that no observed process explains
AGENT = "_agent"          # wattledger itself
RESERVED = frozenset({IDLE, UNTAGGED, SYSTEM, AGENT})

_DISALLOWED = re.compile(r"[^A-Za-z0-9._:+@/=-]+")
_SLURM_CGROUP = re.compile(r"/job_(\d+)(?:/|$)")
_CONTAINER_CGROUP = re.compile(
    r"(?:docker[-/]|containerd[-/]|cri-containerd[-/]|libpod[-/]|crio[-/])([0-9a-f]{12,64})(?:\.scope)?(?:/|$)"
)


def sanitise_tag(raw: str | None, max_chars: int = MAX_TAG_CHARS) -> str | None:
    """Apply the tag rule above; None when nothing usable is left."""
    if raw is None:
        return None
    tag = _DISALLOWED.sub("_", raw).lstrip("_")[:max_chars].rstrip("_") or None
    return tag


@dataclass(frozen=True, order=True)
class JobKey:
    """A ledger job: the user who ran it and the tag they gave it."""

    tag: str
    user: str = ""
    project: str = ""
    phase: str = ""

    @property
    def reserved(self) -> bool:
        return self.tag in RESERVED


SYSTEM_JOB = JobKey(SYSTEM)
IDLE_JOB = JobKey(IDLE)
AGENT_JOB = JobKey(AGENT)


def parse_environ(blob: bytes, wanted: frozenset[str]) -> dict[str, str]:
    """Pick the wanted variables out of a NUL-separated /proc/<pid>/environ blob."""
    found: dict[str, str] = {}
    for entry in blob.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if not sep:
            continue
        key = name.decode("utf-8", "replace")
        if key in wanted and key not in found:
            found[key] = value.decode("utf-8", "replace")
    return found


def tag_from_cgroup(cgroup_text: str) -> str | None:
    """A tag from the /proc/<pid>/cgroup text: Slurm job id, else a container id."""
    m = _SLURM_CGROUP.search(cgroup_text)
    if m:
        return f"slurm-{m.group(1)}"
    m = _CONTAINER_CGROUP.search(cgroup_text)
    if m:
        return f"container-{m.group(1)[:12]}"
    return None


def job_for(
    user: str,
    env: dict[str, str],
    cgroup_text: str,
    tag_vars: tuple[str, ...] = DEFAULT_TAG_VARS,
    max_chars: int = MAX_TAG_CHARS,
) -> JobKey:
    """The job of a process from its user, its tag variables and its cgroup."""
    tag = None
    for var in tag_vars:
        tag = sanitise_tag(env.get(var), max_chars)
        if tag:
            break
    if not tag:
        tag = sanitise_tag(tag_from_cgroup(cgroup_text), max_chars)
    if not tag:
        return JobKey(UNTAGGED, user)
    return JobKey(
        tag,
        user,
        sanitise_tag(env.get(PROJECT_VAR), max_chars) or "",
        sanitise_tag(env.get(PHASE_VAR), max_chars) or "",
    )
