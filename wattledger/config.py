"""Validated TOML configuration with defaults. Unknown keys are errors that name the key.

Precedence (lowest to highest): built-in defaults, the config file
(``/etc/wattledger/config.toml`` when it exists, or ``--config``), then
``WATTLEDGER_<SECTION>_<KEY>`` environment variables (e.g.
``WATTLEDGER_AGENT_INTERVAL_S=5``, ``WATTLEDGER_SINK_TOKEN=...``), then
command-line options. ``deploy/config.example.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from wattledger.model.jobs import DEFAULT_TAG_VARS, MAX_TAG_CHARS

DEFAULT_CONFIG_PATH = Path("/etc/wattledger/config.toml")
ENV_PREFIX = "WATTLEDGER_"


class ConfigError(ValueError):
    """A config problem, phrased for the admin who has to fix it."""


@dataclass
class AgentSection:
    interval_s: float = 5.0
    state_dir: str = "/var/lib/wattledger"
    host: str = ""  # empty: the machine's hostname
    sysfs_root: str = "/sys"
    procfs_root: str = "/proc"
    cgroup_root: str = "/sys/fs/cgroup"
    # "auto": use the model estimate only when no RAPL counter can be read.
    estimate: str = "auto"  # auto | always | never
    gpus: str = "auto"  # auto | never


@dataclass
class JobsSection:
    tag_vars: list[str] = field(default_factory=lambda: list(DEFAULT_TAG_VARS))
    max_tag_chars: int = MAX_TAG_CHARS
    use_cgroups: bool = True


@dataclass
class AttributionSection:
    cpu_static_policy: str = "proportional"  # proportional | occupancy | idle
    dram_static_policy: str = "proportional"
    gpu_static_policy: str = "occupancy"
    # Idle power per pool, watts, keyed "component" or "component:device"
    # (e.g. {"cpu" = 20.0, "gpu:GPU-1234..." = 60.0}). Unset pools learn it.
    idle_power_w: dict[str, float] = field(default_factory=dict)
    learn_idle: bool = True
    idle_percentile: float = 5.0


@dataclass
class EstimateSection:
    # Cloud Carbon Footprint's coefficients (GCP average, per vCPU).
    cpu_idle_w_per_vcpu: float = 0.71
    cpu_max_w_per_vcpu: float = 4.26
    # Cloud Carbon Footprint's memory coefficient, watts per GiB of RAM.
    dram_w_per_gib: float = 0.392


@dataclass
class SinkSection:
    kind: str = "none"  # none | stdout | influx_v1 | influx_v2
    url: str = ""
    database: str = ""  # v1 API
    retention_policy: str = ""
    username: str = ""
    password: str = ""
    bucket: str = ""  # v2 API
    org: str = ""
    token: str = ""
    timeout_s: float = 10.0
    batch_points: int = 5000
    gzip: bool = True


@dataclass
class SpoolSection:
    max_rows: int = 2_000_000


@dataclass
class CarbonSection:
    zone: str = "WORLD"
    provider: str = "static"  # static | electricitymaps | watttime | ukci | csv
    g_per_kwh: float | None = None  # fixed override of the static table
    api_url: str = ""
    token: str = ""
    username: str = ""
    password: str = ""
    csv_path: str = ""
    sync_interval_s: float = 0.0  # 0: the agent does not sync carbon itself


@dataclass
class PueSection:
    value: float = 1.58  # Uptime Institute, 2020 industry average
    site: str = ""


@dataclass
class Config:
    agent: AgentSection = field(default_factory=AgentSection)
    jobs: JobsSection = field(default_factory=JobsSection)
    attribution: AttributionSection = field(default_factory=AttributionSection)
    estimate: EstimateSection = field(default_factory=EstimateSection)
    sink: SinkSection = field(default_factory=SinkSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    carbon: CarbonSection = field(default_factory=CarbonSection)
    pue: PueSection = field(default_factory=PueSection)

    @property
    def state_dir(self) -> Path:
        return Path(self.agent.state_dir)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
POLICIES = ("proportional", "occupancy", "idle")
SINK_KINDS = ("none", "stdout", "influx_v1", "influx_v2")


def _coerce(section: str, key: str, value: Any, default: Any, ftype: str) -> Any:
    where = f"[{section}] {key}"
    if "dict" in ftype:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table of numbers, got {value!r}")
        try:
            return {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must map names to numbers, got {value!r}") from None
    if "list" in ftype:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        return value
    if "bool" in ftype:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if "float" in ftype:
        if value is None or (isinstance(value, str) and value == "" and "None" in ftype):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if "int" in ftype:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _apply(cfg: Config, data: Mapping[str, Any], origin: str) -> None:
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section [{section}]; known: {', '.join(SECTIONS)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        target = getattr(cfg, section)
        known = {f.name: f for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"{origin}: unknown key '{key}' in [{section}]; known keys: {', '.join(known)}"
                )
            f = known[key]
            setattr(target, key, _coerce(section, key, value, f.default, str(f.type)))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
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


def validate(cfg: Config) -> None:
    a = cfg.attribution
    for name in ("cpu_static_policy", "dram_static_policy", "gpu_static_policy"):
        if getattr(a, name) not in POLICIES:
            raise ConfigError(f"[attribution] {name} must be one of {', '.join(POLICIES)}")
    if cfg.sink.kind not in SINK_KINDS:
        raise ConfigError(f"[sink] kind must be one of {', '.join(SINK_KINDS)}, got {cfg.sink.kind!r}")
    if cfg.agent.interval_s <= 0:
        raise ConfigError("[agent] interval_s must be > 0")
    if cfg.agent.estimate not in ("auto", "always", "never"):
        raise ConfigError("[agent] estimate must be auto, always or never")
    if cfg.agent.gpus not in ("auto", "never"):
        raise ConfigError("[agent] gpus must be auto or never")
    if cfg.pue.value < 1.0:
        raise ConfigError(f"[pue] value must be >= 1.0 (facility energy >= IT energy), got {cfg.pue.value}")
    if cfg.spool.max_rows < 1:
        raise ConfigError("[spool] max_rows must be >= 1")


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the file (explicit path must exist), then WATTLEDGER_<SECTION>_<KEY> env vars."""
    cfg = Config()
    environ = os.environ if environ is None else environ
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        _apply(cfg, data, str(path))
    env = _env_overrides(environ)
    if env:
        _apply(cfg, env, "environment")
    validate(cfg)
    return cfg
