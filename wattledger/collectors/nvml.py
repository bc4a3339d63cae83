"""GPUs through NVML (the ``pynvml`` module of ``nvidia-ml-py``): a reader, nothing more.

What it reads, per physical GPU (identified by UUID, never by index: indices
change with ``CUDA_VISIBLE_DEVICES`` and reboots, UUIDs do not):

* energy: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver
  loaded). Where it is not supported (pre-Volta) the GPU's power now instead:
  the instantaneous power field (``NVML_FI_DEV_POWER_INSTANT``) when the
  driver has it, else ``nvmlDeviceGetPowerUsage`` (on Ampere and newer a 1 s
  average, sampled only part of the time on A100/H100). ``accounting.gpu``
  integrates it and flags it.
* who holds the GPU: the compute and graphics running-process lists (host PIDs).
* who kept it busy: ``nvmlDeviceGetProcessUtilization(handle, lastSeen)``
  returns per-pid SM-utilisation samples newer than ``lastSeen`` (the
  driver's microsecond timestamps). The reader keeps the newest timestamp
  seen per pool (a cursor, like a file offset) and moves it only when the
  whole GPU was read: after a failed read the next one returns the samples
  of the gap too. NOT_FOUND means "no samples", i.e. idle. NOT_SUPPORTED
  (MIG instances, some boards) gives ``util = None``.
* MIG: each MIG instance's layout (GPU-instance id, slices) and activity.

Turning this into pools (deltas, MIG split, power integration, SM-busy
seconds, which measure splits a pool) is ``accounting.gpu``'s job.

Failures are typed (``readings.Problem``) ``ProbeResult``s: from ``probe()``
for the whole library, in ``GpuSample.failures`` for one GPU that failed one
read (its ``devices`` is ``(uuid,)``). Each is logged once with what to do. One
failing GPU never stops the others.

The module imports ``pynvml`` lazily, so importing it never fails on a host
without the library. Tests pass a fake module with the same API
(tests/fake_nvml.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from wattledger.model.gpu import (
    SOURCE,
    UNALLOCATED_SUFFIX,
    GpuActivity,
    GpuReading,
    GpuSample,
    MigReading,
    UtilSample,
)
from wattledger.model.inventory import GpuInfo
from wattledger.model.readings import Problem, ProbeResult, SourceState
from wattledger.util.logonce import LogOnce

log = logging.getLogger(__name__)

# Whole-library failures that may clear while the agent runs (the NVIDIA module loaded
# after the service started, a driver update finishing): the collector probes again.
TRANSIENT = frozenset({Problem.DRIVER_NOT_LOADED, Problem.ERROR, Problem.GPU_LOST})

_STATE = {
    Problem.LIBRARY_MISSING: SourceState.MISSING,
    Problem.DRIVER_NOT_LOADED: SourceState.MISSING,
    Problem.NO_GPU: SourceState.MISSING,
    Problem.NO_PERMISSION: SourceState.PERMISSION_DENIED,
    Problem.NOT_SUPPORTED: SourceState.NOT_SUPPORTED,
    Problem.GPU_LOST: SourceState.ERROR,
    Problem.ERROR: SourceState.ERROR,
}

# Problems that mean "maybe there is no NVIDIA GPU here": whoever knows how the agent was
# configured (agent/factory.py) adds how to set [agent] gpus = "never" to their fix.
NO_GPU_HERE = frozenset({Problem.LIBRARY_MISSING, Problem.DRIVER_NOT_LOADED, Problem.NO_GPU})
# The host has no NVIDIA stack at all: normal on many hosts, reported at INFO (or less), never a warning.
ABSENT = frozenset({Problem.LIBRARY_MISSING, Problem.NO_GPU})
_FIX = {
    Problem.LIBRARY_MISSING: (
        "install the NVIDIA driver (it ships libnvidia-ml.so.1) and the Python package nvidia-ml-py"
    ),
    Problem.DRIVER_NOT_LOADED: (
        "load the NVIDIA kernel module (check `nvidia-smi`, `modprobe nvidia`, dmesg)"
    ),
    Problem.NO_PERMISSION: (
        "give the service user access to /dev/nvidia* (e.g. the video group) or run "
        "the agent as the packaged systemd unit"
    ),
    Problem.NOT_SUPPORTED: "nothing to fix: this board or driver does not offer it; the fallback is used",
    Problem.GPU_LOST: (
        "the GPU fell off the bus: check dmesg for Xid errors, then reset the GPU "
        "(nvidia-smi -r) or reboot; other GPUs keep being measured"
    ),
    Problem.NO_GPU: "nothing to measure here",
    Problem.ERROR: "run `nvidia-smi -q` to see the driver's view; report the NVML error code",
}

_ERROR_NAMES = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": Problem.LIBRARY_MISSING,
    "NVML_ERROR_FUNCTION_NOT_FOUND": Problem.NOT_SUPPORTED,
    "NVML_ERROR_DRIVER_NOT_LOADED": Problem.DRIVER_NOT_LOADED,
    "NVML_ERROR_NO_PERMISSION": Problem.NO_PERMISSION,
    "NVML_ERROR_NOT_SUPPORTED": Problem.NOT_SUPPORTED,
    "NVML_ERROR_GPU_IS_LOST": Problem.GPU_LOST,
}


def classify(nvml: Any, err: BaseException) -> Problem:
    """Name an NVML error (by its ``.value``, as every NVMLError subclass carries)."""
    value = getattr(err, "value", None)
    for name, problem in _ERROR_NAMES.items():
        if value is not None and value == getattr(nvml, name, object()):
            return problem
    if type(err).__name__ == "NVMLLibraryMismatchError":
        return Problem.NOT_SUPPORTED
    return Problem.ERROR


def problem_result(problem: Problem, detail: str, devices: tuple[str, ...] = ()) -> ProbeResult:
    """A ProbeResult for a named problem; its detail starts with the problem's name (``"GPU lost: ..."``)."""
    return ProbeResult(source=SOURCE, state=_STATE[problem], detail=f"{problem.value}: {detail}",
                       fix=_FIX[problem], devices=devices, problem=problem)


