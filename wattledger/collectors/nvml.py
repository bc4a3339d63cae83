"""GPUs through NVML (the ``pynvml`` module of ``nvidia-ml-py``).

What it reads, per physical GPU (identified by UUID, never by index: indices
change with ``CUDA_VISIBLE_DEVICES`` and reboots, UUIDs do not):

* energy: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded;
  a decrease means the driver reloaded, ``agent.counters`` handles it). Where
  it is not supported (pre-Volta) the collector integrates power into its own
  cumulative counter and flags it ``source="nvml-power"``: the instantaneous
  power field (``NVML_FI_DEV_POWER_INSTANT``) when the driver has it, else
  ``nvmlDeviceGetPowerUsage``, which on Ampere and newer is a 1 s average and
  on A100/H100 is sampled only part of the time, so it misses energy.
* who holds the GPU: the compute and graphics running-process lists (host PIDs).
* who kept it busy: ``nvmlDeviceGetProcessUtilization(handle, lastSeen)``
  returns per-pid SM-utilisation samples newer than ``lastSeen`` (microsecond
  timestamps from the driver); we keep the newest timestamp seen per device
  and ask only for newer samples. NOT_FOUND means "no samples", i.e. idle.
  NOT_SUPPORTED (MIG instances, some boards) makes the device fall back to
  used memory, then to equal shares (``GpuDeviceReading.driver``).
* MIG: NVML meters the physical GPU only. With MIG enabled each MIG device
  (compute instance) is its own pool whose energy is the parent's measured
  energy split by slices (docs/gpu.md, "MIG"); slices no instance owns form
  the pool ``<parent UUID>/unallocated``. These counters are flagged
  ``source="nvml-mig"`` (``"nvml-power-mig"`` on an integrated parent).

Failures are typed (``NvmlProblem``) and become ``ProbeResult``s: from
``probe()`` for the whole library, in ``GpuSample.failures`` for one GPU that
failed one read. Each is logged once with what to do. One failing GPU never
stops the others.

The module imports ``pynvml`` lazily, so importing it never fails on a host
without the library. Tests pass a fake module with the same API
(tests/fake_nvml.py).
"""

from __future__ import annotations

import enum
import logging
import statistics
from dataclasses import dataclass, field
from typing import Any

from wattledger.model.readings import EnergyCounter, ProbeResult, SourceState

log = logging.getLogger(__name__)

SOURCE = "nvml"                     # the driver's energy counter
SOURCE_POWER = "nvml-power"         # power integrated by us: less accurate, flagged
SOURCE_MIG = "nvml-mig"             # a MIG instance's slice share of the counter
SOURCE_MIG_POWER = "nvml-power-mig"  # ... of the integrated power
COMPONENT = "gpu"
UNALLOCATED_SUFFIX = "/unallocated"

DRIVER_SM = "sm"
DRIVER_MEMORY = "memory"
DRIVER_EQUAL = "equal"


@dataclass(frozen=True)
class GpuProcess:
    """One host process on one GPU pool during the interval.

    ``sm_busy_s``: the interval's SM-busy seconds of the pid (mean smUtil% of
    its samples since the last read x interval); 0.0 when utilisation is
    supported and the pid had no samples (idle); None when utilisation is not
    available at all (MIG, unsupported board, first read of the device).
    ``holds_context``: the pid is in a running-process list now (a pid only
    seen in utilisation samples has already exited but was busy this interval).
    """

    pid: int
    sm_busy_s: float | None
    used_memory_bytes: int | None
    holds_context: bool = True


@dataclass(frozen=True)
class GpuDeviceReading:
    """One GPU pool (a physical GPU, a MIG instance, or a MIG GPU's unallocated slices).

    ``driver`` says which activity measure is available for this reading:
    ``"sm"`` (per-process SM utilisation), ``"memory"`` (used GPU memory) or
    ``"equal"`` (only who holds a context). ``interval_s`` is the time since
    this pool's previous read (None on the first read). ``processes_seen`` is
    False when NVML would not list the processes (both lists NOT_SUPPORTED or
    NO_PERMISSION): an empty ``processes`` then means "unknown", not "idle".
    """

    counter: EnergyCounter
    processes: tuple[GpuProcess, ...]
    driver: str  # "sm" | "memory" | "equal"
    interval_s: float | None = None
    parent: str = ""  # MIG pools: the physical GPU's UUID
    processes_seen: bool = True

    @property
    def device(self) -> str:
        return self.counter.device


