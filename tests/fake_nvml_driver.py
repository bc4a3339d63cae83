"""The real ``pynvml`` (nvidia-ml-py) over a fake ``libnvidia-ml.so.1``, for tests.

``tests/fake_nvml.py`` is a Python module with pynvml's API. That checks our
logic but not our use of the real binding: its ctypes structures, its
two-call buffer protocol, which C symbol each wrapper calls, how it turns
return codes into exceptions (``NVMLError(NVML_SUCCESS)`` for an empty
answer), its str/bytes conversions. This module closes that gap without a
GPU: ``FakeNvmlDriver`` is a stand-in for the shared library, one ctypes
C function (``CFUNCTYPE``) per NVML symbol, answered from a ``FakeNvml``'s
scripted state. The real pynvml calls those functions through libffi with
real pointers, exactly as it calls libnvidia-ml, so every byte our collector
sees went through pynvml's own code.

    with real_pynvml(fake) as pynvml:
        NvmlCollector(pynvml).read(...)

The driver answers C-style: return codes, results written through output
pointers, ``NVML_ERROR_INSUFFICIENT_SIZE`` when the caller's buffer is too
small (or NULL). A symbol it does not implement is missing from the library,
as on an old driver (pynvml raises ``NVMLError_FunctionNotFound``). The
structures are pynvml's own (``c_nvmlProcessInfo_v3_t`` and so on): what is
under test is our use of pynvml, not pynvml's transcription of nvml.h.

A Python exception inside a ctypes callback would be printed and turned into
a return of 0 (SUCCESS), hiding bugs; every callback therefore catches it,
keeps it in ``FakeNvmlDriver.crashes`` and answers NVML_ERROR_UNKNOWN, and
``real_pynvml`` fails the test if any happened.
"""

from __future__ import annotations

import ctypes
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from ctypes import c_int, c_uint, c_ulonglong, c_void_p
from typing import Any

from tests import fake_nvml as F
from tests.fake_nvml import FakeGpu, FakeMig, FakeNvml

_HANDLE_BASE = 0x7E57_0000  # handle values are opaque to pynvml; these are never dereferenced


