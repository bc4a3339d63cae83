"""Job identity: the tag rule, tag sources and their order, cgroup paths, (user, tag) keys."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattledger.model.jobs import (
    MAX_TAG_CHARS,
    RESERVED,
    JobKey,
    job_cgroup,
    job_for,
    parse_environ,
    sanitise_tag,
    tag_from_cgroup,
    untagged,
)
from wattledger.model.points import WL_JOB, Point

ALLOWED = re.compile(r"[A-Za-z0-9._:+@/=-]*")
DOCKER_ID = "0123456789abcdef" * 4


@pytest.mark.parametrize("raw, tag", [
    ("resnet50-sweep", "resnet50-sweep"),
    ("my job, v2", "my_job_v2"),
    ("a\nb\tc\0d", "a_b_c_d"),
    ("_idle", "idle"),  # reserved names cannot be claimed
    ("__system__", "system"),
    ("été/übung", "t_/_bung"),
    ('x" ,y=1 z', "x_y=1_z"),
    ("", None),
    ("  \n ", None),
    ("_", None),
    (None, None),
])
def test_the_tag_rule(raw: str | None, tag: str | None) -> None:
    assert sanitise_tag(raw) == tag


def test_tags_are_cut_to_the_limit() -> None:
    assert sanitise_tag("x" * 500) == "x" * MAX_TAG_CHARS
    assert sanitise_tag("abc_def", max_chars=4) == "abc"  # no trailing "_" after the cut


@given(st.text())
def test_sanitised_tags_are_safe_and_stable(raw: str) -> None:
    tag = sanitise_tag(raw)
    if tag is None:
        return
    assert ALLOWED.fullmatch(tag) and 0 < len(tag) <= MAX_TAG_CHARS
    assert not tag.startswith("_") and not tag.endswith("_")
    assert tag not in RESERVED
    assert sanitise_tag(tag) == tag


@given(st.text(min_size=1))
def test_no_tag_breaks_a_line_of_line_protocol(raw: str) -> None:
    tag = sanitise_tag(raw) or "_untagged"
    line = Point(WL_JOB, {"host": "h", "job": tag, "user": "u"}, {"energy_j": 1.0}, 1).to_line()
    assert "\n" not in line
    assert line.startswith(f"{WL_JOB},")
    assert re.search(r"[^\\] energy_j=1(\.0)? 1$", line)  # the field set was not broken into


def test_tag_variables_in_configured_order_with_scheduler_prefixes() -> None:
    env = {"SLURM_JOB_ID": "4242", "WATTLEDGER_JOB": "sweep", "WATTLEDGER_PROJECT": "vision",
           "WATTLEDGER_PHASE": "train"}
    assert job_for("alice", env, "") == JobKey("sweep", "alice", "vision", "train")
    assert job_for("alice", {"SLURM_JOB_ID": "4242"}, "") == JobKey("slurm-4242", "alice")
    assert job_for("alice", {"PBS_JOBID": "17.pbs01"}, "") == JobKey("pbs-17.pbs01", "alice")
    assert job_for("alice", {"LSB_JOBID": "9"}, "") == JobKey("lsf-9", "alice")
    assert job_for("alice", env, "", tag_vars=("SLURM_JOB_ID",)).tag == "slurm-4242"


def test_an_unusable_variable_falls_through_to_the_next_source() -> None:
    env = {"WATTLEDGER_JOB": "___", "SLURM_JOB_ID": "5"}
    assert job_for("bob", env, "").tag == "slurm-5"
    assert job_for("bob", {"WATTLEDGER_JOB": "\n"}, "0::/slurm/uid_1/job_8/step_0\n").tag == "slurm-8"


def test_environment_and_cgroup_give_a_slurm_job_the_same_tag() -> None:
    cg = "0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0\n"
    assert job_for("alice", {}, cg) == job_for("alice", {"SLURM_JOB_ID": "4242"}, "")


@pytest.mark.parametrize("cgroup, tag", [
    ("0::/system.slice/slurmstepd.scope/job_12/step_batch/user/task_0", "slurm-12"),
    ("4:cpuacct:/slurm/uid_1000/job_99/step_0\n0::/", "slurm-99"),
    (f"0::/system.slice/docker-{DOCKER_ID}.scope", "container-0123456789ab"),
    (f"12:cpu:/docker/{DOCKER_ID}", "container-0123456789ab"),
    (f"0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{DOCKER_ID}.scope", "container-0123456789ab"),
    (f"0::/machine.slice/libpod-{DOCKER_ID}.scope/container", "container-0123456789ab"),
    (f"0::/kubepods.slice/crio-{DOCKER_ID}.scope", "container-0123456789ab"),
    (f"0::/machine.slice/libpod-conmon-{DOCKER_ID}.scope", None),  # podman's monitor, not the container
    ("0::/user.slice/user-1000.slice/session-3.scope", None),
    ("0::/system.slice/job_runner.service", None),
])
def test_tags_from_cgroup_paths(cgroup: str, tag: str | None) -> None:
    assert tag_from_cgroup(cgroup) == tag


def test_the_job_cgroup_is_the_whole_job_not_the_step() -> None:
    assert job_cgroup("0::/system.slice/slurmstepd.scope/job_12/step_0/user/task_0\n") == (
        "slurm-12", "/system.slice/slurmstepd.scope/job_12")
    assert job_cgroup(f"0::/system.slice/docker-{DOCKER_ID}.scope\n") == (
        "container-0123456789ab", f"/system.slice/docker-{DOCKER_ID}.scope")
    assert job_cgroup("4:cpuacct:/slurm/uid_1000/job_99/step_0\n0::/\n") is None  # v1 only: no v2 directory
    assert job_cgroup("0::/user.slice\n") is None


def test_a_job_is_user_and_tag() -> None:
    alice = job_for("alice", {"WATTLEDGER_JOB": "shared"}, "")
    mallory = job_for("mallory", {"WATTLEDGER_JOB": "shared"}, "")
    assert alice != mallory and alice.tag == mallory.tag
    assert untagged("alice") != untagged("bob")
    assert untagged("alice").reserved and not alice.reserved


def test_parse_environ_first_occurrence_wins_and_ignores_garbage() -> None:
    blob = b"A=1\0WATTLEDGER_JOB=x\0noequals\0WATTLEDGER_JOB=y\0\xff\xfe=z\0"
    assert parse_environ(blob, frozenset({"WATTLEDGER_JOB", "B"})) == {"WATTLEDGER_JOB": "x"}


def test_user_names_line_protocol_can_carry() -> None:
    from wattledger.model.jobs import sanitise_user
    from wattledger.model.points import Point
    from wattledger.agent.sinks.base import unsafe_tag

    assert sanitise_user("alice") == "alice"
    assert sanitise_user("CORP\\alice") == "CORP\\alice"
    assert sanitise_user("jürgen") == "jürgen"
    for nasty in ("a\nb", "tab\there", "trail\\", "bell\x07", "nul\x00x"):
        clean = sanitise_user(nasty)
        assert unsafe_tag(Point("wl_job", {"job": "j", "user": clean}, {"energy_j": 1.0}, 1)) is None, clean
