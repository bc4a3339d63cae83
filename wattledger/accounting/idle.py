"""The idle (static) power of each pool: configured, from the model, learned, or none.

ABC splits a pool's energy into static S = min(E, P_idle * dt) and dynamic
D = E - S (``attribution``). P_idle comes from, in this order:

1. configured: ``[attribution] idle_power_w`` ("cpu" or "cpu:package-0");
2. model: the collector knows it (the model estimate does; hardware counters
   do not);
3. learned: a low percentile (``[attribution] idle_percentile``, default 5)
   of the pool's power over ticks of low activity (busy CPU below 5% of
   capacity), once at least ``MIN_LEARN_TICKS`` such ticks were seen. The
   learned state is kept in the state dir (``idle-baselines.json``) and
   reused after a restart;
4. none: no static part, everything is dynamic (and reports say so).

The estimator is a histogram with logarithmic bins (1% wide), so memory is
bounded, the state is small enough to write every minute, and old
observations fade: when the total weight passes ``MAX_WEIGHT`` every count
is halved. Pure core; the file is read and written only by ``load``/``save``.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattledger.util.logonce import LogOnce

log = logging.getLogger("wattledger.idle")

IDLE_FILE = "idle-baselines.json"
LOW_ACTIVITY_FRACTION = 0.05  # a tick counts as idle when busy CPU < 5% of capacity
MIN_LEARN_TICKS = 30
MAX_WEIGHT = 20_000.0
SAVE_EVERY_S = 60.0
_BIN_RATIO = 1.01
_LOG_RATIO = math.log(_BIN_RATIO)
_FORMAT = 1


class BaselineSource(str, enum.Enum):
    CONFIGURED = "configured"
    MODEL = "model"
    LEARNED = "learned"
    NONE = "none"


@dataclass(frozen=True)
class IdleBaseline:
    """The idle power a pool uses, and where it came from."""

    component: str
    device: str
    power_w: float | None
    source: BaselineSource
    learn_ticks: int = 0  # low-activity ticks the learned estimate rests on
    updated_ns: int = 0

    def describe(self) -> str:
        if self.source is BaselineSource.LEARNED:
            return f"{self.power_w:.2f} W learned from {self.learn_ticks} ticks"
        if self.source is BaselineSource.NONE:
            return (f"none (learning: {self.learn_ticks}/{MIN_LEARN_TICKS} low-activity ticks; "
                    "static energy counts as dynamic until then)")
        return f"{self.power_w:.2f} W {self.source.value}"


@dataclass
class PercentileEstimator:
    """A low percentile of observed power, from a log-binned histogram (pure)."""

    bins: dict[int, float] = field(default_factory=dict)
    zero: float = 0.0  # weight of observations <= 0 W
    ticks: int = 0  # observations ever added (not faded)

    @property
    def weight(self) -> float:
        return self.zero + math.fsum(self.bins.values())

    def add(self, power_w: float) -> None:
        if not math.isfinite(power_w):
            return
        self.ticks += 1
        if power_w <= 0:
            self.zero += 1.0
        else:
            i = math.floor(math.log(power_w) / _LOG_RATIO)
            self.bins[i] = self.bins.get(i, 0.0) + 1.0
        if self.weight > MAX_WEIGHT:
            self.zero /= 2
            self.bins = {i: w / 2 for i, w in self.bins.items() if w / 2 >= 0.25}

    def percentile(self, pct: float) -> float | None:
        total = self.weight
        if total <= 0:
            return None
        target = max(0.0, min(100.0, pct)) / 100.0 * total
        acc = self.zero
        if acc >= target and self.zero > 0:
            return 0.0
        for i in sorted(self.bins):
            acc += self.bins[i]
            if acc >= target:
                return _BIN_RATIO ** (i + 0.5)  # the bin's geometric middle
        return _BIN_RATIO ** (max(self.bins) + 0.5)

    def to_json(self) -> dict[str, Any]:
        return {"bins": {str(i): w for i, w in self.bins.items()}, "zero": self.zero, "ticks": self.ticks}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PercentileEstimator":
        return cls({int(i): float(w) for i, w in data.get("bins", {}).items()}, float(data.get("zero", 0.0)),
                   int(data.get("ticks", 0)))


def resolve(component: str, device: str, configured_w: float | None, model_w: float | None,
            learned: PercentileEstimator | None, percentile: float, now_ns: int = 0) -> IdleBaseline:
    """P_idle precedence: configured > model > learned (enough ticks) > none."""
    ticks = learned.ticks if learned is not None else 0
    if configured_w is not None:
        return IdleBaseline(component, device, configured_w, BaselineSource.CONFIGURED, ticks, now_ns)
    if model_w is not None:
        return IdleBaseline(component, device, model_w, BaselineSource.MODEL, ticks, now_ns)
    if learned is not None and learned.ticks >= MIN_LEARN_TICKS:
        value = learned.percentile(percentile)
        if value is not None:
            return IdleBaseline(component, device, value, BaselineSource.LEARNED, ticks, now_ns)
    return IdleBaseline(component, device, None, BaselineSource.NONE, ticks, now_ns)


class IdleBaselines:
    """Every pool's baseline for one agent: learns, resolves, persists."""

    def __init__(self, state_dir: Path | None, percentile: float = 5.0, learn: bool = True) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.percentile = percentile
        self.learn = learn
        self.learned: dict[str, PercentileEstimator] = {}
        self.used: dict[str, IdleBaseline] = {}
        self._saved_at = time.monotonic()
        self._once = LogOnce(log)  # an unwritable state file: said once, until a save works again

    @staticmethod
    def key(component: str, device: str) -> str:
        return f"{component}:{device}"

    # -- pure core -------------------------------------------------------------
    def resolve(self, component: str, device: str, configured_w: float | None, model_w: float | None,
                now_ns: int = 0) -> IdleBaseline:
        key = self.key(component, device)
        baseline = resolve(component, device, configured_w, model_w, self.learned.get(key), self.percentile, now_ns)
        self.used[key] = baseline
        return baseline

    def observe(self, component: str, device: str, power_w: float, activity_fraction: float | None) -> bool:
        """Learn from one tick of a pool; True when the tick was used."""
        if not self.learn or activity_fraction is None or activity_fraction >= LOW_ACTIVITY_FRACTION:
            return False
        key = self.key(component, device)
        used = self.used.get(key)
        if used is not None and used.source in (BaselineSource.CONFIGURED, BaselineSource.MODEL):
            return False  # nothing to learn: it is known
        self.learned.setdefault(key, PercentileEstimator()).add(power_w)
        return True

    def to_json(self) -> dict[str, Any]:
        pools: dict[str, Any] = {}
        for key in sorted(set(self.learned) | set(self.used)):
            entry: dict[str, Any] = {}
            if key in self.used:
                u = self.used[key]
                entry.update(component=u.component, device=u.device, power_w=u.power_w, source=u.source.value,
                             learn_ticks=u.learn_ticks, updated_ns=u.updated_ns)
            if key in self.learned:
                entry["learned"] = self.learned[key].to_json()
            pools[key] = entry
        return {"format": _FORMAT, "percentile": self.percentile, "pools": pools}

    def load_json(self, data: dict[str, Any]) -> None:
        for key, entry in data.get("pools", {}).items():
            if "learned" in entry:
                self.learned[key] = PercentileEstimator.from_json(entry["learned"])
            if "source" in entry:
                self.used[key] = _baseline_from_json(key, entry)

    # -- the edges ---------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / IDLE_FILE

    @classmethod
    def load(cls, state_dir: Path | None, percentile: float = 5.0, learn: bool = True) -> "IdleBaselines":
        me = cls(state_dir, percentile, learn)
        data = read_state(state_dir)
        if data is not None:
            me.load_json(data)
        return me

    def save(self) -> bool:
        """Write the state atomically (temp file + rename); False (logged once) on failure."""
        self._saved_at = time.monotonic()
        if self.path is None:
            return False
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_json(), sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as e:
            self._once.problem("save", "cannot save learned idle power to %s: %s; it will be learned again after "
                               "a restart (make the state dir writable)", logging.WARNING, self.path, e)
            return False
        self._once.cleared("save")
        return True

    def maybe_save(self, every_s: float = SAVE_EVERY_S) -> None:
        if time.monotonic() - self._saved_at >= every_s:
            self.save()


