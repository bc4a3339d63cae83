"""A hand-written stand-in for ``pynvml`` (nvidia-ml-py), for tests and trace replay.

Same function names, constants, return shapes and exception classes as the
real module (tests/test_nvml_fake_api.py checks them against the installed
nvidia-ml-py), so ``NvmlCollector(FakeNvml(...))`` exercises the same code as
on a GPU host. It can script:

* several GPUs, each with an energy counter (mJ), power, processes and
  per-process SM-utilisation samples (``FakeNvml.step`` advances time);
* a counter reset (``FakeGpu.energy_mj = 0``), processes appearing and leaving
  between reads (edit ``compute``), utilisation or the energy counter not
  supported (``unsupported``), any call failing with any NVML code
  (``errors``), a GPU lost mid-run (``lost = True``), MIG instances;
* a recorded trace (tests/fixtures/nvml/README.md): ``load_trace`` +
  ``FakeNvml.from_trace`` + ``apply_tick``.

Handles are the FakeGpu / FakeMig objects themselves.
"""

from __future__ import annotations

import json
import string
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- constants (values as in nvml.h / pynvml) ---------------------------------

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG = 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
NVML_VALUE_TYPE_SIGNED_INT = 5
NVML_VALUE_TYPE_UNSIGNED_SHORT = 6

NVML_FI_DEV_POWER_INSTANT = 186
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

# -- exceptions, built the way pynvml builds them ------------------------------

_ERROR_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """``NVMLError(value)`` returns the subclass for that value, as in pynvml."""

    _valClassMapping: dict[int, type] = {}
    value: int

    def __new__(typ, value: int) -> NVMLError:  # noqa: N804 - pynvml's signature
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return _ERROR_STRINGS.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return self.value == getattr(other, "value", None)

    __hash__ = Exception.__hash__


class NVMLLibraryMismatchError(Exception):
    pass


def _make_error_classes() -> dict[str, type]:
    module = sys.modules[__name__]
    made: dict[str, type] = {}
    for err_name in [n for n in dir(module) if n.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        value = getattr(module, err_name)

        def gen_new(val: int) -> Any:
            def new(typ: type, *args: Any) -> NVMLError:
                return NVMLError.__new__(typ, val)

            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(value)})
        cls.__module__ = __name__
        setattr(module, class_name, cls)
        NVMLError._valClassMapping[value] = cls
        made[class_name] = cls
    return made


ERROR_CLASSES = _make_error_classes()


def nvml_error(code: int) -> NVMLError:
    return NVMLError(code)


# -- return shapes (attribute names as the real ctypes structures) ---------------


