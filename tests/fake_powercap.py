"""A live fake powercap tree: one RAPL package zone whose ``energy_uj`` a thread advances.

For tests that run the real agent (a process, or a systemd service in a
container) against RAPL: ``FakePowercap(root)`` makes
``root/class/powercap/intel-rapl:0`` (name ``package-0``), and ``run(power_w)``
advances its counter at that power from a background thread. Each write is a
temp file renamed over ``energy_uj``, so a reader sees the old or the new
value, never a half-written one. ``total_uj`` is the counter as last written:
a test compares what the ledger charged with it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class FakePowercap:
    def __init__(self, sysfs_root: Path, start_uj: int = 1_000_000, wrap_uj: int = 262_143_328_850,
                 mode: int = 0o444) -> None:
        self.sysfs_root = sysfs_root
        self.zone = sysfs_root / "class" / "powercap" / "intel-rapl:0"
        self.zone.mkdir(parents=True, exist_ok=True)
        (self.zone / "name").write_text("package-0\n")
        (self.zone / "max_energy_range_uj").write_text(f"{wrap_uj}\n")
        (self.zone / "enabled").write_text("1\n")
        self.mode = mode
        self.total_uj = start_uj
        self._write(start_uj)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _write(self, value_uj: int) -> None:
        tmp = self.zone / ".energy_uj.tmp"
        tmp.write_text(f"{value_uj}\n")
        os.chmod(tmp, self.mode)
        os.replace(tmp, self.zone / "energy_uj")

    def add(self, energy_uj: int) -> None:
        with self._lock:
            self.total_uj += energy_uj
            self._write(self.total_uj)

    def run(self, power_w: float, step_s: float = 0.02) -> None:
        """Advance the counter at ``power_w`` until ``stop``."""
        self._stop.clear()

        def loop() -> None:
            last = time.monotonic()
            while not self._stop.wait(step_s):
                now = time.monotonic()
                self.add(int(power_w * (now - last) * 1e6))
                last = now

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """Stop advancing; the counter's final value."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.total_uj
