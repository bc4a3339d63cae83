"""Bridging a restart of the agent: each counter's last reading, kept in the ledger (issue 17, item 4).

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

**Only what was committed.** The readings a tick's energy was measured up to
are written in the same ledger transaction as the tick's points (``meta``
key ``counters``; agent/restart.py), so the ledger holds exactly the
readings of its newest tick: after a kill -9, a full disk (ticks held in
memory and lost with the agent) or a crash at any point, the next agent's
first delta starts where the ledger's energy stops, and the gap is charged
once, never twice and never not at all.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from wattledger.accounting.counters import CounterKey, SavedReading

log = logging.getLogger("wattledger.resume")

BOOT_ID = Path("sys/kernel/random/boot_id")  # under the procfs root
_FORMAT = 2  # 1: counters.json beside the ledger, with a pending and a committed snapshot


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


class CounterStore:
    """The counters' readings as the ledger keeps them (a JSON text in ``meta``), stamped with the boot id."""

    def __init__(self, boot_id: str | None) -> None:
        self.boot_id = boot_id

    def encode(self, snapshot: Snapshot) -> str | None:
        """The text to commit with the tick (None when the boot id is unknown: nothing can be bridged)."""
        if self.boot_id is None:
            return None
        return json.dumps({"format": _FORMAT, "boot_id": self.boot_id, "clock": "CLOCK_MONOTONIC",
                           "snapshot": snapshot_json(snapshot)}, sort_keys=True)

    def decode(self, text: str | None) -> Snapshot | None:
        """The committed readings to resume from, or None (none saved, unreadable, another boot: logged)."""
        if text is None:
            return None
        try:
            data = json.loads(text)
            if data.get("format") != _FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT}")
            boot_id, snapshot = str(data["boot_id"]), snapshot_from(data["snapshot"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("ignoring the counters' saved readings (%s): counting starts fresh, the time since the "
                        "last run is not charged", e)
            return None
        if self.boot_id is None or boot_id != self.boot_id:
            why = ("the boot id cannot be read" if self.boot_id is None
                   else "the machine rebooted since the agent last ran (boot id changed)")
            log.info("counters start fresh: %s; the energy between the last tick before that and now is not known",
                     why)
            return None
        return snapshot