class FakeNvmlDriver:
    """libnvidia-ml's C ABI over a FakeNvml; pynvml looks symbols up with getattr."""

    def __init__(self, fake: FakeNvml | None = None) -> None:
        import pynvml

        self._pynvml = pynvml
        self._fake = fake
        self.crashes: list[str] = []
        self.cpu_s = 0.0  # CPU time spent answering inside the fake (benchmarks subtract it)
        self._objects: dict[int, FakeGpu | FakeMig] = {}
        self._addresses: dict[int, int] = {}
        self._strings: dict[int, ctypes.Array[ctypes.c_char]] = {}
        u = c_uint
        p = c_void_p
        table: dict[str, tuple[Any, tuple[Any, ...], Callable[..., int]]] = {
            "nvmlInitWithFlags": (c_int, (u,), self._init),
            "nvmlShutdown": (c_int, (), self._shutdown),
            "nvmlErrorString": (c_void_p, (c_int,), self._error_string),
            "nvmlSystemGetDriverVersion": (c_int, (p, u), self._driver_version),
            "nvmlDeviceGetCount_v2": (c_int, (p,), self._count),
            "nvmlDeviceGetHandleByIndex_v2": (c_int, (u, p), self._handle_by_index),
            "nvmlDeviceGetUUID": (c_int, (p, p, u), self._string_of("nvmlDeviceGetUUID")),
            "nvmlDeviceGetName": (c_int, (p, p, u), self._string_of("nvmlDeviceGetName")),
            "nvmlDeviceGetTotalEnergyConsumption": (
                c_int, (p, p), self._scalar_of("nvmlDeviceGetTotalEnergyConsumption", ctypes.c_uint64)),
            "nvmlDeviceGetPowerUsage": (c_int, (p, p), self._scalar_of("nvmlDeviceGetPowerUsage", c_uint)),
            "nvmlDeviceGetMaxMigDeviceCount": (
                c_int, (p, p), self._scalar_of("nvmlDeviceGetMaxMigDeviceCount", c_uint)),
            "nvmlDeviceGetGpuInstanceId": (c_int, (p, p), self._scalar_of("nvmlDeviceGetGpuInstanceId", c_uint)),
            "nvmlDeviceGetComputeInstanceId": (
                c_int, (p, p), self._scalar_of("nvmlDeviceGetComputeInstanceId", c_uint)),
            "nvmlDeviceGetMigMode": (c_int, (p, p, p), self._mig_mode),
            "nvmlDeviceGetMigDeviceHandleByIndex": (c_int, (p, u, p), self._mig_handle),
            "nvmlDeviceGetAttributes_v2": (c_int, (p, p), self._attributes),
            "nvmlDeviceGetFieldValues": (c_int, (p, c_int, p), self._field_values),
            "nvmlDeviceGetComputeRunningProcesses_v3": (
                c_int, (p, p, p), self._processes_of("nvmlDeviceGetComputeRunningProcesses")),
            "nvmlDeviceGetGraphicsRunningProcesses_v3": (
                c_int, (p, p, p), self._processes_of("nvmlDeviceGetGraphicsRunningProcesses")),
            "nvmlDeviceGetProcessUtilization": (c_int, (p, p, p, c_ulonglong), self._process_utilisation),
        }
        self._symbols = {name: ctypes.CFUNCTYPE(restype, *argtypes)(self._guard(name, impl))
                         for name, (restype, argtypes, impl) in table.items()}

    @property
    def fake(self) -> FakeNvml:
        if self._fake is None:
            raise AssertionError("FakeNvmlDriver: no FakeNvml bound (driver.bind(fake))")
        return self._fake

    @property
    def pynvml(self) -> Any:
        """The real pynvml module (answering from this driver while installed)."""
        return self._pynvml

    def bind(self, fake: FakeNvml) -> Any:
        """Answer from ``fake`` from now on (fresh handles); returns pynvml for NvmlCollector."""
        self._fake = fake
        self._objects.clear()
        self._addresses.clear()
        return self._pynvml

    def __getattr__(self, name: str) -> Any:
        symbols = self.__dict__.get("_symbols", {})
        if name in symbols:
            return symbols[name]
        raise AttributeError(name)  # pynvml: NVMLError_FunctionNotFound

    # -- plumbing ----------------------------------------------------------------

    def _guard(self, name: str, impl: Callable[..., int]) -> Callable[..., int]:
        def call(*args: Any) -> int:
            t0 = time.thread_time()
            try:
                return impl(*args)
            except F.NVMLError as e:
                return int(e.value)
            except BaseException:  # noqa: BLE001 - see the module docstring
                self.crashes.append(f"{name}: {traceback.format_exc()}")
                return F.NVML_ERROR_UNKNOWN
            finally:
                self.cpu_s += time.thread_time() - t0
        return call

    def _handle(self, obj: FakeGpu | FakeMig) -> int:
        key = id(obj)
        if key not in self._addresses:
            address = _HANDLE_BASE + 16 * (len(self._addresses) + 1)
            self._addresses[key] = address
            self._objects[address] = obj
        return self._addresses[key]

    def _object(self, handle: int | None) -> FakeGpu | FakeMig:
        obj = self._objects.get(handle or 0)
        if obj is None:
            raise F.NVMLError(F.NVML_ERROR_INVALID_ARGUMENT)
        return obj

    @staticmethod
    def _put(ctype: Any, address: int | None, value: Any) -> None:
        if not address:
            raise F.NVMLError(F.NVML_ERROR_INVALID_ARGUMENT)
        ctype.from_address(address).value = value

    @staticmethod
    def _put_string(address: int | None, size: int, text: str) -> int:
        raw = text.encode() + b"\0"
        if not address or len(raw) > size:
            return F.NVML_ERROR_INSUFFICIENT_SIZE
        ctypes.memmove(address, raw, len(raw))
        return F.NVML_SUCCESS

    # -- the symbols -------------------------------------------------------------

    def _init(self, flags: int) -> int:
        self.fake.nvmlInit()
        return F.NVML_SUCCESS

    def _shutdown(self) -> int:
        self.fake.nvmlShutdown()
        return F.NVML_SUCCESS

    def _error_string(self, code: int) -> int:
        if code not in self._strings:
            text = F.NVMLError(code).__str__()
            self._strings[code] = ctypes.create_string_buffer(text.encode())
        return ctypes.addressof(self._strings[code])

    def _driver_version(self, buf: int | None, size: int) -> int:
        return self._put_string(buf, size, self.fake.nvmlSystemGetDriverVersion())

    def _count(self, out: int | None) -> int:
        self._put(c_uint, out, self.fake.nvmlDeviceGetCount())
        return F.NVML_SUCCESS

    def _handle_by_index(self, index: int, out: int | None) -> int:
        self._put(c_void_p, out, self._handle(self.fake.nvmlDeviceGetHandleByIndex(index)))
        return F.NVML_SUCCESS

    def _string_of(self, fn: str) -> Callable[[int | None, int | None, int], int]:
        def impl(handle: int | None, buf: int | None, size: int) -> int:
            return self._put_string(buf, size, getattr(self.fake, fn)(self._object(handle)))
        return impl

    def _scalar_of(self, fn: str, ctype: Any) -> Callable[[int | None, int | None], int]:
        def impl(handle: int | None, out: int | None) -> int:
            self._put(ctype, out, int(getattr(self.fake, fn)(self._object(handle))))
            return F.NVML_SUCCESS
        return impl

    def _mig_mode(self, handle: int | None, current: int | None, pending: int | None) -> int:
        now, later = self.fake.nvmlDeviceGetMigMode(self._object(handle))
        self._put(c_uint, current, now)
        self._put(c_uint, pending, later)
        return F.NVML_SUCCESS

    def _mig_handle(self, handle: int | None, index: int, out: int | None) -> int:
        mig = self.fake.nvmlDeviceGetMigDeviceHandleByIndex(self._object(handle), index)
        self._put(c_void_p, out, self._handle(mig))
        return F.NVML_SUCCESS

    def _attributes(self, handle: int | None, out: int | None) -> int:
        attrs = self.fake.nvmlDeviceGetAttributes(self._object(handle))
        if not out:
            return F.NVML_ERROR_INVALID_ARGUMENT
        struct = self._pynvml.c_nvmlDeviceAttributes.from_address(out)
        for name, _ in struct._fields_:
            setattr(struct, name, getattr(attrs, name))
        return F.NVML_SUCCESS

    def _field_values(self, handle: int | None, count: int, out: int | None) -> int:
        if not out or count <= 0:
            return F.NVML_ERROR_INVALID_ARGUMENT
        values = (self._pynvml.c_nvmlFieldValue_t * count).from_address(out)
        asked = [(int(v.fieldId), int(v.scopeId)) for v in values]
        answers = self.fake.nvmlDeviceGetFieldValues(self._object(handle), asked)
        for slot, answer in zip(values, answers):
            slot.timestamp = answer.timestamp
            slot.latencyUsec = answer.latencyUsec
            slot.valueType = answer.valueType
            slot.nvmlReturn = answer.nvmlReturn
            slot.value.uiVal = answer.value.uiVal
        return F.NVML_SUCCESS

    def _processes_of(self, fn: str) -> Callable[[int | None, int | None, int | None], int]:
        def impl(handle: int | None, count_p: int | None, buf: int | None) -> int:
            procs = getattr(self.fake, fn)(self._object(handle))
            if not count_p:
                return F.NVML_ERROR_INVALID_ARGUMENT
            room = c_uint.from_address(count_p)
            if not procs:
                room.value = 0
                return F.NVML_SUCCESS
            not_available = self._pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value

            def fill(row: Any, proc: Any) -> None:
                row.pid = proc.pid
                row.usedGpuMemory = not_available if proc.usedGpuMemory is None else proc.usedGpuMemory
                row.gpuInstanceId = proc.gpuInstanceId
                row.computeInstanceId = proc.computeInstanceId

            return self._fill(room, buf, procs, self._pynvml.c_nvmlProcessInfo_v3_t, fill)
        return impl

    def _process_utilisation(self, handle: int | None, buf: int | None, count_p: int | None,
                             last_seen_us: int) -> int:
        if not count_p:
            return F.NVML_ERROR_INVALID_ARGUMENT
        room = c_uint.from_address(count_p)
        try:
            samples = self.fake.nvmlDeviceGetProcessUtilization(self._object(handle), last_seen_us)
        except F.NVMLError as e:
            if e.value == F.NVML_SUCCESS:  # a driver that answers "none" with SUCCESS and 0
                room.value = 0
            raise

        def fill(row: Any, s: Any) -> None:
            row.pid, row.timeStamp, row.smUtil = s.pid, s.timeStamp, s.smUtil
            row.memUtil, row.encUtil, row.decUtil = s.memUtil, s.encUtil, s.decUtil

        return self._fill(room, buf, samples, self._pynvml.c_nvmlProcessUtilizationSample_t, fill)

    @staticmethod
    def _fill(room: c_uint, buf: int | None, items: Sequence[Any], struct: Any,
              fill: Callable[[Any, Any], None]) -> int:
        """The answer to the caller's sized call: the count it needs, or the rows once they fit."""
        if not buf or room.value < len(items):
            room.value = len(items)
            return F.NVML_ERROR_INSUFFICIENT_SIZE
        for row, item in zip((struct * len(items)).from_address(buf), items):
            fill(row, item)
        room.value = len(items)
        return F.NVML_SUCCESS


