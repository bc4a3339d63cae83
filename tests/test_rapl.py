"""RAPL over fixture powercap trees: discovery by name, deltas, wrap, permissions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.other_user import NOBODY, Staged, setpriv, world_dir
from wattledger.accounting.counters import CounterTracker
from wattledger.model.readings import SourceState
from wattledger.collectors.rapl import RaplCollector


def copy_tree(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst, symlinks=True)
    return dst


def set_energy(root: Path, zone_rel: str, value_uj: int) -> None:
    (root / "class" / "powercap" / zone_rel / "energy_uj").write_text(f"{value_uj}\n")


def deltas(collector: RaplCollector, tracker: CounterTracker, now_ns: int) -> dict[tuple[str, str], float]:
    out = {}
    for c in collector.read(now_ns).counters:
        d = tracker.delta(c, now_ns)
        if d is not None:
            out[c.key] = d.energy_j
    return out


def test_intel_two_socket_zones_by_name() -> None:
    c = RaplCollector(FIXTURES / "sysfs-intel-2s")
    keys = [(z.component, z.device) for z in c.zones]
    assert keys == [("cpu", "package-0"), ("dram", "package-0"), ("cpu", "package-1"), ("dram", "package-1")]
    # core is inside the package, psys contains everything, mmio duplicates package-0: none is a pool
    p = c.probe()
    assert p.state is SourceState.FOUND
    assert "package-0/core" in p.detail and "psys" in p.detail


def test_intel_deltas_equal_counter_differences_with_wrap(tmp_path: Path) -> None:
    root = copy_tree("sysfs-intel-2s", tmp_path)
    c = RaplCollector(root)
    t = CounterTracker()
    assert deltas(c, t, 1_000_000_000) == {}  # first read: baseline only
    set_energy(root, "intel-rapl:0", 123456789012 + 85_000_000)  # +85 J
    set_energy(root, "intel-rapl:0:0", 23456789012 + 12_500_000)  # +12.5 J
    # package-1 was 1 J (1_000_000 uJ) below max_energy_range_uj: it wraps through 0 to 2 J
    set_energy(root, "intel-rapl:1", 1_999_999)
    set_energy(root, "intel-rapl:1:0", 34567890123 + 7_000_000)
    d = deltas(c, t, 2_000_000_000)
    assert d[("cpu", "package-0")] == pytest.approx(85.0)
    assert d[("dram", "package-0")] == pytest.approx(12.5)
    # (max - (max - 1e6)) + 1 (the step from max to 0) + 1_999_999 = 3_000_000 uJ
    assert d[("cpu", "package-1")] == pytest.approx(3.0)
    assert d[("dram", "package-1")] == pytest.approx(7.0)
    # the core sub-zone moving does not change any pool (no double counting)
    set_energy(root, "intel-rapl:0:1", 98765432109 + 50_000_000)
    d2 = deltas(c, t, 3_000_000_000)
    assert d2[("cpu", "package-0")] == 0.0


def test_amd_package_only(tmp_path: Path) -> None:
    root = copy_tree("sysfs-amd", tmp_path)
    c = RaplCollector(root)
    assert [(z.component, z.device) for z in c.zones] == [("cpu", "package-0")]
    assert c.zones[0].wrap_uj == 4294967296
    t = CounterTracker()
    deltas(c, t, 1)
    set_energy(root, "intel-rapl:0", 4294967295 - 4000000000 - 1)  # wrapped: less than before
    d = deltas(c, t, 2)
    # from 4_000_000_000 to max (294_967_295 uJ), one step to 0, then to 294_967_294
    assert d[("cpu", "package-0")] == pytest.approx((4294967296 - 4000000000 + 294967294) / 1e6)


def test_no_powercap_is_missing_not_zero(tmp_path: Path) -> None:
    c = RaplCollector(tmp_path)
    p = c.probe()
    assert p.state is SourceState.MISSING and "modprobe" in p.fix
    assert c.read(1).counters == ()


def test_root_only_energy_is_permission_denied(other_user_code: Staged) -> None:
    """Since CVE-2020-8694 energy_uj is mode 0400 root: an unprivileged reader gets a state and a fix.

    The reader is nobody, running a copy of the code over a tree in a world-readable directory
    (tests/other_user.py): where the checkout lives does not matter."""
    shared = world_dir("wl-rapl-")
    try:
        root = copy_tree("sysfs-amd", shared)
        energy = root / "devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj"
        energy.chmod(0o400)
        code = (
            "from wattledger.collectors.rapl import RaplCollector\n"
            "c = RaplCollector(%r); p = c.probe(); s = c.read(1)\n"
            "print(p.state.value); print(len(s.counters), s.failures[0].state.value); print(p.fix)\n"
        ) % str(root)
        out = subprocess.run(
            [*setpriv(NOBODY), *other_user_code.argv(code)], capture_output=True, text=True, check=True, cwd="/",
        ).stdout.splitlines()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert out[0] == "permission denied"
    assert out[1] == "0 permission denied"  # no counter, no zero: a failure
    assert "CAP_DAC_READ_SEARCH" in out[2]
