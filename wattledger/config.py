"""Typed, validated TOML configuration with defaults. Unknown keys are errors that name the key.

Precedence (lowest to highest): built-in defaults, the config file
(``/etc/wattledger/config.toml`` when it exists, or ``--config``), then
``WATTLEDGER_<SECTION>_<KEY>`` environment variables (e.g.
``WATTLEDGER_AGENT_INTERVAL_S=5``, ``WATTLEDGER_SINK_TOKEN=...``), then
command-line options (``Overrides``). ``deploy/config.example.toml``
documents every key with its range.

Every key has one explicit parser (``Text``, ``Flag``, ``OneOf``, ``Number``,
``Names``, ``WattsTable``), kept beside its default as field metadata, and
the same parser checks a value whether it came from the file, the
environment or the command line. Choices become enums once, at load
(``StaticPolicy``, ``Estimate``, ``Gpus``, ``SinkKind``). Numbers are finite
and in a documented range; a bool is not a number and a fraction is not a
whole number. A bad value is a one-line ``ConfigError`` naming where it came
from, the key and what is allowed.

The environment is read here and only here (``load``); the CLI's options are
typed ``Overrides``. Which sink a config means is decided by
``resolve_sink_kind``, for every caller.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from wattledger.model.embodied import COMPONENTS as EMBODIED_COMPONENTS
from wattledger.model.jobs import DEFAULT_TAG_VARS, MAX_TAG_CHARS
from wattledger.model.policies import AfterLife, Choice, StaticPolicy, Unused
from wattledger.util.redact import redact_url
from wattledger.model.slurm import DEFAULT_GPU_VARS
from wattledger.model.tiers import HOURS, MINUTES, RAW, TIERS

DEFAULT_CONFIG_PATH = Path("/etc/wattledger/config.toml")
ENV_PREFIX = "WATTLEDGER_"
PARSER = "parser"  # the field-metadata key that holds a field's parser


class ConfigError(ValueError):
    """A config problem, phrased for the admin who has to fix it."""


class Estimate(Choice):
    """[agent] estimate: when the model estimate stands in for the CPU/DRAM counters."""

    AUTO = "auto"      # only when no RAPL counter can be read
    ALWAYS = "always"
    NEVER = "never"


class Gpus(Choice):
    """[agent] gpus: whether GPUs are read through NVML."""

    AUTO = "auto"
    NEVER = "never"


class Chassis(Choice):
    """[embodied] chassis: the enclosure whose mainboard, power supplies and case the host's figure includes."""

    RACK = "rack"
    BLADE = "blade"


class SinkKind(Choice):
    """[sink] kind: where points go besides the local ledger."""

    NONE = "none"
    STDOUT = "stdout"
    INFLUX_V1 = "influx_v1"
    INFLUX_V2 = "influx_v2"

    @property
    def remote(self) -> bool:
        """True when points leave the host (the ledger then spools them until delivered)."""
        return self in (SinkKind.INFLUX_V1, SinkKind.INFLUX_V2)


class Layout(Choice):
    """[influx] layout: how the agents' points are laid out in InfluxDB (docs/fleet.md)."""

    TIERED = "tiered"  # raw ticks, the ledger's minute sums and its hour sums in three retention policies
    SINGLE = "single"  # every point into [sink] database/retention_policy or bucket (no rollups sent)


# -- parsers: one per key, each says what it allows --------------------------------------------------------------