def _errtext(err: BaseException) -> str:
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the code
        text = ""
    return f"NVML error {getattr(err, 'value', '?')} ({text or type(err).__name__})"


@dataclass
class _Cursor:
    """Per-pool utilisation state: supported at all, and the newest sample timestamp read."""

    util_supported: bool = True
    last_seen_us: int = 0


@dataclass
class _MigSlot:
    uuid: str
    handle: Any
    gi_id: int
    gi_slices: int
    ci_slices: int
    cursor: _Cursor = field(default_factory=_Cursor)


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
    cursor: _Cursor = field(default_factory=_Cursor)
    mig_slots: dict[str, _MigSlot] = field(default_factory=dict)
    memory_bytes: int | None = None  # nvmlDeviceGetMemoryInfo's total (for the embodied footprint)

    def pool_names(self) -> list[str]:
        if not self.mig:
            return [self.uuid]
        return sorted(self.mig_slots) + [self.uuid + UNALLOCATED_SUFFIX]


# A cursor move that applies only once the whole GPU was read.
_Move = tuple[_Cursor, int]


class NvmlCollector:
    """Reads every NVIDIA GPU of the host; ``nvml`` is pynvml or a fake with its API."""

    name = "nvml"

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._initialised = False
        self._gpus: list[_Gpu] = []
        self._device_probes: list[ProbeResult] = []
        self._probe: ProbeResult | None = None
        self._once = LogOnce(log)
        self._reads = 0
        self.reprobe_every = 60  # reads between looking again for GPUs that failed discovery

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
            return self._set_probe(problem_result(
                Problem.LIBRARY_MISSING, f"the Python package nvidia-ml-py is not installed ({e})"))
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
            return self._set_probe(problem_result(Problem.NO_GPU, "NVML sees no GPU"))
        return self._set_probe(self._discover_all(count))

    def _discover_all(self, count: int) -> ProbeResult:
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
            return ProbeResult(SOURCE, worst.state, f"none of {count} GPU(s) can be read; first: {worst.detail}",
                               worst.fix, problem=worst.problem)
        devices = [name for g in gpus for name in g.pool_names()]
        failed = [p for p in probes if not p.ok]
        detail = f"{len(gpus)} of {count} GPU(s) measured: " + "; ".join(p.detail for p in probes if p.ok)
        if failed:
            detail += f"; {len(failed)} failed: " + "; ".join(p.detail for p in failed)
        return ProbeResult(SOURCE, SourceState.FOUND, detail, devices=tuple(devices))

    def _set_probe(self, result: ProbeResult) -> ProbeResult:
        """Keep the probe's result. The first one is its caller's to report (the agent's factory logs it
        once, at the level its state deserves; ``doctor`` prints it as a row), so it goes to DEBUG;
        a later probe that finds a new problem is logged here (no NVIDIA stack at all: INFO)."""
        first = self._probe is None
        self._probe = result
        if not result.ok:
            level = logging.DEBUG if first else logging.INFO if result.problem in ABSENT else logging.WARNING
            self._once.problem(("probe", result.detail), f"nvml: {result.detail}; {result.fix}", level)
        return result

    @property
    def last_probe(self) -> ProbeResult | None:
        return self._probe

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
            gpu = self._describe(index, uuid, name, handle, known.get(uuid))
            parts = [f"GPU {index} {uuid} ({name})",
                     "energy counter" if gpu.energy_counter else "no energy counter: integrating power (less accurate)"]
            parts.append(self._capabilities(gpu))
        except (nvml.NVMLError, *_mismatch(nvml)) as e:
            return None, problem_result(classify(nvml, e), f"GPU {index} {uuid}: {_errtext(e)}", (uuid,))
        return gpu, ProbeResult(SOURCE, SourceState.FOUND, ", ".join(parts), devices=tuple(gpu.pool_names()))

    def _describe(self, index: int, uuid: str, name: str, handle: Any, old: _Gpu | None) -> _Gpu:
        nvml = self._nvml
        energy_counter = self._supported(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        mig, max_mig = False, 0
        if self._supported(lambda: nvml.nvmlDeviceGetMigMode(handle)):
            mig = int(nvml.nvmlDeviceGetMigMode(handle)[0]) == int(nvml.NVML_DEVICE_MIG_ENABLE)
            if mig:
                max_mig = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        if old is not None and old.energy_counter == energy_counter and old.mig == mig:
            old.handle, old.index, old.max_mig = handle, index, max_mig  # keep cursors across re-probes
            return old
        return _Gpu(index, uuid, name, handle, energy_counter, mig=mig, max_mig=max_mig,
                    memory_bytes=self._memory_bytes(handle))

    def _memory_bytes(self, handle: Any) -> int | None:
        nvml = self._nvml
        try:
            return int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
        except nvml.NVMLError:
            return None  # the footprint then assumes the model's usual size (docs/embodied.md)

    def gpu_info(self) -> tuple[GpuInfo, ...]:
        """Each GPU the last probe found: NVML's model name and memory size (the embodied footprint)."""
        return tuple(GpuInfo(g.uuid, g.name, g.memory_bytes, g.index) for g in self._gpus)

    def _capabilities(self, gpu: _Gpu) -> str:
        if gpu.mig:
            self._refresh_mig(gpu)
            return f"MIG enabled, {len(gpu.mig_slots)} instance(s), energy split by slices"
        gpu.cursor.util_supported = self._util_supported(gpu.handle)
        return "per-process SM utilisation" if gpu.cursor.util_supported else \
            "no per-process utilisation: split by memory"

    def _supported(self, call: Callable[[], Any]) -> bool:
        """True if the call works, False if NOT_SUPPORTED; other errors propagate."""
        nvml = self._nvml
        try:
            call()
            return True
        except nvml.NVMLError as e:
            if classify(nvml, e) is Problem.NOT_SUPPORTED:
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
            if classify(nvml, e) in (Problem.NOT_SUPPORTED, Problem.NO_PERMISSION):
                return False
            raise

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
            slots[uuid] = _MigSlot(
                uuid=uuid, handle=h, gi_id=int(nvml.nvmlDeviceGetGpuInstanceId(h)),
                gi_slices=max(0, int(attrs.gpuInstanceSliceCount)),
                ci_slices=max(0, int(attrs.computeInstanceSliceCount)),
                cursor=old.cursor if old is not None else _Cursor(),
            )
        gpu.mig_slots = slots

    # -- reading -----------------------------------------------------------

    def read(self, read_ns: int) -> GpuSample:
        """Every GPU's counter (or power) and activity now; ``read_ns`` is the monotonic stamp."""
        if self._probe is None:
            self.probe()
        assert self._probe is not None
        self._reads += 1
        if self._reads % self.reprobe_every == 0 and self._worth_reprobing():
            was_ok = self._probe.ok
            if self.probe().ok and not was_ok:  # e.g. the driver was loaded after the agent started
                log.info("nvml: %s", self._probe.detail)
        if not self._probe.ok:
            return GpuSample(read_ns, (), (self._probe,))
        nvml = self._nvml
        readings: list[GpuReading] = []
        failures: list[ProbeResult] = []
        for gpu in self._gpus:
            moves: list[_Move] = []
            try:
                readings.append(self._read_gpu(gpu, moves))
            except (nvml.NVMLError, *_mismatch(nvml)) as e:
                failures.append(self._failed(gpu, e))
                continue
            for cursor, seen_us in moves:  # the whole GPU was read: move its cursors on
                cursor.last_seen_us = seen_us
            self._once.cleared_where(_failure_of(gpu.uuid), f"nvml: GPU {gpu.uuid} reads again")
        return GpuSample(read_ns, tuple(readings), tuple(failures))

    def _failed(self, gpu: _Gpu, e: BaseException) -> ProbeResult:
        problem = classify(self._nvml, e)
        result = problem_result(problem, f"GPU {gpu.index} {gpu.uuid}: {_errtext(e)}", (gpu.uuid,))
        self._once.problem(("fail", gpu.uuid, problem.value), f"nvml: {result.detail}; {result.fix}")
        return result

    def _worth_reprobing(self) -> bool:
        """A library-wide failure that may clear, or a GPU that failed discovery and may be back.

        Probing again keeps the state (cursors) of GPUs already known.
        """
        assert self._probe is not None
        if not self._probe.ok:
            return self._probe.problem in TRANSIENT
        return any(not p.ok for p in self._device_probes)

    def _read_gpu(self, gpu: _Gpu, moves: list[_Move]) -> GpuReading:
        nvml = self._nvml
        energy_mj: int | None = None
        power_w: float | None = None
        if gpu.energy_counter:
            energy_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))
        else:
            power_w = self._power_w(gpu)
        if not gpu.mig:
            activity = self._activity(gpu.uuid, gpu.handle, gpu.cursor, moves)
            return GpuReading(gpu.uuid, energy_mj, power_w, activity, index=gpu.index)
        self._refresh_mig(gpu)
        mig = tuple(
            MigReading(s.uuid, s.gi_id, s.gi_slices, s.ci_slices, self._activity(s.uuid, s.handle, s.cursor, moves))
            for _, s in sorted(gpu.mig_slots.items()))
        return GpuReading(gpu.uuid, energy_mj, power_w, None, mig, gpu.max_mig, index=gpu.index)

    def _power_w(self, gpu: _Gpu) -> float:
        nvml = self._nvml
        if gpu.power_field:
            try:
                fv = nvml.nvmlDeviceGetFieldValues(gpu.handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
                if int(fv.nvmlReturn) == int(nvml.NVML_SUCCESS):
                    return _field_number(nvml, fv) / 1000.0
                ret = int(fv.nvmlReturn)
            except nvml.NVMLError as e:
                if classify(nvml, e) is not Problem.NOT_SUPPORTED:
                    raise
                ret = e.value
            gpu.power_field = False
            self._once.problem((gpu.uuid, "power-field"),
                               f"nvml: GPU {gpu.uuid} has no instantaneous power field (NVML {ret}); integrating "
                               "the 1 s averaged nvmlDeviceGetPowerUsage instead (less accurate)", logging.INFO)
        return int(nvml.nvmlDeviceGetPowerUsage(gpu.handle)) / 1000.0

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
                if problem not in (Problem.NOT_SUPPORTED, Problem.NO_PERMISSION):
                    raise
                self._once.problem((device, fn_name), f"nvml: {fn_name} on {device}: {problem.value} "
                                   f"({_errtext(e)}); processes from this list are not seen")
                continue
            answered = True
            for p in procs:
                mem = getattr(p, "usedGpuMemory", None)
                _merge_memory(found, int(p.pid), int(mem) if mem is not None else None)
        return found, answered

    def _activity(self, device: str, handle: Any, cursor: _Cursor, moves: list[_Move]) -> GpuActivity:
        memory_by_pid, listed = self._processes(device, handle)
        util = self._util(device, handle, cursor) if cursor.util_supported else None
        since_us = cursor.last_seen_us
        if util is not None:
            moves.append((cursor, max([since_us] + [s.timestamp_us for s in util])))
        return GpuActivity(memory_by_pid, listed, util, since_us)

    def _util(self, device: str, handle: Any, cursor: _Cursor) -> tuple[UtilSample, ...] | None:
        """Samples newer than the cursor; () when there are none; None when not available (logged once)."""
        nvml = self._nvml
        since_us = cursor.last_seen_us
        try:
            samples = _sized(nvml, lambda: nvml.nvmlDeviceGetProcessUtilization(handle, since_us))
        except nvml.NVMLError as e:
            if e.value in (nvml.NVML_ERROR_NOT_FOUND, nvml.NVML_SUCCESS):
                # No samples since the cursor: every holder was idle. (pynvml raises
                # NVMLError(SUCCESS) when the driver answers an empty SUCCESS.)
                return ()
            if classify(nvml, e) not in (Problem.NOT_SUPPORTED, Problem.NO_PERMISSION):
                raise
            cursor.util_supported = False
            self._once.problem((device, "util"), f"nvml: per-process utilisation on {device}: {_errtext(e)}; "
                               "splitting its energy by used memory instead", logging.INFO)
            return None
        return tuple(UtilSample(int(s.pid), int(s.timeStamp), min(100, max(0, int(s.smUtil))))
                     for s in samples if int(s.timeStamp) > since_us)

    def close(self) -> None:
        if self._initialised and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._initialised = False
            self._probe = None


def _failure_of(uuid: str) -> Callable[[Hashable], bool]:
    """Matches the log-once keys of this GPU's read failures."""
    return lambda key: isinstance(key, tuple) and key[:2] == ("fail", uuid)


def _merge_memory(found: dict[int, int | None], pid: int, mem: int | None) -> None:
    """A pid in both lists counts once, with the memory either list reported."""
    old = found.get(pid)
    if pid not in found or old is None:
        found[pid] = mem
    elif mem is not None:
        found[pid] = max(old, mem)


_FIELD_VALUE_MEMBERS = {
    "NVML_VALUE_TYPE_DOUBLE": (0, "dVal"),
    "NVML_VALUE_TYPE_UNSIGNED_INT": (1, "uiVal"),
    "NVML_VALUE_TYPE_UNSIGNED_LONG": (2, "ulVal"),
    "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": (3, "ullVal"),
    "NVML_VALUE_TYPE_SIGNED_LONG_LONG": (4, "sllVal"),
    "NVML_VALUE_TYPE_SIGNED_INT": (5, "siVal"),
    "NVML_VALUE_TYPE_UNSIGNED_SHORT": (6, "usVal"),
}


def _field_number(nvml: Any, fv: Any) -> float:
    """The value of one nvmlFieldValue_t, by its valueType."""
    kinds = {getattr(nvml, name, code): member for name, (code, member) in _FIELD_VALUE_MEMBERS.items()}
    return float(getattr(fv.value, kinds.get(int(fv.valueType), "uiVal")))


SIZED_CALL_TRIES = 3


def _sized(nvml: Any, call: Callable[[], Any]) -> Any:
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