def _baseline_from_json(key: str, entry: dict[str, Any]) -> IdleBaseline:
    component, _, device = key.partition(":")
    power = entry.get("power_w")
    return IdleBaseline(
        entry.get("component", component), entry.get("device", device),
        None if power is None else float(power), BaselineSource(entry.get("source", "none")),
        int(entry.get("learn_ticks", 0)), int(entry.get("updated_ns", 0)),
    )


def read_state(state_dir: Path | None) -> dict[str, Any] | None:
    if state_dir is None:
        return None
    path = Path(state_dir) / IDLE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s (%s): idle power will be learned again", path, e)
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        log.warning("ignoring %s: unknown format; idle power will be learned again", path)
        return None
    return data


def idle_baselines(state_dir: Path | str) -> list[IdleBaseline]:
    """The baselines the agent last used, per pool, with their source (for ``report``).

    Read from the state dir, so it works while the agent runs and without it;
    an empty list when the agent never saved any.
    """
    data = read_state(Path(state_dir))
    if data is None:
        return []
    out = []
    for key, entry in sorted(data.get("pools", {}).items()):
        if "source" in entry:
            out.append(_baseline_from_json(key, entry))
        elif "learned" in entry:
            est = PercentileEstimator.from_json(entry["learned"])
            component, _, device = key.partition(":")
            out.append(resolve(component, device, None, None, est, float(data.get("percentile", 5.0))))
    return out
