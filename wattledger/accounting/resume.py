"""Bridging a restart of the agent: each counter's last reading, kept in the state dir (issue 17, item 4).

The energy counters are cumulative (RAPL since boot, NVML since the driver
loaded, the model's integral over /proc/stat's busy time since boot), so a
reading saved by the agent that stopped, compared with the first reading of
the agent that started, is exactly the energy of the gap. That energy is
charged to the reserved job ``_unobserved`` (no process was watched), in a
``wl_node`` row whose ``interval_s`` is the gap.

**Which clock.** Readings are stamped with ``time.monotonic_ns()``
(CLOCK_MONOTONIC), as every interval of the agent is (util/clock.py). It is
per boot, so the saved ``boot_id`` (``/proc/sys/kernel/random/boot_id``)
must match: after a reboot the counters and the clock start again and the
agent starts fresh, saying so in one log line. CLOCK_MONOTONIC does not count
time suspended, while CLOCK_BOOTTIME does; we keep MONOTONIC because RAPL and
NVML barely count while the machine sleeps, so it is the clock that measures
how long the counter could count (the wrap check below) and it is the one
the running agent's intervals use. A gap that spans a suspend has an
``interval_s`` without the sleep (its ``power_w`` reads high); its energy is
the counter's, exact.

**Only what was committed.** The file holds two snapshots, written atomically
(temp file + rename) just before each tick's points go to the ledger: the
readings of that tick (``pending``, with the tick's timestamp) and those of the
tick before (``committed``). After a crash, ``pending`` is the base only if
the ledger holds that tick's ``wl_node`` rows; otherwise the tick was lost
with the crash and ``committed`` is the base, so its energy is charged once,
in the gap, never twice and never not at all.

**What is not bridged.** A wrapping counter (RAPL) stopped for longer than
0.9 x its wrap period at the highest power it was seen drawing could have
wrapped more than once unseen: it starts fresh (logged; the rule is
``counters.restart_gap_problem``, judged at the first read after the
restart). A counter never seen with a delta has no known power: the same.
GPUs whose power we integrate have no counter to bridge.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from wattledger.accounting.counters import CounterKey, SavedReading
from wattledger.util.logonce import LogOnce

log = logging.getLogger("wattledger.resume")

COUNTERS_FILE = "counters.json"
BOOT_ID = Path("sys/kernel/random/boot_id")  # under the procfs root
_FORMAT = 1


@runtime_checkable
class Resumable(Protocol):
    """A reader whose counters are its own integral (the model estimate): it saves and restores its state."""

    name: str

    def checkpoint(self) -> dict[str, float]: ...

    def resume(self, state: Mapping[str, float]) -> None: ...


@dataclass(frozen=True)
class Snapshot:
    """The readings of every counter after one tick, and the tick's timestamp (wall clock, as in the ledger)."""

    tick_ns: int
    cpu: tuple[SavedReading, ...] = ()
    gpu: tuple[SavedReading, ...] = ()
    readers: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def merged_with(self, later: Snapshot) -> Snapshot:
        """This snapshot, plus the counters and readers that only ``later`` knows (first read in it)."""
        def add(mine: tuple[SavedReading, ...], theirs: tuple[SavedReading, ...]) -> tuple[SavedReading, ...]:
            known = {r.key for r in mine}
            return mine + tuple(r for r in theirs if r.key not in known)

        readers = {**later.readers, **self.readers}
        return Snapshot(self.tick_ns, add(self.cpu, later.cpu), add(self.gpu, later.gpu), readers)


def read_boot_id(procfs_root: Path | str) -> str | None:
    try:
        return (Path(procfs_root) / BOOT_ID).read_text().strip() or None
    except OSError:
        return None


# -- the file --------------------------------------------------------------------------------------


def _reading_json(r: SavedReading) -> dict[str, Any]:
    return {"key": list(r.key), "counter_uj": r.counter_uj, "read_ns": r.read_ns, "wrap_uj": r.wrap_uj,
            "peak_w": r.peak_w}


def _reading(d: Mapping[str, Any]) -> SavedReading:
    source, component, device = (str(x) for x in d["key"])
    key: CounterKey = (source, component, device)
    wrap = d.get("wrap_uj")
    peak = d.get("peak_w")
    return SavedReading(key, int(d["counter_uj"]), int(d["read_ns"]), None if wrap is None else int(wrap),
                        None if peak is None else float(peak))


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    return {"tick_ns": s.tick_ns, "cpu": [_reading_json(r) for r in s.cpu], "gpu": [_reading_json(r) for r in s.gpu],
            "readers": {k: dict(v) for k, v in s.readers.items()}}


def snapshot_from(d: Mapping[str, Any]) -> Snapshot:
    return Snapshot(int(d["tick_ns"]), tuple(_reading(r) for r in d.get("cpu", [])),
                    tuple(_reading(r) for r in d.get("gpu", [])),
                    {str(k): {str(n): float(x) for n, x in v.items()} for k, v in d.get("readers", {}).items()})


@dataclass
class Saved:
    """What the file holds."""

    boot_id: str
    committed: Snapshot | None
    pending: Snapshot | None


class CounterStore:
    """``counters.json`` in the state dir: written before every commit, read once at start."""

    def __init__(self, state_dir: Path | None, boot_id: str | None) -> None:
        self.path = None if state_dir is None else Path(state_dir) / COUNTERS_FILE
        self.boot_id = boot_id
        self._pending: Snapshot | None = None
        self._once = LogOnce(log)

    def load(self) -> Saved | None:
        """The saved state, or None (no file, unreadable, another format: logged)."""
        if self.path is None:
            return None
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != _FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT}")
            return Saved(str(data["boot_id"]),
                         None if data.get("committed") is None else snapshot_from(data["committed"]),
                         None if data.get("pending") is None else snapshot_from(data["pending"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring %s (%s): counting starts fresh, the time since the last run is not charged",
                        self.path, e)
            return None

    def save(self, snapshot: Snapshot, committed: Snapshot | None = None) -> bool:
        """Write ``snapshot`` as pending, the previous pending (or ``committed``) as committed; atomically."""
        previous = committed if committed is not None else self._pending
        self._pending = snapshot
        if self.path is None or self.boot_id is None:
            return False
        data = {"format": _FORMAT, "boot_id": self.boot_id, "clock": "CLOCK_MONOTONIC",
                "committed": None if previous is None else snapshot_json(previous), "pending": snapshot_json(snapshot)}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as e:
            self._once.problem("save", "cannot save the counters' last readings to %s: %s; after a restart the "
                               "time the agent was down will not be charged (make the state dir writable)",
                               logging.WARNING, self.path, e)
            return False
        self._once.cleared("save")
        return True