class _Obj:
    """Like pynvml's nvmlFriendlyObject: a bag of attributes."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __getattr__(self, name: str) -> Any:  # only called for missing names: tells mypy any field may exist
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__})"


class ProcessInfo(_Obj):
    """c_nvmlProcessInfo_v3_t as nvmlStructToFriendlyObject returns it."""


class UtilSample(_Obj):
    """c_nvmlProcessUtilizationSample_t."""


class FieldValue(_Obj):
    """c_nvmlFieldValue_t; ``value`` is a c_nvmlValue_t-like object."""


class Value(_Obj):
    """c_nvmlValue_t (a union; the fake fills every member with the same number)."""


class DeviceAttributes(_Obj):
    """c_nvmlDeviceAttributes."""


class MemoryInfo(_Obj):
    """c_nvmlMemory_t (total, free, used bytes)."""


NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId outside MIG


@dataclass
class FakeMig:
    """One MIG device (a compute instance) of a FakeGpu."""

    uuid: str
    gi_id: int
    gi_slices: int
    ci_slices: int
    ci_id: int = 0
    compute: dict[int, int | None] = field(default_factory=dict)
    parent: FakeGpu | None = None


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int = 0
    power_mw: int = 60_000           # nvmlDeviceGetPowerUsage (a 1 s average on real boards)
    power_instant_mw: int = 60_000   # NVML_FI_DEV_POWER_INSTANT
    compute: dict[int, int | None] = field(default_factory=dict)   # pid -> used bytes (None: n/a)
    graphics: dict[int, int | None] = field(default_factory=dict)
    samples: list[UtilSample] = field(default_factory=list)
    # Function names (or "power_instant" for the field) answering NOT_SUPPORTED.
    unsupported: set[str] = field(default_factory=set)
    # Function name -> NVML error code raised by every call until removed.
    errors: dict[str, int] = field(default_factory=dict)
    # Function name -> NVML error code raised by the next call only.
    errors_once: dict[str, int] = field(default_factory=dict)
    lost: bool = False
    # pynvml raises NVMLError(NVML_SUCCESS) when a driver answers "no samples"
    # with SUCCESS and count 0 instead of NOT_FOUND; script that wrapper quirk.
    util_empty_is_success: bool = False
    # The driver may stamp each process's sample at a slightly different time:
    # the n-th busy pid (in pid order) of a sampling period is stamped n x this many us earlier.
    sample_skew_us: int = 0
    mig_mode: int | None = NVML_DEVICE_MIG_DISABLE  # None: not supported
    max_mig: int = 7
    mig: list[FakeMig] = field(default_factory=list)
    memory_total: int = 81_559 * 1024**2  # an H100 SXM's 80 GB as NVML reports it (nvmlDeviceGetMemoryInfo)
    _energy_frac_mj: float = 0.0

    def add_energy_j(self, energy_j: float) -> None:
        total = self._energy_frac_mj + energy_j * 1000.0
        whole = int(total)
        self.energy_mj += whole
        self._energy_frac_mj = total - whole


@dataclass
class Load:
    """What one GPU does during one ``FakeNvml.step``."""

    power_w: float
    sm: Mapping[int, float] = field(default_factory=dict)  # pid -> SM utilisation %
    power_instant_w: float | None = None  # default: power_w


SAMPLE_PERIOD_US = 200_000  # the fake driver's utilisation sample period (the real period is not documented)


class FakeNvml:
    """An object with pynvml's API over scripted FakeGpus."""

    def __init__(self, gpus: Iterable[FakeGpu], *, init_error: int | None = None,
                 start_us: int = 1_700_000_000_000_000) -> None:
        self.gpus = list(gpus)
        for g in self.gpus:
            for m in g.mig:
                m.parent = g
        self.init_error = init_error
        self.initialised = 0
        self.now_us = start_us
        self.calls: dict[str, int] = {}
        # Called as before_call(function name, gpu) on every call that names a GPU: a test
        # can change the GPU between pynvml's two calls of one query (the buffer race).
        self.before_call: Callable[[str, FakeGpu], None] | None = None

    NVMLError = NVMLError
    NVMLLibraryMismatchError = NVMLLibraryMismatchError

    # -- scripting -------------------------------------------------------------

    @property
    def now_ns(self) -> int:
        return self.now_us * 1000

    def step(self, dt_s: float, loads: Mapping[int, Load] | None = None) -> int:
        """Advance time by dt_s: energy from each GPU's power, utilisation samples; returns now_ns."""
        loads = loads or {}
        start_us = self.now_us
        end_us = start_us + int(round(dt_s * 1e6))
        for i, gpu in enumerate(self.gpus):
            load = loads.get(i)
            if load is None:
                gpu.add_energy_j(gpu.power_mw / 1000.0 * dt_s)
                continue
            gpu.power_mw = int(round(load.power_w * 1000))
            inst = load.power_w if load.power_instant_w is None else load.power_instant_w
            gpu.power_instant_mw = int(round(inst * 1000))
            gpu.add_energy_j(load.power_w * dt_s)
            t = start_us + SAMPLE_PERIOD_US
            while t <= end_us:
                busy = [(pid, pct) for pid, pct in sorted(load.sm.items()) if pct > 0]
                for n, (pid, pct) in enumerate(busy):
                    gpu.samples.append(UtilSample(pid=pid, timeStamp=t - n * gpu.sample_skew_us,
                                                  smUtil=int(round(pct)), memUtil=0, encUtil=0, decUtil=0))
                t += SAMPLE_PERIOD_US
        self.now_us = end_us
        return self.now_ns

    # -- internals ---------------------------------------------------------------

    def _enter(self, fn: str, handle: Any = None) -> Any:
        self.calls[fn] = self.calls.get(fn, 0) + 1
        if not self.initialised and fn != "nvmlInit":
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if handle is None:
            return None
        gpu = handle.parent if isinstance(handle, FakeMig) else handle
        assert isinstance(gpu, FakeGpu)
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if self.before_call is not None:
            self.before_call(fn, gpu)
        if fn in gpu.errors:
            raise NVMLError(gpu.errors[fn])
        if fn in gpu.errors_once:
            raise NVMLError(gpu.errors_once.pop(fn))
        if fn in gpu.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu

    # -- the API -------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised = max(0, self.initialised - 1)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "550.00-fake"

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._enter("nvmlDeviceGetUUID", handle)
        return handle.uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        gpu = self._enter("nvmlDeviceGetName", handle)
        return gpu.name if not isinstance(handle, FakeMig) else f"{gpu.name} MIG {handle.gi_slices}g"

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        gpu = self._enter("nvmlDeviceGetMemoryInfo", handle)
        return MemoryInfo(total=gpu.memory_total, free=gpu.memory_total, used=0)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        gpu = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        if isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return int(gpu.energy_mj)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._enter("nvmlDeviceGetPowerUsage", handle)
        if isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return int(gpu.power_mw)

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[Any]) -> list[FieldValue]:  # noqa: N803
        gpu = self._enter("nvmlDeviceGetFieldValues", handle)
        out = []
        for fid in fieldIds:
            field_id, scope = (fid if isinstance(fid, tuple) else (fid, 0))
            ret = NVML_SUCCESS
            number = 0
            if field_id == NVML_FI_DEV_POWER_INSTANT and "power_instant" not in gpu.unsupported \
                    and not isinstance(handle, FakeMig):
                number = int(gpu.power_instant_mw)
            else:
                ret = NVML_ERROR_NOT_SUPPORTED
            value = Value(dVal=float(number), uiVal=number, ulVal=number, ullVal=number, sllVal=number,
                          siVal=number, usVal=number & 0xFFFF)
            out.append(FieldValue(fieldId=field_id, scopeId=scope, timestamp=self.now_us, latencyUsec=0,
                                  valueType=NVML_VALUE_TYPE_UNSIGNED_INT, nvmlReturn=ret, value=value))
        return out

    def _procs(self, table: Mapping[int, int | None], gi: int, ci: int) -> list[ProcessInfo]:
        return [ProcessInfo(pid=pid, usedGpuMemory=mem, gpuInstanceId=gi, computeInstanceId=ci)
                for pid, mem in sorted(table.items())]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[ProcessInfo]:
        self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        if isinstance(handle, FakeMig):
            return self._procs(handle.compute, handle.gi_id, handle.ci_id)
        if handle.mig_mode == NVML_DEVICE_MIG_ENABLE:
            out = []
            for m in handle.mig:
                out.extend(self._procs(m.compute, m.gi_id, m.ci_id))
            return out
        return self._procs(handle.compute, NO_INSTANCE, NO_INSTANCE)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[ProcessInfo]:
        self._enter("nvmlDeviceGetGraphicsRunningProcesses", handle)
        if isinstance(handle, FakeMig):
            return []
        return self._procs(handle.graphics, NO_INSTANCE, NO_INSTANCE)

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[UtilSample]:  # noqa: N803
        gpu = self._enter("nvmlDeviceGetProcessUtilization", handle)
        if isinstance(handle, FakeMig) or gpu.mig_mode == NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        newer = [s for s in gpu.samples if s.timeStamp > timeStamp]
        if not newer:
            raise NVMLError(NVML_SUCCESS if gpu.util_empty_is_success else NVML_ERROR_NOT_FOUND)
        return newer

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        gpu = self._enter("nvmlDeviceGetMigMode", handle)
        if gpu.mig_mode is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [gpu.mig_mode, gpu.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu = self._enter("nvmlDeviceGetMaxMigDeviceCount", handle)
        return gpu.max_mig

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> FakeMig:
        gpu = self._enter("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if gpu.mig_mode != NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if index >= gpu.max_mig:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if index >= len(gpu.mig):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return gpu.mig[index]

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetGpuInstanceId", handle)
        if not isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return handle.gi_id

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetComputeInstanceId", handle)
        if not isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return handle.ci_id

    def nvmlDeviceGetAttributes(self, handle: Any) -> DeviceAttributes:
        gpu = self._enter("nvmlDeviceGetAttributes", handle)
        if isinstance(handle, FakeMig):
            gi, ci, mem = handle.gi_slices, handle.ci_slices, 10_000 * handle.gi_slices
        else:
            gi, ci, mem = gpu.max_mig, gpu.max_mig, 80_000
        return DeviceAttributes(multiprocessorCount=16 * ci, sharedCopyEngineCount=gi, sharedDecoderCount=0,
                                sharedEncoderCount=0, sharedJpegCount=0, sharedOfaCount=0,
                                gpuInstanceSliceCount=gi, computeInstanceSliceCount=ci, memorySizeMB=mem)

    # -- trace replay ------------------------------------------------------------

    @classmethod
    def from_trace(cls, trace: Trace) -> FakeNvml:
        """A fake with the trace's GPUs; call ``apply_tick`` before each read."""
        gpus = [FakeGpu(uuid=g["uuid"], name=g.get("name", "replayed"), mig_mode=None if g.get("mig_mode") is None
                        else int(g["mig_mode"])) for g in trace.header["gpus"]]
        fake = cls(gpus)
        return fake

    def apply_tick(self, tick: Mapping[str, Any]) -> int:
        """Make every GPU answer what the trace recorded at this tick; returns the tick's t_ns."""
        by_uuid = {g.uuid: g for g in self.gpus}
        for rec in tick["gpus"]:
            gpu = by_uuid[rec["uuid"]]
            gpu.errors.clear()
            gpu.unsupported.discard("power_instant")
            gpu.lost = bool(rec.get("lost", False))
            for key, fn in _TRACE_FIELDS.items():
                value = rec.get(key)
                if isinstance(value, Mapping) and "error" in value:
                    if key == "power_instant_mw":
                        gpu.unsupported.add("power_instant")
                    else:
                        gpu.errors[fn] = int(value["error"])
                    continue
                if value is None:
                    continue
                if key == "energy_mj":
                    gpu.energy_mj = int(value)
                elif key == "power_mw":
                    gpu.power_mw = int(value)
                elif key == "power_instant_mw":
                    gpu.power_instant_mw = int(value)
                elif key == "compute_procs":
                    gpu.compute = {int(p["pid"]): p.get("usedGpuMemory") for p in value}
                elif key == "graphics_procs":
                    gpu.graphics = {int(p["pid"]): p.get("usedGpuMemory") for p in value}
                elif key == "util_samples":
                    gpu.samples.extend(UtilSample(pid=int(s["pid"]), timeStamp=int(s["timeStamp"]),
                                                  smUtil=int(s["smUtil"]), memUtil=int(s.get("memUtil", 0)),
                                                  encUtil=int(s.get("encUtil", 0)), decUtil=int(s.get("decUtil", 0)))
                                       for s in value)
            # Keep only samples the next query can still ask for (the driver's buffer is short too).
            if gpu.samples:
                newest = max(s.timeStamp for s in gpu.samples)
                gpu.samples = [s for s in gpu.samples if s.timeStamp > newest - 60_000_000]
        self.now_us = int(tick["t_ns"]) // 1000
        return int(tick["t_ns"])


# The module's constants and error classes, reachable as fake.NVML_ERROR_NOT_FOUND etc.
for _name, _value in list(globals().items()):
    if _name.startswith(("NVML_", "NVMLError_")):
        setattr(FakeNvml, _name, _value)


# trace key -> the NVML function whose answer it records
_TRACE_FIELDS = {
    "energy_mj": "nvmlDeviceGetTotalEnergyConsumption",
    "power_mw": "nvmlDeviceGetPowerUsage",
    "power_instant_mw": "nvmlDeviceGetFieldValues",
    "compute_procs": "nvmlDeviceGetComputeRunningProcesses",
    "graphics_procs": "nvmlDeviceGetGraphicsRunningProcesses",
    "util_samples": "nvmlDeviceGetProcessUtilization",
}

TRACE_FORMAT = "wattledger-nvml-trace"
TRACE_VERSION = 1


@dataclass
class Trace:
    header: dict[str, Any]
    ticks: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return bool(self.header.get("synthetic"))

    def job_of_pid(self) -> dict[int, str]:
        return {int(pid): tag for pid, tag in self.header.get("jobs", {}).items()}


def load_trace(path: Path) -> Trace:
    """Read a JSON-lines trace: one header, tick lines, an optional summary line."""
    header: dict[str, Any] | None = None
    ticks: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            kind = obj.get("kind")
            if kind == "header":
                if obj.get("format") != TRACE_FORMAT or int(obj.get("version", 0)) != TRACE_VERSION:
                    raise ValueError(f"{path}:{n}: not a {TRACE_FORMAT} v{TRACE_VERSION} header")
                header = obj
            elif kind == "tick":
                ticks.append(obj)
            elif kind == "summary":
                summary = obj
            else:
                raise ValueError(f"{path}:{n}: unknown line kind {kind!r}")
    if header is None:
        raise ValueError(f"{path}: no header line")
    return Trace(header, ticks, summary)


def replay(trace: Trace) -> Iterator[tuple[FakeNvml, dict[str, Any]]]:
    """Yield (fake, tick) with the fake already answering that tick's readings."""
    fake = FakeNvml.from_trace(trace)
    for tick in trace.ticks:
        fake.apply_tick(tick)
        yield fake, tick
