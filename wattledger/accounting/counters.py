"""Monotonic energy counters -> interval deltas: wrap, reset and first read. The one place intervals are made.

Collectors report cumulative counters stamped with the agent's monotonic clock
(``read_ns``). ``CounterTracker.delta`` returns the energy since the previous
read of the same counter, and the interval between the two reads:

* first read of a counter: no delta (None). A first read never invents energy.
* value went down and the counter wraps (RAPL, ``wrap_uj`` known): it wrapped
  once; delta = value + wrap - previous.
* value went down and the counter does not wrap (NVML's 64-bit mJ counter):
  it was reset (driver reload); delta = value (energy since the reset), and
  the event is reported.
* an interval longer than the counter's wrap period at the observed power
  cannot be corrected (several wraps look like one): reported as suspect.

A counter that could not be read for a tick simply has no read that tick: its
next delta spans both ticks, with both ticks' interval.

Across a restart of the agent (``snapshot`` / ``restore``, kept in the state
dir by ``accounting.resume``), a restored reading makes the next delta span
the time no agent ran; it is flagged ``restored`` so that its energy goes to
``_unobserved`` (no process is known for it). A wrapping counter whose gap
is longer than ``GAP_WRAP_MARGIN`` x its wrap period at the highest power it
was seen drawing (or that was never seen drawing any) could have wrapped
more than once unseen: its first read after the restart is a baseline, and
that is logged (``restart_gap_problem``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from wattledger.model.readings import EnergyCounter
from wattledger.model.units import NS_PER_S, UJ_PER_J

log = logging.getLogger("wattledger.resume")

CounterKey = tuple[str, str, str]  # (source, component, device)
GAP_WRAP_MARGIN = 0.9  # bridge a restart's gap for at most this share of the wrap period at peak power


@dataclass(frozen=True)
class CounterDelta:
    energy_j: float
    interval_s: float  # between the two reads this delta spans (monotonic clock)
    wrapped: bool = False
    reset: bool = False
    # True when the interval was long enough for an undetectable extra wrap.
    suspect: bool = False
    # True when the previous reading came from before a restart (the gap no agent watched).
    restored: bool = False


@dataclass
class _Last:
    counter_uj: int
    read_ns: int
    wrap_uj: int | None = None
    peak_w: float | None = None  # the highest power seen on this counter (for the restart gap's wrap check)
    restored: bool = False


@dataclass(frozen=True)
class SavedReading:
    """A counter's last reading, to carry it across a restart of the agent (same boot only)."""

    key: CounterKey
    counter_uj: int
    read_ns: int  # monotonic clock of the boot it was read in
    wrap_uj: int | None = None
    peak_w: float | None = None


def counter_key(counter: EnergyCounter) -> CounterKey:
    return (counter.source, counter.component, counter.device)


def wrap_suspect(diff_uj: int, interval_s: float, wrap_uj: int | None) -> bool:
    """True when the interval is close to the wrap period at the observed power (a wrap may hide)."""
    if not wrap_uj or diff_uj <= 0:
        return False
    power_w = diff_uj / UJ_PER_J / interval_s
    return interval_s >= 0.9 * (wrap_uj / UJ_PER_J) / max(power_w, 1e-9)


def restart_gap_problem(wrap_uj: int | None, peak_w: float | None, gap_s: float) -> str | None:
    """Why a restart's gap of ``gap_s`` cannot be charged from this counter's delta (None: it can)."""
    if gap_s <= 0:
        return "its saved reading is not older than this one"
    if not wrap_uj:
        return None  # a 64-bit counter (NVML) or our own integral (the model): nothing hides
    if not peak_w:
        return "its power was never measured, so a wrap in the gap cannot be ruled out"
    limit_s = GAP_WRAP_MARGIN * wrap_uj / UJ_PER_J / peak_w
    if gap_s > limit_s:
        return (f"the gap ({gap_s:.0f} s) is longer than {GAP_WRAP_MARGIN:g} x its wrap period at its peak "
                f"{peak_w:.0f} W ({limit_s:.0f} s): it may have wrapped more than once")
    return None


@dataclass
class CounterTracker:
    _last: dict[CounterKey, _Last] = field(default_factory=dict)

    def delta(self, counter: EnergyCounter, read_ns: int) -> CounterDelta | None:
        key = counter_key(counter)
        last = self._last.get(key)
        if last is not None and last.restored:
            why = restart_gap_problem(last.wrap_uj, last.peak_w, (read_ns - last.read_ns) / NS_PER_S)
            if why is not None:
                log.warning("%s %s: not bridged across the restart, counting starts fresh: %s", key[0], key[2], why)
                last = None
        now = self._last[key] = _Last(counter.counter_uj, read_ns, counter.wrap_uj,
                                      None if last is None else last.peak_w)
        if last is None or read_ns <= last.read_ns:
            return None
        diff_uj = counter.counter_uj - last.counter_uj
        wrapped = reset = False
        if diff_uj < 0:
            if counter.wrap_uj:
                diff_uj += counter.wrap_uj
                wrapped = True
            else:
                diff_uj = counter.counter_uj
                reset = True
        interval_s = (read_ns - last.read_ns) / NS_PER_S
        if not last.restored:  # a gap's mean power says nothing about the peak
            power_w = diff_uj / UJ_PER_J / interval_s
            now.peak_w = power_w if now.peak_w is None else max(now.peak_w, power_w)
        return CounterDelta(diff_uj / UJ_PER_J, interval_s, wrapped=wrapped, reset=reset,
                            suspect=wrap_suspect(diff_uj, interval_s, counter.wrap_uj), restored=last.restored)

    def known(self, key: CounterKey) -> bool:
        """A counter read before (its next read gives a delta)."""
        return key in self._last

    def forget(self, key: CounterKey) -> None:
        """Make the counter's next read a baseline (nothing is charged across a gap that cannot be)."""
        self._last.pop(key, None)

    def snapshot(self) -> list[SavedReading]:
        """Every counter's last reading (to save before the tick that used it is committed)."""
        return [SavedReading(key, last.counter_uj, last.read_ns, last.wrap_uj, last.peak_w)
                for key, last in sorted(self._last.items())]

    def restore(self, readings: list[SavedReading]) -> None:
        """Readings saved by an agent that ran before this one (same boot): each counter's next delta
        spans the gap and is flagged ``restored``."""
        for r in readings:
            self._last[r.key] = _Last(r.counter_uj, r.read_ns, r.wrap_uj, r.peak_w, restored=True)