@contextmanager
def real_pynvml(fake: FakeNvml | None = None) -> Iterator[FakeNvmlDriver]:
    """Load the real pynvml over a FakeNvmlDriver (answering ``fake``, or whatever is bound later).

    Yields the driver: ``driver.pynvml`` is the module to hand NvmlCollector,
    ``driver.bind(fake)`` points it at another FakeNvml. pynvml's library
    handle and symbol cache are restored afterwards; a crash inside the
    driver fails the test.
    """
    import pynvml

    driver = FakeNvmlDriver(fake)
    saved_lib, saved_cache = pynvml.nvmlLib, dict(pynvml._nvmlGetFunctionPointer_cache)
    saved_strings = dict(pynvml.NVMLError._errcode_to_string)
    pynvml.nvmlLib = driver
    pynvml._nvmlGetFunctionPointer_cache.clear()
    pynvml.NVMLError._errcode_to_string.clear()
    try:
        yield driver
    finally:
        pynvml.nvmlLib = saved_lib
        pynvml._nvmlGetFunctionPointer_cache.clear()
        pynvml._nvmlGetFunctionPointer_cache.update(saved_cache)
        pynvml.NVMLError._errcode_to_string.clear()
        pynvml.NVMLError._errcode_to_string.update(saved_strings)
    if driver.crashes:
        raise AssertionError("the fake NVML driver crashed:\n" + "\n".join(driver.crashes))
