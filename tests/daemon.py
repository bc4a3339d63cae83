"""A server process the integration tests start on loopback and stop by its PID (influxd, prometheus)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackDaemon:
    """Start ``argv`` with its output in ``log``, wait for a ready URL; stop: SIGTERM, then SIGKILL."""

    proc: subprocess.Popen[bytes] | None = None
    stop_grace_s = 15.0

    def launch(self, name: str, argv: list[str], log: Path, ready_url: str, ok_status: int, timeout_s: float,
               poll_s: float = 0.1) -> None:
        binary = shutil.which(name)
        if binary is None:
            raise RuntimeError(f"{name} not installed: run scripts/test.sh (it installs Debian's package)")
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([binary, *argv], stdout=out, stderr=out)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as r:
                    if r.status == ok_status:
                        return
            except OSError:
                time.sleep(poll_s)
        self.stop()  # not left running (and holding its data dir) when it comes up too late
        raise RuntimeError(f"{name} did not start; see {log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