class BadValue(ValueError):
    """A value a parser refuses; ``load`` adds where it came from and which key it was."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Text:
    def allowed(self) -> str:
        return "a string"

    def parse(self, value: object) -> str:
        if not isinstance(value, str):
            raise BadValue(self.allowed())
        return value


@dataclass(frozen=True)
class Flag:
    def allowed(self) -> str:
        return "true or false"

    def parse(self, value: object) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise BadValue(self.allowed())


@dataclass(frozen=True)
class OneOf:
    choices: type[Choice]

    def allowed(self) -> str:
        return "one of " + ", ".join(c.value for c in self.choices)

    def parse(self, value: object) -> Choice:
        if isinstance(value, self.choices):
            return value
        if isinstance(value, str):
            try:
                return self.choices(value)
            except ValueError:
                pass
        raise BadValue(self.allowed())


@dataclass(frozen=True)
class Number:
    """A finite number in [lo, hi]; ``whole``: an integer; ``off``: 0 also allowed; ``empty``: "" is None."""

    lo: float
    hi: float
    unit: str = ""
    whole: bool = False
    off: bool = False
    empty: bool = False

    def allowed(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        text = f"{kind} from {_show(self.lo)} to {_show(self.hi)}" + (f" ({self.unit})" if self.unit else "")
        if self.off:
            text = f"0 (off) or {text}"
        if self.empty:
            text = f"empty or {text}"
        return text

    def parse(self, value: object) -> float | int | None:
        if self.empty and (value is None or (isinstance(value, str) and not value.strip())):
            return None
        number = self._number(value)
        if not math.isfinite(number):
            raise BadValue(self.allowed())
        if self.whole and not number.is_integer():
            raise BadValue(self.allowed())  # 2.9 rows is not 2 rows: no silent truncation
        if not (self.lo <= number <= self.hi or (self.off and number == 0)):
            raise BadValue(self.allowed())
        return int(number) if self.whole else number

    def _number(self, value: object) -> float:
        if isinstance(value, bool):  # a bool is an int to Python, never a number here
            raise BadValue(self.allowed())
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # the environment
            try:
                return float(value.strip())
            except ValueError:
                raise BadValue(self.allowed()) from None
        raise BadValue(self.allowed())


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Names:
    def allowed(self) -> str:
        return "a list of strings (in the environment: comma-separated)"

    def parse(self, value: object) -> list[str]:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadValue(self.allowed())
        return list(value)


@dataclass(frozen=True)
class WattsTable:
    """A table of names to numbers, each checked by ``each``."""

    each: Number

    def allowed(self) -> str:
        return f"a table of names to numbers, each {self.each.allowed()}"

    def parse(self, value: object) -> dict[str, float]:
        if not isinstance(value, Mapping):
            raise BadValue(self.allowed())
        out: dict[str, float] = {}
        for name, v in value.items():
            try:
                parsed = self.each.parse(v)
            except BadValue:
                raise BadValue(f"{self.allowed()} (entry {str(name)!r} is {v!r})") from None
            out[str(name)] = float(parsed or 0.0)
        return out


@dataclass(frozen=True)
class NamesTable:
    """A table of names to lists of names (``{"alice-thesis" = ["alice", "bob"]}``)."""

    def allowed(self) -> str:
        return "a table of names to lists of strings"

    def parse(self, value: object) -> dict[str, list[str]]:
        if not isinstance(value, Mapping):
            raise BadValue(self.allowed())
        out: dict[str, list[str]] = {}
        for name, v in value.items():
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise BadValue(f"{self.allowed()} (entry {str(name)!r} is {v!r})")
            out[str(name)] = list(v)
        return out



@dataclass(frozen=True)
class Listen:
    """Where a server listens: empty (off), a port or ``:port`` (loopback), or ``host:port``."""

    default_host: str = "127.0.0.1"

    def allowed(self) -> str:
        return ('empty (off), a port ("9464", ":9464": loopback only), or "host:port" '
                '("0.0.0.0:9464", "[::1]:9464"), port 1 to 65535')

    def parse(self, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise BadValue(self.allowed())
        text = str(value).strip()
        if not text:
            return ""
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = "", text
        host = host.strip() or self.default_host
        if not port.isdigit() or not 1 <= int(port) <= 65535 or (":" in host and not host.startswith("[")):
            raise BadValue(self.allowed())
        return f"{host}:{int(port)}"


def listen_address(listen: str) -> tuple[str, int] | None:
    """(host, port) of a parsed ``Listen`` value (brackets of an IPv6 host removed); None when off."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


Parser = Text | Flag | OneOf | Number | Names | WattsTable | NamesTable | Listen


