"""Job identity: who a process belongs to.

A job is (user, tag). The tag comes from the process environment (the first
configured variable that is set: by default WATTLEDGER_JOB, SLURM_JOB_ID,
PBS_JOBID, LSB_JOBID), else from the cgroup path (Slurm ``job_<id>``,
docker/containerd/CRI-O/podman container ids). Because the user is part of the
key, a user who sets another user's tag gets a job of their own, never a
share of the other's.

Scheduler ids get the scheduler's name as a prefix (``SLURM_JOB_ID=42`` and a
``.../job_42/...`` cgroup both give ``slurm-42``), so that a job keeps one tag
whether it was found through its environment or through its cgroup, and a
user's own ``WATTLEDGER_JOB=42`` is not confused with Slurm job 42.

Tags are user input. ``sanitise_tag`` is the one rule applied before a tag
(or a project or phase) reaches any store:

1. every run of characters outside ``[A-Za-z0-9._:+@/=-]`` (spaces, quotes,
   commas, backslashes, newlines, NUL, non-ASCII...) becomes one ``_``;
2. leading ``_`` are removed: names starting with ``_`` are reserved for the
   ledger's own jobs (``_idle``, ``_untagged``, ``_system``, ``_agent``,
   ``_unobserved``, ``_overflow``);
3. the result is cut to ``max_chars`` characters (default 128) and trailing
   ``_`` are removed;
4. a tag that is empty after this is no tag (the process is ``_untagged``).

The line-protocol library escapes what is left (``=`` in a tag value), so no
tag can break a write or inject a field, a tag or a measurement.

A project (and the phases inside it) is tied to its user as a job is:
``project_owner`` says whose a project's energy is, ``user`` unless the
admin's ``[jobs] shared_projects`` lets several users use one name, and
``""`` for energy without a project (nobody's name to protect).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_TAG_CHARS = 128
DEFAULT_TAG_VARS: tuple[str, ...] = ("WATTLEDGER_JOB", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")
PROJECT_VAR = "WATTLEDGER_PROJECT"
PHASE_VAR = "WATTLEDGER_PHASE"
# Scheduler variables whose value is a bare id: prefixed so that the tag is the
# same as the one the scheduler's cgroup gives (see tag_from_cgroup).
TAG_VAR_PREFIX: dict[str, str] = {"SLURM_JOB_ID": "slurm-", "PBS_JOBID": "pbs-", "LSB_JOBID": "lsf-"}

# Reserved jobs (DESIGN.md, "Attribution").
IDLE = "_idle"            # static energy nobody used
UNTAGGED = "_untagged"    # processes without a tag, kept per user
SYSTEM = "_system"        # busy time that no observed process explains, kernel threads
AGENT = "_agent"          # wattledger itself
UNOBSERVED = "_unobserved"  # measured while no agent watched (between a stop and the restart): no process known
OVERFLOW = "_overflow"    # a user's tag sets beyond the daily cap ([jobs] max_tags_per_user_day), kept per user
RESERVED = frozenset({IDLE, UNTAGGED, SYSTEM, AGENT, UNOBSERVED, OVERFLOW})
# The house's own jobs: under every static policy they pay idle power only for the
# capacity they used themselves, never a share of what other jobs left idle.
HOUSE = frozenset({SYSTEM, AGENT})
ALLOWED_TAG_CHARS = "A-Z a-z 0-9 . _ : + @ / = -"

_DISALLOWED = re.compile(r"[^A-Za-z0-9._:+@/=-]+")
# A Slurm job cgroup: cgroup v1 ".../uid_1000/job_42/step_0", v2
# ".../system.slice/slurmstepd.scope/job_42/step_0/user/task_0".
_SLURM_CGROUP = re.compile(r"/job_(\d+)(?=/|$)")
# Container scopes: docker (cgroupfs "/docker/<id>", systemd "docker-<id>.scope"),
# containerd / CRI ("cri-containerd-<id>.scope"), CRI-O ("crio-<id>.scope"),
# podman ("libpod-<id>.scope"; "libpod-conmon-..." is podman's monitor, not
# the container). Ids are 64 hex digits; the tag keeps the usual 12.
_CONTAINER_CGROUP = re.compile(
    r"/(?:docker[-/]|containerd[-/]|cri-containerd-|libpod-|crio-)([0-9a-f]{12,64})(?:\.scope)?(?=/|$)"
)


def sanitise_tag(raw: str | None, max_chars: int = MAX_TAG_CHARS) -> str | None:
    """Apply the tag rule above; None when nothing usable is left."""
    if raw is None:
        return None
    tag = _DISALLOWED.sub("_", raw).lstrip("_")[: max(0, max_chars)].rstrip("_")
    return tag or None


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

    @property
    def house(self) -> bool:
        """``_system`` or ``_agent``: charged for their own use only (see ``HOUSE``)."""
        return self.tag in HOUSE


SYSTEM_JOB = JobKey(SYSTEM)
IDLE_JOB = JobKey(IDLE)
AGENT_JOB = JobKey(AGENT)
UNOBSERVED_JOB = JobKey(UNOBSERVED)


def overflow(user: str) -> JobKey:
    """The job that holds one user's tag sets beyond the daily cap."""
    return JobKey(OVERFLOW, user)


