"""Bridging a restart: save the counters before each commit, restore them at start (accounting/resume.py).

``checkpoint`` runs in ``Agent.commit`` just before the tick's points go to
the ledger; ``restore`` runs once when the agent is built (agent/factory.py),
and decides between the saved snapshots with what the ledger holds. The
rules (same boot, committed tick, wrap check) and the choice of clock are in
``accounting.resume``'s docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from wattledger.accounting.gpu import GpuPools
from wattledger.accounting.resume import CounterStore, Resumable, Saved, Snapshot
from wattledger.agent.pools import CpuPools
from wattledger.model.points import WL_NODE
from wattledger.store.ledger import Ledger
from wattledger.util.timeutil import iso

log = logging.getLogger("wattledger.resume")


def checkpoint(store: CounterStore, cpu: CpuPools, gpu: GpuPools, readers: Iterable[object], tick_ns: int) -> None:
    """Save every counter's reading as of the tick stamped ``tick_ns`` (about to be committed)."""
    state = {r.name: r.checkpoint() for r in readers if isinstance(r, Resumable)}
    store.save(Snapshot(tick_ns, tuple(cpu.tracker.snapshot()), tuple(gpu.snapshot()), state))


def committed_base(saved: Saved, ledger: Ledger, host: str) -> Snapshot | None:
    """The snapshot whose tick is in the ledger: pending if its wl_node rows are there, else committed."""
    pending, committed = saved.pending, saved.committed
    if pending is None:
        return committed
    rows = ledger.rows(WL_NODE, pending.tick_ns, pending.tick_ns + 1)
    if committed is None or any(r.get("host") == host for r in rows):
        return pending
    return committed.merged_with(pending)  # the pending tick died with the agent: its energy is in the gap


def restore(store: CounterStore, ledger: Ledger, host: str, cpu: CpuPools, gpu: GpuPools,
            readers: Iterable[object]) -> int:
    """Give the trackers (and resumable readers) the last committed readings; the number of counters restored.

    Each restored counter's next delta is the gap (or, when the gap is too long for a wrapping counter,
    a baseline: ``counters.restart_gap_problem``, judged at that first read).
    """
    saved = store.load()
    if saved is None:
        return 0
    if store.boot_id is None or saved.boot_id != store.boot_id:
        why = ("the boot id cannot be read" if store.boot_id is None
               else "the machine rebooted since the agent last ran (boot id changed)")
        log.info("counters start fresh: %s; the energy between the last tick before that and now is not known",
                 why)
        return 0
    base = committed_base(saved, ledger, host)
    if base is None:
        return 0
    cpu.tracker.restore(list(base.cpu))
    gpu.restore(list(base.gpu))
    for reader in readers:  # the model continues its integral
        if isinstance(reader, Resumable) and reader.name in base.readers:
            reader.resume(base.readers[reader.name])
    store.save(base, committed=base)  # the next save keeps this as the committed base
    restored = len(base.cpu) + len(base.gpu)
    if restored:
        log.info("resuming %d counter(s) from the tick of %s: the energy counted until this agent's first "
                 "reading is charged to _unobserved", restored, iso(base.tick_ns))
    return restored