def _key(default: Any, parser: Parser) -> Any:
    """A config field: its default and the one parser that checks every value given for it."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={PARSER: parser})
    return field(default=default, metadata={PARSER: parser})


def _text(default: str = "") -> Any:
    return _key(default, Text())


def _flag(default: bool) -> Any:
    return _key(default, Flag())


def _choice(default: Choice) -> Any:
    return _key(default, OneOf(type(default)))


def _number(default: float | int | None, lo: float, hi: float, unit: str = "", **kw: bool) -> Any:
    return _key(default, Number(lo, hi, unit, **kw))


# -- the sections ------------------------------------------------------------------------------------------------


@dataclass
class AgentSection:
    interval_s: float = _number(5.0, 0.05, 3600.0, "seconds")
    state_dir: str = _text("/var/lib/wattledger")
    host: str = _text()  # empty: the machine's hostname
    sysfs_root: str = _text("/sys")
    procfs_root: str = _text("/proc")
    cgroup_root: str = _text("/sys/fs/cgroup")
    # auto: use the model estimate only when no RAPL counter can be read.
    estimate: Estimate = _choice(Estimate.AUTO)
    gpus: Gpus = _choice(Gpus.AUTO)


@dataclass
class JobsSection:
    tag_vars: list[str] = _key(list(DEFAULT_TAG_VARS), Names())
    max_tag_chars: int = _number(MAX_TAG_CHARS, 1, 1024, "characters", whole=True)
    use_cgroups: bool = _flag(True)
    # Project names more than one user may charge to as one project: {"name" = ["user", ...]}.
    # Any other project is (user, name), like a job (docs/attribution.md, "Projects").
    shared_projects: dict[str, list[str]] = _key({}, NamesTable())
    # Distinct (job, project, phase) tag sets one user may create per UTC day; the rest fold into
    # the user's _overflow job (docs/attribution.md, "Cardinality").
    max_tags_per_user_day: int = _number(200, 1, 100_000, "tag sets", whole=True)


@dataclass
class AttributionSection:
    cpu_static_policy: StaticPolicy = _choice(StaticPolicy.CAPACITY)
    dram_static_policy: StaticPolicy = _choice(StaticPolicy.CAPACITY)
    gpu_static_policy: StaticPolicy = _choice(StaticPolicy.OCCUPANCY)
    # Idle power per pool, watts, keyed "component" or "component:device"
    # (e.g. {"cpu" = 20.0, "gpu:GPU-1234..." = 60.0}). Unset pools learn it.
    idle_power_w: dict[str, float] = _key({}, WattsTable(Number(0.0, 10_000.0, "watts")))
    learn_idle: bool = _flag(True)
    idle_percentile: float = _number(5.0, 0.0, 100.0, "percent")

    def static_policy(self, component: str) -> StaticPolicy:
        """The static policy of a pool kind ("cpu", "dram", "gpu"; others follow the CPU's)."""
        return {"dram": self.dram_static_policy, "gpu": self.gpu_static_policy}.get(component,
                                                                                     self.cpu_static_policy)


@dataclass
class EstimateSection:
    # Cloud Carbon Footprint's coefficients (GCP average, per vCPU).
    cpu_idle_w_per_vcpu: float = _number(0.71, 0.0, 100.0, "watts")
    cpu_max_w_per_vcpu: float = _number(4.26, 0.0, 100.0, "watts, at least cpu_idle_w_per_vcpu")
    # Cloud Carbon Footprint's memory coefficient, watts per GiB of RAM.
    dram_w_per_gib: float = _number(0.392, 0.0, 10.0, "watts")


@dataclass
class SinkSection:
    kind: SinkKind = _choice(SinkKind.NONE)
    url: str = _text()
    database: str = _text()  # v1 API
    retention_policy: str = _text()
    username: str = _text()
    password: str = _text()
    bucket: str = _text()  # v2 API
    org: str = _text()
    token: str = _text()
    timeout_s: float = _number(10.0, 0.1, 600.0, "seconds")
    batch_points: int = _number(5000, 1, 1_000_000, "points", whole=True)
    gzip: bool = _flag(True)


@dataclass
class InfluxSection:
    """The fleet's InfluxDB layout (docs/fleet.md): tiers and how long each is kept."""

    layout: Layout = _choice(Layout.TIERED)
    raw_days: float = _number(2.0, 0.05, 3650.0, "days")
    minutes_days: float = _number(20.0, 0.05, 36500.0, "days, at least raw_days")
    hours_days: float = _number(0.0, 1.0, 36500.0, "days, at least minutes_days", off=True)  # 0: forever


@dataclass
class SpoolSection:
    max_rows: int = _number(2_000_000, 1, 1_000_000_000, "rows", whole=True)


@dataclass
class LedgerSection:
    """The local ledger's retention (docs/storage.md): raw ticks, then minutes, then hours (and days)."""

    raw_days: float = _number(3.0, 0.05, 3650.0, "days")
    minutes_days: float = _number(35.0, 0.05, 36500.0, "days, at least raw_days")
    hours_days: float = _number(800.0, 1.0, 36500.0, "days, at least minutes_days")
    # Points held in memory while the ledger cannot be written (disk full); beyond, the oldest are dropped.
    buffer_points: int = _number(50_000, 0, 10_000_000, "points", whole=True)


@dataclass
class CarbonSection:
    zone: str = _text("WORLD")
    provider: str = _text("static")  # static | electricitymaps | watttime | ukci | csv
    g_per_kwh: float | None = _number(None, 0.0, 2000.0, "g CO2e/kWh", empty=True)  # overrides the table
    api_url: str = _text()
    token: str = _text()
    username: str = _text()
    password: str = _text()
    csv_path: str = _text()
    sync_interval_s: float = _number(0.0, 60.0, 604_800.0, "seconds", off=True)  # 0: no sync by the agent


@dataclass
class PueSection:
    value: float = _number(1.58, 1.0, 5.0, "facility energy / IT energy")  # Uptime Institute, 2020 industry average
    site: str = _text()


@dataclass
class SlurmSection:
    # Variables naming the GPUs Slurm allocated, read from a Slurm job's processes; the first set wins.
    gpu_vars: list[str] = _key(list(DEFAULT_GPU_VARS), Names())
    # Allocated GPUs are held by the job (occupancy policy) even while it has no context on them.
    hold_allocated_gpus: bool = _flag(True)
    # The Epilog waits for this many agent ticks after the job ended before it sums the job.
    epilog_ticks: int = _number(2, 1, 10, "ticks", whole=True)
    # ... and at most this long for them (the job stays COMPLETING meanwhile).
    epilog_timeout_s: float = _number(30.0, 0.0, 600.0, "seconds")
    # Where the job's output file cannot be found: write wattledger-slurm-<id>.txt in its working directory.
    summary_fallback: bool = _flag(True)


@dataclass
class PrometheusSection:
    listen: str = _key("", Listen())  # empty: no /metrics endpoint
    # Only jobs charged energy in this window are exposed (series cardinality stays bounded).
    active_window_s: float = _number(900.0, 10.0, 604_800.0, "seconds")
    # At most how often (at a scrape) the counters are saved in the ledger, so that a restart continues them.
    snapshot_interval_s: float = _number(60.0, 1.0, 3600.0, "seconds")


@dataclass
class EmbodiedSection:
    # Charge the hardware's embodied (manufacture and transport) carbon to jobs (docs/embodied.md).
    enabled: bool = _flag(True)
    # A Boavizta server archetype this host is taken to be (e.g. "p5.48xlarge"); empty: the detected hardware.
    archetype: str = _text()
    # Years over which each device's footprint is spread (the accrual rate is kgCO2e / lifetime).
    lifetime_years: float = _number(4.0, 0.5, 30.0, "years")
    # The date the host went into service (YYYY-MM-DD); with it, the end of life is known.
    in_service: str = _text()
    # Past the end of life: "stop" (its footprint is charged in full) or "continue" at the same rate.
    after_end_of_life: AfterLife = _choice(AfterLife.STOP)
    # Embodied carbon no job used: "idle" (unused capacity, on _idle) or "absorb" (the jobs carry it).
    unused: Unused = _choice(Unused.IDLE)
    chassis: Chassis = _choice(Chassis.RACK)
    # Installed DRAM in GiB when /proc/meminfo's MemTotal (a little under it) will not do; 0: MemTotal.
    dram_gib: float = _number(0.0, 0.0, 1_048_576.0, "GiB", off=True)
    # kgCO2e per device, keyed "component" or "component:device" (gpu, cpu, dram, storage, chassis),
    # e.g. {"gpu" = 600.0, "cpu:package-1" = 35.0}; replaces the table's figure.
    device_kg: dict[str, float] = _key({}, WattsTable(Number(0.0, 1_000_000.0, "kgCO2e")))


@dataclass
class Config:
    agent: AgentSection = field(default_factory=AgentSection)
    jobs: JobsSection = field(default_factory=JobsSection)
    attribution: AttributionSection = field(default_factory=AttributionSection)
    estimate: EstimateSection = field(default_factory=EstimateSection)
    sink: SinkSection = field(default_factory=SinkSection)
    influx: InfluxSection = field(default_factory=InfluxSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    ledger: LedgerSection = field(default_factory=LedgerSection)
    carbon: CarbonSection = field(default_factory=CarbonSection)
    pue: PueSection = field(default_factory=PueSection)
    slurm: SlurmSection = field(default_factory=SlurmSection)
    prometheus: PrometheusSection = field(default_factory=PrometheusSection)
    embodied: EmbodiedSection = field(default_factory=EmbodiedSection)

    @property
    def state_dir(self) -> Path:
        return Path(self.agent.state_dir)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
POLICIES = tuple(p.value for p in StaticPolicy)
SINK_KINDS = tuple(k.value for k in SinkKind)


_SECTION_NAMES: dict[type, str] = {type(getattr(Config(), name)): name for name in SECTIONS}
PARSERS: dict[tuple[str, str], Parser] = {
    (section, f.name): f.metadata[PARSER]
    for section in SECTIONS
    for f in dataclasses.fields(getattr(Config(), section))
}


def parser_of(section: str, key: str) -> Parser:
    """The parser of ``[section] key`` (KeyError when there is no such key)."""
    return PARSERS[(section, key)]


def parse_value(section: str, key: str, value: object, origin: str = "") -> Any:
    """One value through its key's parser; ConfigError names the origin, the key and what is allowed."""
    try:
        return parser_of(section, key).parse(value)
    except BadValue as e:
        prefix = f"{origin}: " if origin else ""
        raise ConfigError(f"{prefix}[{section}] {key} must be {e}, got {value!r}") from None


def _set(cfg: Config, section: str, key: str, value: object, origin: str) -> None:
    setattr(getattr(cfg, section), key, parse_value(section, key, value, origin))


def check_section(section: Any) -> None:
    """Check (and normalise) every value of one section object, e.g. a ``SinkSection`` built in code."""
    name = _SECTION_NAMES[type(section)]
    for f in dataclasses.fields(section):
        setattr(section, f.name, parse_value(name, f.name, getattr(section, f.name)))


# -- sources: file, environment, command line --------------------------------------------------------------------


def _apply(cfg: Config, data: Mapping[str, Any], origin: str) -> None:
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]; known: {', '.join(SECTIONS)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        known = [f.name for f in dataclasses.fields(getattr(cfg, section))]
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{origin}: unknown key '{key}' in [{section}]; known keys: {', '.join(known)}")
            _set(cfg, section, key, value, origin)


def env_values(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The one reader of ``WATTLEDGER_<SECTION>_<KEY>`` variables: {section: {key: raw text}}.

    Variables that name no section (``WATTLEDGER_JOB``, ``WATTLEDGER_CONFIG``...) are not config keys.
    """
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                out.setdefault(section, {})[rest[len(section) + 1:]] = value
                break
    return out


def _apply_env(cfg: Config, environ: Mapping[str, str]) -> None:
    for section, values in env_values(environ).items():
        for key, value in values.items():
            _apply(cfg, {section: {key: value}}, f"environment {ENV_PREFIX}{section.upper()}_{key.upper()}")


def _override(target: tuple[str, str], option: str) -> Any:
    return field(default=None, metadata={"target": target, "option": option})


@dataclass(frozen=True)
class Overrides:
    """Values given on the command line (None: not given). They win over the file and the environment and
    are checked by the same parsers, so ``--interval nan`` fails as ``interval_s = nan`` does."""

    interval_s: float | None = _override(("agent", "interval_s"), "--interval")
    state_dir: str | None = _override(("agent", "state_dir"), "--state-dir")
    sysfs_root: str | None = _override(("agent", "sysfs_root"), "--sysfs-root")
    procfs_root: str | None = _override(("agent", "procfs_root"), "--procfs-root")
    sink_kind: SinkKind | str | None = _override(("sink", "kind"), "--sink")
    sink_url: str | None = _override(("sink", "url"), "--influx-url")
    sink_database: str | None = _override(("sink", "database"), "--influx-database")
    sink_bucket: str | None = _override(("sink", "bucket"), "--influx-bucket")
    sink_org: str | None = _override(("sink", "org"), "--influx-org")
    sink_token: str | None = _override(("sink", "token"), "--influx-token")

    def apply(self, cfg: Config) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                section, key = f.metadata["target"]
                _set(cfg, section, key, value, f.metadata["option"])


def validate(cfg: Config) -> None:
    """Check (and normalise: strings to enums) every value, wherever it came from; then the cross-key rules."""
    for section in SECTIONS:
        check_section(getattr(cfg, section))
    led = cfg.ledger
    if not led.raw_days <= led.minutes_days <= led.hours_days:
        raise ConfigError(f"[ledger] retention must not grow finer with age: raw_days ({led.raw_days:g}) <= "
                          f"minutes_days ({led.minutes_days:g}) <= hours_days ({led.hours_days:g})")
    inf = cfg.influx
    if not inf.raw_days <= inf.minutes_days <= (inf.hours_days or math.inf):
        raise ConfigError(f"[influx] retention must not grow finer with age: raw_days ({inf.raw_days:g}) <= "
                          f"minutes_days ({inf.minutes_days:g}) <= hours_days ({inf.hours_days:g}; 0: forever)")
    e = cfg.estimate
    if e.cpu_max_w_per_vcpu < e.cpu_idle_w_per_vcpu:
        raise ConfigError(f"[estimate] cpu_max_w_per_vcpu ({e.cpu_max_w_per_vcpu:g}) must be at least "
                          f"cpu_idle_w_per_vcpu ({e.cpu_idle_w_per_vcpu:g})")
    _check_embodied(cfg.embodied)


def _check_embodied(e: EmbodiedSection) -> None:
    if e.in_service:
        try:
            dt.date.fromisoformat(e.in_service)
        except ValueError:
            raise ConfigError(f"[embodied] in_service must be a date YYYY-MM-DD (when the host went into "
                              f"service), got {e.in_service!r}") from None
    unknown = sorted(k for k in e.device_kg if k.split(":", 1)[0] not in EMBODIED_COMPONENTS)
    if unknown:
        raise ConfigError(f"[embodied] device_kg keys must be a component or component:device, the component "
                          f"one of {', '.join(EMBODIED_COMPONENTS)}; got {', '.join(map(repr, unknown))}")


def config_path(path: Path | None) -> Path | None:
    """The file ``load`` reads: ``path`` (``--config``) when given, else the default one when it exists."""
    if path is None and DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH
    return path


def load(path: Path | None = None, environ: Mapping[str, str] | None = None,
         overrides: Overrides | None = None) -> Config:
    """Defaults, then the file (an explicit path must exist), then the environment, then ``overrides``."""
    cfg = Config()
    environ = os.environ if environ is None else environ
    path = config_path(path)
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        _apply(cfg, data, str(path))
    _apply_env(cfg, environ)
    if overrides is not None:
        overrides.apply(cfg)
    validate(cfg)
    return cfg


# -- what the config means ---------------------------------------------------------------------------------------


def resolve_sink_kind(sink: SinkSection) -> SinkKind:
    """The sink a ``[sink]`` section means, the one rule for the file, the environment and the options.

    An explicit ``kind`` wins. Left at "none" with a ``url``: a ``bucket`` or a
    ``token`` means the v2 API (``influx_v2``), a ``database`` the v1 API
    (``influx_v1``); both a database and a bucket is ambiguous, neither is
    incomplete: both are errors that say what to give. No url: "none".
    """
    try:
        kind = SinkKind(sink.kind)
    except ValueError:
        raise ConfigError(f"[sink] kind must be {OneOf(SinkKind).allowed()}, got {sink.kind!r}") from None
    if kind is not SinkKind.NONE or not sink.url:
        return kind
    if sink.database and sink.bucket:
        raise ConfigError(
            "[sink] has both a database (InfluxDB 1.x API) and a bucket (2.x/3.x API): give either "
            "--influx-database (v1 API) or --influx-bucket (v2 API), not both, or set [sink] kind"
        )
    if sink.bucket or sink.token:
        return SinkKind.INFLUX_V2
    if sink.database:
        return SinkKind.INFLUX_V1
    raise ConfigError(
        f"[sink] url is set ({redact_url(sink.url)}) but neither a database nor a bucket: give --influx-database DB "
        "for InfluxDB 1.x, or --influx-bucket B --influx-org O --influx-token T for 2.x/3.x "
        "(or [sink] database / bucket in the config file)"
    )


def tier_targets(cfg: Config) -> dict[str, str]:
    """Where each tier (model/tiers.py) is written: tier -> retention policy (v1 API) or bucket (v2 API).

    ``tiered``: the retention policies ``raw``, ``minutes``, ``hours`` of [sink] database, or the buckets
    ``<bucket>_raw``, ``<bucket>_minutes``, ``<bucket>_hours`` (InfluxDB 1.8's v2 API: ``<database>/<tier>``).
    ``single``: every tier is [sink] retention_policy (empty: the database's default) or bucket.
    """
    s, kind = cfg.sink, resolve_sink_kind(cfg.sink)
    if cfg.influx.layout is Layout.SINGLE:
        return {t: s.bucket if kind is SinkKind.INFLUX_V2 and s.bucket else s.retention_policy for t in TIERS}
    if s.retention_policy:
        raise ConfigError(f"[sink] retention_policy ({s.retention_policy!r}) is for [influx] layout = \"single\"; "
                          "the tiered layout writes to the retention policies raw, minutes and hours "
                          "(`wattledger influx setup` creates them): remove it or set layout = \"single\"")
    if kind is SinkKind.INFLUX_V2 and s.bucket:
        return {t: f"{s.bucket}_{t}" for t in TIERS}
    return {t: t for t in TIERS}


def tier_keep_days(cfg: Config) -> dict[str, float]:
    """How long each tier is kept in InfluxDB, days (0: forever); in the single layout, the tiers are one."""
    i = cfg.influx
    return {RAW: i.raw_days, MINUTES: i.minutes_days, HOURS: i.hours_days}


def configured_idle_w(cfg: Config, component: str, device: str) -> float | None:
    """``[attribution] idle_power_w`` for one pool: "component:device" first, then "component"; None if unset."""
    table = cfg.attribution.idle_power_w
    return table.get(f"{component}:{device}", table.get(component))


def editable_file(path: Path | None) -> Path | None:
    """The config file a user could add a key to, for ``load(path)``: None when there is none
    (no ``--config`` and no /etc/wattledger/config.toml, or ``--config /dev/null`` as the quickstart runs)."""
    used = config_path(path)
    return used if used is not None and used.is_file() else None


def how_to_set(section: str, key: str, value: str, config_file: Path | None) -> str:
    """How to give ``[section] key = value`` (``value`` as TOML) to a command run the way this one was.

    In the config file when one is in use; else by its environment twin, or, for a key that has none
    (a table), in a file passed with --config.
    """
    setting = f"[{section}] {key} = {value}"
    if config_file is not None:
        return f"set {setting} in {config_file}"
    if isinstance(parser_of(section, key), WattsTable):
        return f"put {setting} in a TOML file and pass it with --config FILE (no config file is in use)"
    return f"set {ENV_PREFIX}{section.upper()}_{key.upper()}={value.strip(chr(34))} (no config file is in use)"
