"""A live fake powercap tree: a RAPL package (and DRAM) zone whose energy follows a known linear model.

A writer process (``python -m tests.live_powercap``) integrates, every
``period_s``, the power

    P_package = idle_w + per_vcpu_w * (busy vCPUs of this machine, from /proc/stat)
    P_dram    = dram_w (constant: all static)

into ``energy_uj`` files laid out as the kernel lays out powercap
(``class/powercap/intel-rapl:0`` named ``package-0``, its ``intel-rapl:0:0``
sub-zone named ``dram``), so the real RAPL collector reads it through
``--sysfs-root``. Each file is replaced atomically (write, then rename), so a
reader never sees half a number. The counters wrap at ``max_energy_range_uj``
like RAPL's.

The truth it offers: under the linear model, a process that used c CPU
seconds added exactly ``per_vcpu_w * c`` joules to the package (dynamic),
and under time-driven ABC its share of the idle draw is
``(idle_w + dram_w) * c / ncpu`` (capacity: ncpu vCPU-seconds per second).
``true_charge_j(c)`` is their sum: what a job of c CPU seconds should be
charged, whatever ran beside it.

The machine's busy time is read from the root ``cpuacct.usage`` (cgroup v1:
every task's CPU time in nanoseconds) where it is mounted, else from
/proc/stat (clock ticks: 10 ms steps, so short runs are noisier). The tree's
figure lags the machine by one period (2 ms by default) plus the writer's
wake-up latency, which it keeps short by running as a real-time (SCHED_FIFO)
task where it may, else at nice -10. A VM's vCPU can still be taken away for
milliseconds: the writer counts each time it woke more than 2.5 periods late
(``stalls()``), so a measurement taken across a stall can be told apart
from one the tree was fit for.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from wattledger.collectors.procs import parse_proc_stat

WRAP_UJ = 262_143_328_850  # a real package's max_energy_range_uj
STALLS_FILE = "stalls"  # how many times the writer woke up late (> STALL_PERIODS periods)
STALL_PERIODS = 2.5


@dataclass(frozen=True)
class LinearModel:
    idle_w: float = 20.0       # package power with nothing running
    per_vcpu_w: float = 10.0   # added per busy vCPU
    dram_w: float = 3.0        # DRAM, constant

    def true_charge_j(self, cpu_s: float, ncpu: int) -> float:
        """What c CPU seconds cost under the model and the capacity policy: dynamic plus their idle share."""
        return cpu_s * (self.per_vcpu_w + (self.idle_w + self.dram_w) / ncpu)

    def idle_config(self) -> dict[str, float]:
        """``[attribution] idle_power_w`` that states the model's idle powers (the tree does not know them)."""
        return {"cpu": self.idle_w, "dram": self.dram_w}


def _zone(root: Path, zone: str, name: str) -> Path:
    path = root / "class" / "powercap" / zone
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(name + "\n")
    (path / "max_energy_range_uj").write_text(f"{WRAP_UJ}\n")
    (path / "energy_uj").write_text("0\n")
    return path


SHM = Path("/dev/shm")


class LivePowercap:
    """The tree at ``root`` and its writer process; a context manager.

    The files live in a tmpfs (``/dev/shm``, ``root`` a symlink to them) where there is one: on a
    disk, replacing a file now and then takes 15 ms, and a late writer is a stale counter.
    """

    def __init__(self, root: Path, model: LinearModel = LinearModel(), period_s: float = 0.002) -> None:
        self.root = Path(root)
        self.model = model
        self.period_s = period_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._shm: Path | None = None
        if SHM.is_dir() and os.access(SHM, os.W_OK):
            self._shm = Path(tempfile.mkdtemp(prefix="wl-powercap-", dir=SHM))
            self.root.parent.mkdir(parents=True, exist_ok=True)
            self.root.symlink_to(self._shm, target_is_directory=True)
        _zone(self.root, "intel-rapl:0", "package-0")
        _zone(self.root, "intel-rapl:0:0", "dram")

    def start(self) -> LivePowercap:
        m = self.model
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.live_powercap", str(self.root), str(m.idle_w), str(m.per_vcpu_w),
             str(m.dram_w), str(self.period_s)],
            cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "WATTLEDGER_JOB": "fake-powercap-writer"})
        deadline = time.monotonic() + 10
        while self.energy_uj("intel-rapl:0") == 0:  # the writer has written once
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fake powercap writer did not start")
            time.sleep(0.01)
        return self

    def stalls(self) -> int:
        """How many times the writer was late so far: a reading taken then was stale (an out-of-spec tree)."""
        try:
            return int((self.root / STALLS_FILE).read_text())
        except FileNotFoundError:
            return 0

    def energy_uj(self, zone: str) -> int:
        return int((self.root / "class" / "powercap" / zone / "energy_uj").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        if self._shm is not None:
            shutil.rmtree(self._shm, ignore_errors=True)
            self._shm = None

    def __enter__(self) -> LivePowercap:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


CPUACCT = Path("/sys/fs/cgroup/cpuacct/cpuacct.usage")  # cgroup v1 root: every task's CPU time, in ns


def busy_reader() -> tuple[str, Callable[[], float]]:
    """(what measures the machine's busy time, a function giving it in seconds): the root cpuacct's
    nanoseconds where cgroup v1 mounts it (exact), else /proc/stat's clock ticks (10 ms steps)."""
    try:
        int(CPUACCT.read_text())

        def from_cpuacct() -> float:
            return int(CPUACCT.read_text()) / 1e9

        return "cpuacct.usage (ns)", from_cpuacct
    except (OSError, ValueError):
        clk = os.sysconf("SC_CLK_TCK")

        def from_stat() -> float:
            with open("/proc/stat") as f:
                return parse_proc_stat(f.read()).busy_ticks / clk  # as the process reader counts

        return "/proc/stat (clock ticks)", from_stat


def _write(path: Path, energy_uj: float) -> None:
    tmp = path.with_name(".energy_uj.tmp")
    tmp.write_text(f"{int(energy_uj) % (WRAP_UJ + 1)}\n")
    os.replace(tmp, path)


def _wake_first() -> None:
    """On a loaded machine a late writer is a stale counter: run as a real-time task where allowed
    (root; it sleeps 2 ms between ~0.1 ms of work, so it cannot starve anyone), else at nice -10."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return
    except (OSError, AttributeError):
        pass
    try:
        os.nice(-10)
    except OSError:
        pass


def _writer(root: Path, idle_w: float, per_vcpu_w: float, dram_w: float, period_s: float) -> None:
    zones = root / "class" / "powercap"
    package, dram = zones / "intel-rapl:0" / "energy_uj", zones / "intel-rapl:0:0" / "energy_uj"
    _, busy_s = busy_reader()
    _wake_first()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    last_busy, last_t = busy_s(), time.monotonic()
    package_uj = dram_uj = 1.0
    stalls = 0
    while not stop:
        time.sleep(period_s)
        busy, now = busy_s(), time.monotonic()
        dt = now - last_t
        if dt > STALL_PERIODS * period_s:  # the writer was late: the counters were stale meanwhile
            stalls += 1
            (root / STALLS_FILE).write_text(f"{stalls}\n")
        package_uj += (idle_w * dt + per_vcpu_w * (busy - last_busy)) * 1e6
        dram_uj += dram_w * dt * 1e6
        last_busy, last_t = busy, now
        _write(package, package_uj)
        _write(dram, dram_uj)


if __name__ == "__main__":
    _writer(Path(sys.argv[1]), *(float(x) for x in sys.argv[2:6]))
