"""The fake NVML must look like the real pynvml (nvidia-ml-py) where the collector touches it.

Checked against the installed nvidia-ml-py, which imports without a GPU:
every function and constant the collector uses exists in both with the same
arity and value; the fake's return objects carry the real structures' field
names; NVMLError(value) picks the same-named subclass in both.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pynvml
import pytest

import tests.fake_nvml as fake_mod
import wattledger.collectors.nvml as nvml_mod
from tests.fake_nvml import FakeGpu, FakeMig, FakeNvml, Load

SOURCE = Path(nvml_mod.__file__).read_text()
USED = sorted(set(re.findall(r"\bnvml\.(nvml\w+|NVML\w+)", SOURCE))
              | set(re.findall(r"\"(nvmlDevice\w+)\"", SOURCE)))


def test_collector_uses_something() -> None:
    assert "nvmlDeviceGetTotalEnergyConsumption" in USED
    assert "nvmlDeviceGetProcessUtilization" in USED
    assert "NVML_FI_DEV_POWER_INSTANT" in USED


@pytest.mark.parametrize("name", USED)
def test_names_exist_in_both(name: str) -> None:
    assert hasattr(pynvml, name), f"the collector uses {name}, which the real pynvml does not have"
    assert hasattr(FakeNvml, name), f"the fake NVML lacks {name}"
    real = getattr(pynvml, name)
    fake = getattr(FakeNvml, name)
    if isinstance(real, type):
        assert isinstance(fake, type) and issubclass(fake, Exception) == issubclass(real, Exception)
    elif callable(real):
        real_params = list(inspect.signature(real).parameters)
        fake_params = list(inspect.signature(fake).parameters)[1:]  # drop self
        assert len(real_params) == len(fake_params), (name, real_params, fake_params)
    else:
        assert real == fake, f"{name}: real {real!r} != fake {fake!r}"


def test_error_constants_match() -> None:
    for name in dir(fake_mod):
        if name.startswith("NVML_"):
            assert getattr(pynvml, name) == getattr(fake_mod, name), name


def test_error_classes_built_like_pynvml() -> None:
    for code in (3, 4, 6, 9, 12, 15, 999):
        real = pynvml.NVMLError(code)
        fake = fake_mod.NVMLError(code)
        assert type(real).__name__ == type(fake).__name__
        assert real.value == fake.value == code
        assert isinstance(fake, fake_mod.NVMLError)
    assert type(fake_mod.NVMLError(fake_mod.NVML_SUCCESS)) is fake_mod.NVMLError
    assert type(pynvml.NVMLError(pynvml.NVML_SUCCESS)) is pynvml.NVMLError
    assert getattr(fake_mod, "NVMLError_GpuIsLost")().value == pynvml.NVMLError_GpuIsLost().value == 15


def _fields(struct: Any) -> set[str]:
    return {f[0] for f in struct._fields_}


def _fake_nvml_with_everything() -> FakeNvml:
    gpu = FakeGpu("GPU-a", compute={7: 1 << 20})
    mig = FakeGpu("GPU-m", mig_mode=fake_mod.NVML_DEVICE_MIG_ENABLE,
                  mig=[FakeMig("MIG-1", gi_id=1, gi_slices=3, ci_slices=3, compute={8: 1 << 20})])
    fake = FakeNvml([gpu, mig])
    fake.nvmlInit()
    fake.step(1.0, {0: Load(100.0, {7: 50})})
    return fake


def test_return_shapes_have_the_real_field_names() -> None:
    fake = _fake_nvml_with_everything()
    gpu, mig_gpu = fake.gpus
    proc = fake.nvmlDeviceGetComputeRunningProcesses(gpu)[0]
    assert _fields(pynvml.c_nvmlProcessInfo_v3_t) == set(vars(proc))
    sample = fake.nvmlDeviceGetProcessUtilization(gpu, 0)[0]
    assert _fields(pynvml.c_nvmlProcessUtilizationSample_t) == set(vars(sample))
    fv = fake.nvmlDeviceGetFieldValues(gpu, [fake_mod.NVML_FI_DEV_POWER_INSTANT])[0]
    assert _fields(pynvml.c_nvmlFieldValue_t) == set(vars(fv))
    assert _fields(pynvml.c_nvmlValue_t) == set(vars(fv.value))
    attrs = fake.nvmlDeviceGetAttributes(fake.nvmlDeviceGetMigDeviceHandleByIndex(mig_gpu, 0))
    assert _fields(pynvml.c_nvmlDeviceAttributes) == set(vars(attrs))
    assert fake.nvmlDeviceGetMigMode(mig_gpu) == [1, 1]


def test_real_pynvml_without_a_driver_is_a_typed_state() -> None:
    """On this host (no libnvidia-ml) the real module fails in nvmlInit: library missing."""
    from wattledger.collectors.nvml import NvmlCollector
    from wattledger.model.readings import Problem as NvmlProblem

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - a host with a driver: nothing to check here
        pynvml.nvmlShutdown()
        pytest.skip("this host has an NVIDIA driver")
    result = NvmlCollector(pynvml).probe()
    assert not result.ok
    assert result.problem in (NvmlProblem.LIBRARY_MISSING, NvmlProblem.DRIVER_NOT_LOADED)
    assert result.fix
