"""Monotonic energy counters -> interval deltas: wrap, reset and first read.

Collectors report cumulative counters. ``CounterTracker.delta`` returns the
energy since the previous read of the same counter:

* first read of a counter: no delta (None). A first read never invents energy.
* value went down and the counter wraps (RAPL, ``wrap_uj`` known): it wrapped
  once; delta = value + wrap - previous.
* value went down and the counter does not wrap (NVML's 64-bit mJ counter):
  it was reset (driver reload); delta = value (energy since the reset), and
  the event is reported.
* an interval longer than the counter's wrap period at the observed power
  cannot be corrected (several wraps look like one): reported as suspect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wattledger.model.readings import EnergyCounter


@dataclass(frozen=True)
class CounterDelta:
    energy_j: float
    wrapped: bool = False
    reset: bool = False
    # True when the interval was long enough for an undetectable extra wrap.
    suspect: bool = False


@dataclass
class _Last:
    counter_uj: int
    now_ns: int


@dataclass
class CounterTracker:
    _last: dict[tuple[str, str, str], _Last] = field(default_factory=dict)

    def delta(self, counter: EnergyCounter, now_ns: int) -> CounterDelta | None:
        key = (counter.source, counter.component, counter.device)
        last = self._last.get(key)
        self._last[key] = _Last(counter.counter_uj, now_ns)
        if last is None or now_ns <= last.now_ns:
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
        suspect = False
        if counter.wrap_uj and diff_uj > 0:
            interval_s = (now_ns - last.now_ns) / 1e9
            power_w = diff_uj / 1e6 / interval_s
            # The wrap period at this power; an interval close to it may hide a wrap.
            if interval_s >= 0.9 * (counter.wrap_uj / 1e6) / max(power_w, 1e-9):
                suspect = True
        return CounterDelta(diff_uj / 1e6, wrapped=wrapped, reset=reset, suspect=suspect)

    def forget(self, counter_key: tuple[str, str, str]) -> None:
        self._last.pop(counter_key, None)