@dataclass(frozen=True)
class GpuSample:
    now_ns: int
    devices: tuple[GpuDeviceReading, ...]
    failures: tuple[ProbeResult, ...] = ()


class NvmlProblem(str, enum.Enum):
    """The failure states worth their own name (docs/gpu.md, "Failure states")."""

    LIBRARY_MISSING = "library missing"
    DRIVER_NOT_LOADED = "driver not loaded"
    NO_PERMISSION = "no permission"
    NOT_SUPPORTED = "not supported"
    GPU_LOST = "GPU lost"
    NO_GPU = "no GPU"
    ERROR = "error"


# Whole-library failures that may clear while the agent runs (the NVIDIA module loaded
# after the service started, a driver update finishing): the collector probes again.
TRANSIENT = frozenset({NvmlProblem.DRIVER_NOT_LOADED, NvmlProblem.ERROR, NvmlProblem.GPU_LOST})

_STATE = {
    NvmlProblem.LIBRARY_MISSING: SourceState.MISSING,
    NvmlProblem.DRIVER_NOT_LOADED: SourceState.MISSING,
    NvmlProblem.NO_GPU: SourceState.MISSING,
    NvmlProblem.NO_PERMISSION: SourceState.PERMISSION_DENIED,
    NvmlProblem.NOT_SUPPORTED: SourceState.NOT_SUPPORTED,
    NvmlProblem.GPU_LOST: SourceState.ERROR,
    NvmlProblem.ERROR: SourceState.ERROR,
}

_FIX = {
    NvmlProblem.LIBRARY_MISSING: (
        "install the NVIDIA driver (it ships libnvidia-ml.so.1) and the Python package "
        "nvidia-ml-py; on a host without NVIDIA GPUs set [agent] gpus = \"never\""
    ),
    NvmlProblem.DRIVER_NOT_LOADED: (
        "load the NVIDIA kernel module (check `nvidia-smi`, `modprobe nvidia`, dmesg); "
        "on a host without NVIDIA GPUs set [agent] gpus = \"never\""
    ),
    NvmlProblem.NO_PERMISSION: (
        "give the service user access to /dev/nvidia* (e.g. the video group) or run "
        "the agent as the packaged systemd unit"
    ),
    NvmlProblem.NOT_SUPPORTED: "nothing to fix: this board or driver does not offer it; the fallback is used",
    NvmlProblem.GPU_LOST: (
        "the GPU fell off the bus: check dmesg for Xid errors, then reset the GPU "
        "(nvidia-smi -r) or reboot; other GPUs keep being measured"
    ),
    NvmlProblem.NO_GPU: "nothing to measure here; set [agent] gpus = \"never\" to skip the probe",
    NvmlProblem.ERROR: "run `nvidia-smi -q` to see the driver's view; report the NVML error code",
}


def classify(nvml: Any, err: BaseException) -> NvmlProblem:
    """Name an NVML error (by its ``.value``, as every NVMLError subclass carries)."""
    value = getattr(err, "value", None)
    names = {
        "NVML_ERROR_LIBRARY_NOT_FOUND": NvmlProblem.LIBRARY_MISSING,
        "NVML_ERROR_FUNCTION_NOT_FOUND": NvmlProblem.NOT_SUPPORTED,
        "NVML_ERROR_DRIVER_NOT_LOADED": NvmlProblem.DRIVER_NOT_LOADED,
        "NVML_ERROR_NO_PERMISSION": NvmlProblem.NO_PERMISSION,
        "NVML_ERROR_NOT_SUPPORTED": NvmlProblem.NOT_SUPPORTED,
        "NVML_ERROR_GPU_IS_LOST": NvmlProblem.GPU_LOST,
    }
    for name, problem in names.items():
        if value is not None and value == getattr(nvml, name, object()):
            return problem
    if type(err).__name__ == "NVMLLibraryMismatchError":
        return NvmlProblem.NOT_SUPPORTED
    return NvmlProblem.ERROR


def problem_result(problem: NvmlProblem, detail: str, devices: tuple[str, ...] = ()) -> ProbeResult:
    """A ProbeResult whose detail starts with the problem's name (``"GPU lost: ..."``)."""
    return ProbeResult(
        source=SOURCE,
        state=_STATE[problem],
        detail=f"{problem.value}: {detail}",
        fix=_FIX[problem],
        devices=devices,
    )


