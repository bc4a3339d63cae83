"""Bridging a restart: the counters' readings go into the ledger with each tick, and come back at start
(accounting/resume.py).

``checkpoint`` gives, in ``Agent.commit``, the readings the tick's energy was
measured up to, as the meta the ledger writes in the tick's own transaction
(``Ledger.append(points, state)``); ``restore`` runs once when the agent is
built (agent/factory.py) and resumes from what the ledger holds. Because the
readings and the tick are committed together, the ledger always holds the
readings of its newest tick: no tick can be in it without them, nor them
without the tick. The rules (same boot, wrap check) and the choice of clock
are in ``accounting.resume``'s docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from wattledger.accounting.gpu import GpuPools
from wattledger.accounting.resume import CounterStore, Resumable, Snapshot
from wattledger.agent.pools import CpuPools
from wattledger.store.ledger import Ledger
from wattledger.util.timeutil import iso

log = logging.getLogger("wattledger.resume")

COUNTERS_KEY = "counters"  # the ledger's meta key for the readings of its newest tick


def checkpoint(store: CounterStore, cpu: CpuPools, gpu: GpuPools, readers: Iterable[object], tick_ns: int
               ) -> dict[str, str]:
    """The meta to commit with the tick stamped ``tick_ns``: every counter's reading as of that tick
    (empty when the boot id is unknown: nothing could be bridged)."""
    state = {r.name: r.checkpoint() for r in readers if isinstance(r, Resumable)}
    text = store.encode(Snapshot(tick_ns, tuple(cpu.tracker.snapshot()), tuple(gpu.snapshot()), state))
    return {} if text is None else {COUNTERS_KEY: text}


def restore(store: CounterStore, ledger: Ledger, cpu: CpuPools, gpu: GpuPools, readers: Iterable[object]) -> int:
    """Give the trackers (and resumable readers) the readings of the ledger's newest tick; the number of
    counters restored.

    Each restored counter's next delta is the gap (or, when the gap is too long for a wrapping counter,
    a baseline: ``counters.restart_gap_problem``, judged at that first read).
    """
    base = store.decode(ledger.get_meta(COUNTERS_KEY))
    if base is None:
        return 0
    cpu.tracker.restore(list(base.cpu))
    gpu.restore(list(base.gpu))
    for reader in readers:  # the model continues its integral
        if isinstance(reader, Resumable) and reader.name in base.readers:
            reader.resume(base.readers[reader.name])
    restored = len(base.cpu) + len(base.gpu)
    if restored:
        log.info("resuming %d counter(s) from the tick of %s: the energy counted until this agent's first "
                 "reading is charged to _unobserved", restored, iso(base.tick_ns))
    return restored