def shared_label(users: list[str] | tuple[str, ...]) -> str:
    """How a shared project's owner is shown: its users, sorted, joined by ``+`` (``alice+bob``)."""
    return "+".join(sorted(set(users)))


def project_owner(project: str, user: str, shared: Mapping[str, list[str]]) -> str:
    """Whose ``project`` energy charged by ``user`` is: the project's shared label when the admin's map
    lets ``user`` use that name, else ``user`` alone; ``""`` when there is no project."""
    if not project:
        return ""
    members = shared.get(project)
    if members and user in members:
        return shared_label(members)
    return user


_USER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+|\\+$")


def sanitise_user(name: str) -> str:
    """A user name as stored: control characters (and a trailing backslash, which
    line protocol cannot carry) become ``_``. Ordinary names, ``DOMAIN\\user``
    and unicode names are unchanged; an uid without a passwd entry stays a number."""
    return _USER_UNSAFE.sub("_", name)


def untagged(user: str) -> JobKey:
    """The catch-all job of one user's untagged processes."""
    return JobKey(UNTAGGED, user)


def parse_environ(blob: bytes, wanted: frozenset[str]) -> dict[str, str]:
    """Pick the wanted variables out of a NUL-separated /proc/<pid>/environ blob.

    The first occurrence of a name wins, as getenv(3) does.
    """
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


def unified_cgroup_path(cgroup_text: str) -> str | None:
    """The cgroup v2 path of a process (the ``0::/path`` line), or None on pure v1."""
    for line in cgroup_text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def job_cgroup(cgroup_text: str) -> tuple[str, str] | None:
    """(tag, cgroup v2 directory of the whole job) when the process sits in a job cgroup.

    The directory is the path up to and including the ``job_<id>`` or container
    component, so that its ``cpu.stat`` covers every process of the job, those
    that have already exited included. None when the process has no v2 path
    or its path names no job.
    """
    path = unified_cgroup_path(cgroup_text)
    if path is None:
        return None
    m = _SLURM_CGROUP.search(path)
    if m:
        return f"slurm-{m.group(1)}", path[: m.end()]
    m = _CONTAINER_CGROUP.search(path)
    if m:
        return f"container-{m.group(1)[:12]}", path[: m.end()]
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
        value = env.get(var)
        if value and var in TAG_VAR_PREFIX:
            value = TAG_VAR_PREFIX[var] + value
        tag = sanitise_tag(value, max_chars)
        if tag:
            break
    if not tag:
        tag = sanitise_tag(tag_from_cgroup(cgroup_text), max_chars)
    if not tag:
        return untagged(user)
    return JobKey(
        tag,
        user,
        sanitise_tag(env.get(PROJECT_VAR), max_chars) or "",
        sanitise_tag(env.get(PHASE_VAR), max_chars) or "",
    )