def problem_of(result: ProbeResult) -> NvmlProblem | None:
    """The NvmlProblem a ProbeResult from this module reports (None when FOUND)."""
    if result.ok:
        return None
    for problem in NvmlProblem:
        if result.detail.startswith(problem.value + ":"):
            return problem
    return NvmlProblem.ERROR


def _errtext(err: BaseException) -> str:
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the code
        text = ""
    return f"NVML error {getattr(err, 'value', '?')} ({text or type(err).__name__})"


@dataclass
class _Activity:
    """Per-pool state for process utilisation: the last sample timestamp and read time."""

    util_supported: bool = True
    last_seen_us: int = 0
    last_read_ns: int | None = None


@dataclass
class _MigSlot:
    uuid: str
    handle: Any
    gi_id: int
    gi_slices: int
    ci_slices: int
    activity: _Activity = field(default_factory=_Activity)


@dataclass
class _Gpu:
    index: int
    uuid: str
    name: str
    handle: Any
    energy_counter: bool                 # nvmlDeviceGetTotalEnergyConsumption works
    power_field: bool = True             # NVML_FI_DEV_POWER_INSTANT works (until it does not)
    mig: bool = False
    max_mig: int = 0
    activity: _Activity = field(default_factory=_Activity)
    # Power integration (energy_counter False): our own cumulative counter.
    integrated_uj: float = 0.0
    last_power: tuple[int, float] | None = None  # (now_ns, power_w)
    # MIG split state: the parent's last raw counter and each pool's cumulative share.
    parent_last_uj: int | None = None
    pool_uj: dict[str, int] = field(default_factory=dict)
    mig_slots: dict[str, _MigSlot] = field(default_factory=dict)
    failing_since_ns: int | None = None  # first failed read of a run of failed reads


