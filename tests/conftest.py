from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# No per-example deadlines: CI runs on a loaded 2-core machine, and a first example
# that pays for an import is not a failure. Tests are about results, not timings
# (benchmarks/ measures those).
settings.register_profile("wattledger", deadline=None, print_blob=True)
settings.load_profile("wattledger")

from tests.influx_server import InfluxServer
from tests.other_user import Staged, needs_root_and_setpriv, stage_code, world_dir

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One real InfluxDB 1.x server for the session (tests use their own databases)."""
    if shutil.which("influxd") is None:
        pytest.fail("influxd is not installed: scripts/test.sh installs Debian's influxdb package")
    server = InfluxServer(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_influxd(tmp_path: Path) -> Iterator[InfluxServer]:
    """A private server a test may stop and start (outage tests)."""
    server = InfluxServer(tmp_path / "influxd")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def other_user_code() -> Iterator[Staged]:
    """wattledger and its runtime dependencies where another uid can run them, wherever the checkout
    lives (tests/other_user.py); skipped, saying why, where uids cannot be switched."""
    needs_root_and_setpriv()
    root = world_dir("wl-other-user-")
    try:
        yield stage_code(root, deps=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


NvmlApi = Callable[[Any], Any]


@pytest.fixture(params=["fake-module", "real-pynvml"])
def nvml_api(request: pytest.FixtureRequest) -> Iterator[NvmlApi]:
    """What to hand NvmlCollector for a FakeNvml: the fake module itself, or the real
    pynvml loaded over tests/fake_nvml_driver.py (same answers, through pynvml's ctypes code)."""
    if request.param == "fake-module":
        yield lambda fake: fake
        return
    from tests.fake_nvml_driver import real_pynvml

    with real_pynvml() as driver:
        yield driver.bind


@pytest.fixture(autouse=True)
def _private_data_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`wattledger run` records go to $XDG_DATA_HOME/wattledger/runs.jsonl and `report` reads them:
    each test (and the commands it starts) has a data dir of its own, never the user's or another test's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