class NvmlCollector:
    """Reads every NVIDIA GPU of the host; ``nvml`` is pynvml or a fake with its API."""

    name = "nvml"

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._initialised = False
        self._gpus: list[_Gpu] = []
        self._device_probes: list[ProbeResult] = []
        self._probe: ProbeResult | None = None
        self._logged: set[tuple[str, str]] = set()
        self._reads = 0
        self.reprobe_every = 60  # reads between looking again for GPUs that failed discovery
        self.bridge_gap_s = 60.0  # a failed read shorter than this is charged by the next good read
        self._pending: list[tuple[_Activity, int, int]] = []  # applied when a GPU's whole read succeeded

    # -- logging once ------------------------------------------------------

    def _once(self, key: tuple[str, str], level: int, msg: str, *args: object) -> None:
        if key in self._logged:
            return
        self._logged.add(key)
        log.log(level, msg, *args)

    def _recovered(self, device: str) -> None:
        stale = {k for k in self._logged if k[0] == device and k[1].startswith("fail:")}
        if stale:
            self._logged -= stale
            log.info("nvml: GPU %s reads again", device)

    # -- discovery ---------------------------------------------------------

    def _module(self) -> Any:
        if self._nvml is None:
            import pynvml  # nvidia-ml-py; imported here so our import never fails without it

            self._nvml = pynvml
        return self._nvml

    def probe(self) -> ProbeResult:
        """Initialise NVML, find the GPUs and what each can give; safe to call again."""
        try:
            nvml = self._module()
        except ImportError as e:
            result = problem_result(
                NvmlProblem.LIBRARY_MISSING, f"the Python package nvidia-ml-py is not installed ({e})"
            )
            return self._set_probe(result)
        if not self._initialised:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as e:
                return self._set_probe(problem_result(classify(nvml, e), f"nvmlInit failed: {_errtext(e)}"))
            self._initialised = True
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as e:
            return self._set_probe(problem_result(classify(nvml, e), f"nvmlDeviceGetCount failed: {_errtext(e)}"))
        if count == 0:
            return self._set_probe(problem_result(NvmlProblem.NO_GPU, "NVML sees no GPU"))
        known = {g.uuid: g for g in self._gpus}
        gpus: list[_Gpu] = []
        probes: list[ProbeResult] = []
        for index in range(count):
            gpu, result = self._discover(index, known)
            probes.append(result)
            if gpu is not None:
                gpus.append(gpu)
        self._gpus = gpus
        self._device_probes = probes
        if not gpus:
            worst = probes[0]
            return self._set_probe(
                ProbeResult(SOURCE, worst.state, f"none of {count} GPU(s) can be read; first: {worst.detail}", worst.fix)
            )
        devices: list[str] = []
        for g in gpus:
            devices.extend(self._pool_names(g))
        failed = [p for p in probes if not p.ok]
        detail = f"{len(gpus)} of {count} GPU(s) measured: " + "; ".join(p.detail for p in probes if p.ok)
        if failed:
            detail += f"; {len(failed)} failed: " + "; ".join(p.detail for p in failed)
        return self._set_probe(ProbeResult(SOURCE, SourceState.FOUND, detail, devices=tuple(devices)))

    def _set_probe(self, result: ProbeResult) -> ProbeResult:
        self._probe = result
        if not result.ok:
            # No NVIDIA stack at all is normal on many hosts: info, not a warning.
            quiet = problem_of(result) in (NvmlProblem.LIBRARY_MISSING, NvmlProblem.NO_GPU)
            self._once(("nvml", "probe:" + result.detail), logging.INFO if quiet else logging.WARNING,
                       "nvml: %s; %s", result.detail, result.fix)
        return result

    def device_probes(self) -> tuple[ProbeResult, ...]:
        """One ProbeResult per GPU from the last probe() (for ``doctor``)."""
        return tuple(self._device_probes)

    def _discover(self, index: int, known: dict[str, _Gpu]) -> tuple[_Gpu | None, ProbeResult]:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = str(nvml.nvmlDeviceGetUUID(handle))
            name = str(nvml.nvmlDeviceGetName(handle))
        except nvml.NVMLError as e:
            return None, problem_result(classify(nvml, e), f"GPU index {index}: {_errtext(e)}", (f"index:{index}",))
        try:
            energy_counter = self._supported(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            mig = False
            max_mig = 0
            if self._supported(lambda: nvml.nvmlDeviceGetMigMode(handle)):
                mig = int(nvml.nvmlDeviceGetMigMode(handle)[0]) == int(nvml.NVML_DEVICE_MIG_ENABLE)
                if mig:
                    max_mig = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        except nvml.NVMLError as e:
            return None, problem_result(classify(nvml, e), f"GPU {index} {uuid}: {_errtext(e)}", (uuid,))
        old = known.get(uuid)
        if old is not None and old.energy_counter == energy_counter and old.mig == mig:
            gpu = old  # keep counters and last-seen timestamps across re-probes
            gpu.handle, gpu.index, gpu.max_mig = handle, index, max_mig
        else:
            gpu = _Gpu(index, uuid, name, handle, energy_counter, mig=mig, max_mig=max_mig)
        parts = [f"GPU {index} {uuid} ({name})"]
        if energy_counter:
            parts.append("energy counter")
        else:
            parts.append("no energy counter: integrating power (less accurate)")
        if mig:
            try:
                self._refresh_mig(gpu)
            except nvml.NVMLError as e:
                return None, problem_result(classify(nvml, e), f"GPU {index} {uuid}: MIG: {_errtext(e)}", (uuid,))
            parts.append(f"MIG enabled, {len(gpu.mig_slots)} instance(s), energy split by slices")
        else:
            try:
                util = self._util_supported(handle)
            except (nvml.NVMLError, *_mismatch(nvml)) as e:
                return None, problem_result(classify(nvml, e), f"GPU {index} {uuid}: {_errtext(e)}", (uuid,))
            gpu.activity.util_supported = util
            parts.append("per-process SM utilisation" if util else "no per-process utilisation: split by memory")
        return gpu, ProbeResult(SOURCE, SourceState.FOUND, ", ".join(parts), devices=tuple(self._pool_names(gpu)))

    def _supported(self, call: Any) -> bool:
        """True if the call works, False if NOT_SUPPORTED; other errors propagate."""
        nvml = self._nvml
        try:
            call()
            return True
        except nvml.NVMLError as e:
            if classify(nvml, e) is NvmlProblem.NOT_SUPPORTED:
                return False
            raise

    def _util_supported(self, handle: Any) -> bool:
        nvml = self._nvml
        try:
            _sized(nvml, lambda: nvml.nvmlDeviceGetProcessUtilization(handle, 0))
            return True
        except nvml.NVMLError as e:
            if e.value in (nvml.NVML_ERROR_NOT_FOUND, nvml.NVML_SUCCESS):
                return True  # supported, just no samples yet
            if classify(nvml, e) in (NvmlProblem.NOT_SUPPORTED, NvmlProblem.NO_PERMISSION):
                return False
            raise

    def _pool_names(self, gpu: _Gpu) -> list[str]:
        if not gpu.mig:
            return [gpu.uuid]
        return sorted(gpu.mig_slots) + [gpu.uuid + UNALLOCATED_SUFFIX]

    def _refresh_mig(self, gpu: _Gpu) -> None:
        """Re-read the MIG layout (instances are created and destroyed by admins)."""
        nvml = self._nvml
        slots: dict[str, _MigSlot] = {}
        for i in range(gpu.max_mig):
            try:
                h = nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, i)
            except nvml.NVMLError as e:
                if e.value in (nvml.NVML_ERROR_NOT_FOUND, nvml.NVML_ERROR_INVALID_ARGUMENT):
                    continue  # empty slot
                raise
            uuid = str(nvml.nvmlDeviceGetUUID(h))
            attrs = nvml.nvmlDeviceGetAttributes(h)
            old = gpu.mig_slots.get(uuid)
            slot = _MigSlot(
                uuid=uuid,
                handle=h,
                gi_id=int(nvml.nvmlDeviceGetGpuInstanceId(h)),
                gi_slices=max(0, int(attrs.gpuInstanceSliceCount)),
                ci_slices=max(0, int(attrs.computeInstanceSliceCount)),
            )
            if old is not None:
                slot.activity = old.activity
            slots[uuid] = slot
        gpu.mig_slots = slots

    # -- reading -----------------------------------------------------------

    def read(self, now_ns: int) -> GpuSample:
        """Cumulative energy and the interval's per-process activity of every pool."""
        if self._probe is None:
            self.probe()
        assert self._probe is not None
        self._reads += 1
        if self._reads % self.reprobe_every == 0 and self._worth_reprobing():
            was_ok = self._probe.ok
            if self.probe().ok and not was_ok:  # e.g. the driver was loaded after the agent started
                log.info("nvml: %s", self._probe.detail)
        if not self._probe.ok:
            return GpuSample(now_ns, (), (self._probe,))
        nvml = self._nvml
        readings: list[GpuDeviceReading] = []
        failures: list[ProbeResult] = []
        for gpu in self._gpus:
            if gpu.failing_since_ns is not None and now_ns - gpu.failing_since_ns > self.bridge_gap_s * 1e9:
                self._forget_gap(gpu)  # too long to charge by what the next read will show
            self._pending = []
            try:
                readings.extend(self._read_gpu(gpu, now_ns))
            except (nvml.NVMLError, *_mismatch(nvml)) as e:
                problem = classify(nvml, e)
                result = problem_result(problem, f"GPU {gpu.index} {gpu.uuid}: {_errtext(e)}", (gpu.uuid,))
                failures.append(result)
                self._once((gpu.uuid, "fail:" + problem.value), logging.WARNING,
                           "nvml: %s; %s", result.detail, result.fix)
                if problem is NvmlProblem.GPU_LOST or not gpu.energy_counter:
                    # A lost GPU may come back reset; integrated power has nothing for the gap:
                    # the first read after it is a baseline (the gap is not charged).
                    self._forget_gap(gpu)
                elif gpu.failing_since_ns is None:
                    # The energy counter spans the gap and the driver keeps utilisation
                    # samples: the next good read charges it (within bridge_gap_s).
                    gpu.failing_since_ns = now_ns
                continue
            for act, read_ns, seen_us in self._pending:  # the whole GPU was read: move on
                act.last_read_ns, act.last_seen_us = read_ns, seen_us
            gpu.failing_since_ns = None
            self._recovered(gpu.uuid)
        return GpuSample(now_ns, tuple(readings), tuple(failures))

    def _worth_reprobing(self) -> bool:
        """A library-wide failure that may clear, or a GPU that failed discovery and may be back.

        Probing again keeps the state (counters, last-seen timestamps) of GPUs already known.
        """
        assert self._probe is not None
        if not self._probe.ok:
            return problem_of(self._probe) in TRANSIENT
        return any(not p.ok for p in self._device_probes)

    def _forget_gap(self, gpu: _Gpu) -> None:
        """Make the GPU's next read a baseline: no interval, nothing integrated or split across the gap."""
        gpu.last_power = None
        gpu.parent_last_uj = None
        gpu.activity.last_read_ns = None
        for slot in gpu.mig_slots.values():
            slot.activity.last_read_ns = None
        gpu.failing_since_ns = None

    def _read_gpu(self, gpu: _Gpu, now_ns: int) -> list[GpuDeviceReading]:
        if gpu.energy_counter:
            energy_uj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)) * 1000
            source = SOURCE
        else:
            energy_uj = self._integrate_power(gpu, now_ns)
            source = SOURCE_POWER
        if gpu.mig:
            return self._read_mig(gpu, energy_uj, source, now_ns)
        processes, driver, interval_s, seen = self._activity(gpu.uuid, gpu.handle, gpu.activity, now_ns)
        counter = EnergyCounter(COMPONENT, gpu.uuid, source, energy_uj)
        return [GpuDeviceReading(counter, processes, driver, interval_s, processes_seen=seen)]

    def _power_w(self, gpu: _Gpu) -> float:
        nvml = self._nvml
        if gpu.power_field:
            try:
                fv = nvml.nvmlDeviceGetFieldValues(gpu.handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
                if int(fv.nvmlReturn) == int(nvml.NVML_SUCCESS):
                    return _field_number(nvml, fv) / 1000.0
                ret = int(fv.nvmlReturn)
            except nvml.NVMLError as e:
                if classify(nvml, e) is not NvmlProblem.NOT_SUPPORTED:
                    raise
                ret = e.value
            gpu.power_field = False
            self._once((gpu.uuid, "power-field"), logging.INFO,
                       "nvml: GPU %s has no instantaneous power field (NVML %s); integrating the "
                       "1 s averaged nvmlDeviceGetPowerUsage instead (less accurate)", gpu.uuid, ret)
        return int(nvml.nvmlDeviceGetPowerUsage(gpu.handle)) / 1000.0

    def _integrate_power(self, gpu: _Gpu, now_ns: int) -> int:
        """Trapezoidal integral of power into a cumulative counter (first read adds nothing)."""
        power_w = self._power_w(gpu)
        if gpu.last_power is not None:
            last_ns, last_w = gpu.last_power
            if now_ns > last_ns:
                gpu.integrated_uj += (last_w + power_w) / 2.0 * (now_ns - last_ns) / 1e3
        gpu.last_power = (now_ns, power_w)
        return int(gpu.integrated_uj)

    def _processes(self, device: str, handle: Any) -> tuple[dict[int, int | None], bool]:
        """pid -> used memory (bytes or None) from the compute and graphics lists; False if neither answered."""
        nvml = self._nvml
        found: dict[int, int | None] = {}
        answered = False
        for fn_name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                procs = _sized(nvml, lambda: getattr(nvml, fn_name)(handle))
            except (nvml.NVMLError, *_mismatch(nvml)) as e:
                problem = classify(nvml, e)
                if problem in (NvmlProblem.NOT_SUPPORTED, NvmlProblem.NO_PERMISSION):
                    self._once((device, fn_name), logging.WARNING,
                               "nvml: %s on %s: %s (%s); processes from this list are not seen",
                               fn_name, device, problem.value, _errtext(e))
                    continue
                raise
            answered = True
            for p in procs:
                mem = getattr(p, "usedGpuMemory", None)
                mem = int(mem) if mem is not None else None
                pid = int(p.pid)
                if pid in found and found[pid] is not None and mem is not None:
                    found[pid] = max(found[pid] or 0, mem)  # a pid in both lists: same memory
                elif pid not in found or found[pid] is None:
                    found[pid] = mem
        return found, answered

    def _activity(
        self, device: str, handle: Any, act: _Activity, now_ns: int
    ) -> tuple[tuple[GpuProcess, ...], str, float | None, bool]:
        nvml = self._nvml
        holders, seen = self._processes(device, handle)
        interval_s = None
        if act.last_read_ns is not None and now_ns > act.last_read_ns:
            interval_s = (now_ns - act.last_read_ns) / 1e9
        util: list[tuple[int, int, int]] | None = None  # (pid, timestamp_us, smUtil %)
        prev_seen_us = act.last_seen_us
        seen_us = prev_seen_us
        if act.util_supported:
            try:
                samples = _sized(nvml, lambda: nvml.nvmlDeviceGetProcessUtilization(handle, prev_seen_us))
                util = [(int(s.pid), int(s.timeStamp), min(100, max(0, int(s.smUtil))))
                        for s in samples if int(s.timeStamp) > prev_seen_us]
                seen_us = max([prev_seen_us] + [ts for _, ts, _ in util])
            except nvml.NVMLError as e:
                if e.value in (nvml.NVML_ERROR_NOT_FOUND, nvml.NVML_SUCCESS):
                    # No samples since last_seen: every holder was idle. (pynvml raises
                    # NVMLError(SUCCESS) when the driver answers an empty SUCCESS.)
                    util = []
                elif classify(nvml, e) in (NvmlProblem.NOT_SUPPORTED, NvmlProblem.NO_PERMISSION):
                    act.util_supported = False
                    self._once((device, "util"), logging.INFO,
                               "nvml: per-process utilisation on %s: %s; splitting its energy by "
                               "used memory instead", device, _errtext(e))
                else:
                    raise
        busy = sm_busy_seconds(util, prev_seen_us, interval_s) if util is not None and interval_s else {}
        processes: list[GpuProcess] = []
        pids = set(holders) | {pid for pid, _, _ in util or ()}
        for pid in sorted(pids):
            sm_busy_s: float | None = None
            if util is not None and interval_s is not None:
                sm_busy_s = busy.get(pid, 0.0)
            processes.append(GpuProcess(pid, sm_busy_s, holders.get(pid), holds_context=pid in holders))
        if util is not None:
            driver = DRIVER_SM
        elif any(p.used_memory_bytes for p in processes):
            driver = DRIVER_MEMORY
        else:
            driver = DRIVER_EQUAL
        self._pending.append((act, now_ns, seen_us))
        return tuple(processes), driver, interval_s, seen

    def _read_mig(self, gpu: _Gpu, parent_uj: int, source: str, now_ns: int) -> list[GpuDeviceReading]:
        """Split the parent's interval energy to its MIG pools by slices (docs/gpu.md)."""
        old_slots = set(gpu.mig_slots)
        self._refresh_mig(gpu)
        mig_source = SOURCE_MIG if source == SOURCE else SOURCE_MIG_POWER
        unallocated = gpu.uuid + UNALLOCATED_SUFFIX
        if gpu.parent_last_uj is not None:
            delta_uj = parent_uj - gpu.parent_last_uj
            if delta_uj < 0:
                delta_uj = parent_uj  # driver reload: energy since the reset
            # A pool new this read has no previous reading, so the ledger would drop
            # its share: it goes to the unallocated pool for this one read.
            shares = mig_shares(
                {u: (s.gi_id, s.gi_slices, s.ci_slices) for u, s in gpu.mig_slots.items() if u in old_slots},
                gpu.max_mig,
            )
            given = 0
            for uuid, frac in shares.items():
                part = int(delta_uj * frac)
                gpu.pool_uj[uuid] = gpu.pool_uj.get(uuid, 0) + part
                given += part
            gpu.pool_uj[unallocated] = gpu.pool_uj.get(unallocated, 0) + (delta_uj - given)
        gpu.parent_last_uj = parent_uj
        readings: list[GpuDeviceReading] = []
        for uuid, slot in sorted(gpu.mig_slots.items()):
            processes, driver, interval_s, seen = self._activity(uuid, slot.handle, slot.activity, now_ns)
            counter = EnergyCounter(COMPONENT, uuid, mig_source, gpu.pool_uj.setdefault(uuid, 0))
            readings.append(GpuDeviceReading(counter, processes, driver, interval_s, parent=gpu.uuid,
                                             processes_seen=seen))
        interval_s = None
        if gpu.activity.last_read_ns is not None and now_ns > gpu.activity.last_read_ns:
            interval_s = (now_ns - gpu.activity.last_read_ns) / 1e9
        self._pending.append((gpu.activity, now_ns, gpu.activity.last_seen_us))
        counter = EnergyCounter(COMPONENT, unallocated, mig_source, gpu.pool_uj.setdefault(unallocated, 0))
        readings.append(GpuDeviceReading(counter, (), DRIVER_EQUAL, interval_s, parent=gpu.uuid))
        return readings

    def close(self) -> None:
        if self._initialised and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._initialised = False
            self._probe = None


def sm_busy_seconds(
    samples: list[tuple[int, int, int]], prev_seen_us: int, interval_s: float
) -> dict[int, float]:
    """SM-busy seconds per pid in one interval from NVML utilisation samples.

    ``samples`` are (pid, timestamp_us, smUtil %) newer than ``prev_seen_us``
    (the newest timestamp of the previous read, 0 if none). Each sample is
    weighted by the time it covers: the gap to the same pid's previous sample,
    capped at the sampling period (the median gap between consecutive samples
    of one pid, over all pids), because a long gap is time in which the
    driver had nothing to report for that pid: idle. A pid's first sample in
    the read covers one period. Gaps are taken per pid, never across pids,
    so samples of different processes taken a few milliseconds apart do not
    shorten each other's spans. With no pid having two samples (nothing to
    measure a period with), a sample covers the time since ``prev_seen_us``
    (the whole interval on a first read). Spans and totals are capped at the
    interval.

    Why not "mean smUtil x interval": a pid with one sample in the interval
    (it started or stopped near a tick, or ran one short burst) would be
    charged as if it had run the whole interval; see docs/gpu.md.
    """
    if not samples:
        return {}
    by_pid: dict[int, list[tuple[int, int]]] = {}
    for pid, ts, pct in samples:
        by_pid.setdefault(pid, []).append((ts, pct))
    for series in by_pid.values():
        series.sort()
    gaps = [b[0] - a[0] for series in by_pid.values() for a, b in zip(series, series[1:]) if b[0] > a[0]]
    period_us = statistics.median(gaps) if gaps else None
    interval_us = interval_s * 1e6
    busy: dict[int, float] = {}
    for pid, series in by_pid.items():
        total_us = 0.0
        previous: int | None = None
        for ts, pct in series:
            if previous is not None:
                span = min(ts - previous, period_us) if period_us is not None else 0.0
            elif period_us is not None:
                span = period_us
            elif 0 < prev_seen_us < ts:
                span = ts - prev_seen_us
            else:
                span = interval_us
            total_us += pct / 100.0 * min(max(span, 0.0), interval_us)
            previous = ts
        busy[pid] = min(total_us / 1e6, interval_s)
    return busy


def mig_shares(slots: dict[str, tuple[int, int, int]], total_slices: int) -> dict[str, float]:
    """Each MIG device's fraction of the physical GPU: (gi_id, gi_slices, ci_slices) per UUID.

    A GPU instance owns gi_slices of the GPU's total_slices; its compute
    instances (the MIG devices) share that by their own slice counts. What no
    instance owns is left over (1 - sum), for the unallocated pool.
    """
    by_gi: dict[int, list[tuple[str, int, int]]] = {}
    for uuid, (gi_id, gi_slices, ci_slices) in slots.items():
        by_gi.setdefault(gi_id, []).append((uuid, gi_slices, ci_slices))
    gi_total = sum(members[0][1] for members in by_gi.values())
    total = max(total_slices, gi_total, 1)
    shares: dict[str, float] = {}
    for members in by_gi.values():
        gi_frac = members[0][1] / total
        ci_total = sum(max(ci, 0) for _, _, ci in members)
        for uuid, _, ci in members:
            shares[uuid] = gi_frac * (ci / ci_total if ci_total else 1.0 / len(members))
    return shares


def _field_number(nvml: Any, fv: Any) -> float:
    """The value of one nvmlFieldValue_t, by its valueType."""
    kinds = {
        getattr(nvml, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
        getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
        getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
        getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
        getattr(nvml, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
        getattr(nvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
        getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_SHORT", 6): "usVal",
    }
    return float(getattr(fv.value, kinds.get(int(fv.valueType), "uiVal")))


SIZED_CALL_TRIES = 3


def _sized(nvml: Any, call: Any) -> Any:
    """A pynvml call that asks the driver for a count, then for that many entries.

    If processes or samples are added between the two, the second answer is
    INSUFFICIENT_SIZE (pynvml oversizes the process lists a little, not the
    utilisation samples): a race, not a failure, so ask again.
    """
    for attempt in range(1, SIZED_CALL_TRIES + 1):
        try:
            return call()
        except nvml.NVMLError as e:
            if e.value != getattr(nvml, "NVML_ERROR_INSUFFICIENT_SIZE", 7) or attempt == SIZED_CALL_TRIES:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _mismatch(nvml: Any) -> tuple[type[BaseException], ...]:
    cls = getattr(nvml, "NVMLLibraryMismatchError", None)
    return (cls,) if isinstance(cls, type) else ()
