"""Sinks: where points go besides the local ledger.

``make_sink`` turns the ``[sink]`` config section (file, ``WATTLEDGER_SINK_*``
env vars, or the CLI's ``--influx-*`` options) into a sink; ``check_connection``
is what ``doctor`` reports. A sink makes one attempt per ``write`` and
classifies the answer (``base.Outcome``); ``agent.delivery`` owns retries.

Which sink:

- ``kind = "influx_v1"``: ``/write?db=&rp=`` on InfluxDB 1.x (needs ``database``).
- ``kind = "influx_v2"``: ``/api/v2/write`` on 2.x, 3.x, 1.8+ (needs ``bucket``, or
  ``database`` [+ ``retention_policy``] for 1.8, whose token is ``username:password``).
- ``kind = "stdout"``: line protocol on standard output.
- ``kind = "none"`` (default) with a ``url``: the kind follows from the other
  keys (``database`` → v1, ``bucket``/``token`` → v2), so ``--influx-url`` plus
  ``--influx-database`` or ``--influx-bucket/--influx-org/--influx-token`` suffice.
  The rule is ``config.resolve_sink_kind`` (``resolve_kind`` here is the same function).

Where each point goes in InfluxDB is the ``Routing`` (routing.py): with the
fleet's tiered layout, each tier to its retention policy (v1) or bucket (v2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wattledger.config import ConfigError, SinkKind, SinkSection, check_section
from wattledger.config import resolve_sink_kind as resolve_kind
from wattledger.agent.sinks.base import Outcome, Sink, WriteResult, classify, parse_retry_after
from wattledger.agent.sinks.influx_v1 import InfluxV1Sink
from wattledger.agent.sinks.routing import Routing
from wattledger.agent.sinks.stdout import StdoutSink
from wattledger.model.readings import ProbeResult, SourceState

if TYPE_CHECKING:
    from wattledger.agent.sinks.influx_v2 import InfluxV2Sink


def __getattr__(name: str) -> Any:
    # influxdb-client is ~25 MB of RSS: loaded only when the v2 sink is really used.
    if name == "InfluxV2Sink":
        from wattledger.agent.sinks.influx_v2 import InfluxV2Sink

        return InfluxV2Sink
    raise AttributeError(name)

__all__ = [
    "InfluxV1Sink", "InfluxV2Sink", "Outcome", "Routing", "Sink", "StdoutSink", "WriteResult",
    "check_connection", "classify", "make_sink", "parse_retry_after", "resolve_kind",
]


def make_sink(cfg: SinkSection, routing: Routing | None = None) -> Sink | None:
    """The configured sink, or None when only the local ledger is wanted. Raises ConfigError.

    ``routing``: where each tier goes (``routing.routing(config)``: [influx] layout); None: everything to
    [sink] retention_policy or bucket, as a single-layout database.
    """
    kind = resolve_kind(cfg)
    if kind is SinkKind.NONE:
        return None
    if kind is SinkKind.STDOUT:
        return StdoutSink()
    if not cfg.url:
        raise ConfigError(f"[sink] kind = '{kind}' needs a url (--influx-url or WATTLEDGER_SINK_URL)")
    check_section(cfg)  # timeout_s, batch_points...: the config's own rules, for a section built in code too
    if kind is SinkKind.INFLUX_V1:
        if not cfg.database:
            raise ConfigError("[sink] kind = 'influx_v1' needs a database (--influx-database or [sink] database)")
        return InfluxV1Sink(
            cfg.url, cfg.database, retention_policy=cfg.retention_policy, username=cfg.username,
            password=cfg.password, timeout_s=cfg.timeout_s, gzip=cfg.gzip, routing=routing,
        )
    if kind is SinkKind.INFLUX_V2:
        bucket, token = cfg.bucket, cfg.token
        if not bucket and cfg.database:  # InfluxDB 1.8+ compatibility API
            bucket = f"{cfg.database}/{cfg.retention_policy}" if cfg.retention_policy else cfg.database
        if not token and cfg.username:
            token = f"{cfg.username}:{cfg.password}"
        if not bucket:
            raise ConfigError(
                "[sink] kind = 'influx_v2' needs a bucket (--influx-bucket or [sink] bucket; "
                "on InfluxDB 1.8 a database works too)"
            )
        from wattledger.agent.sinks.influx_v2 import InfluxV2Sink

        if routing is not None and not cfg.bucket:  # 1.8: each tier's retention policy as "database/rp"
            routing = Routing({t: f"{cfg.database}/{rp}" if rp else cfg.database for t, rp in routing.targets.items()},
                              routing.keep_days)
        return InfluxV2Sink(cfg.url, bucket=bucket, org=cfg.org, token=token, timeout_s=cfg.timeout_s, gzip=cfg.gzip,
                            routing=routing)
    raise ConfigError(f"[sink] kind {cfg.kind!r} is not known")  # config.validate stops this earlier


def check_connection(cfg: SinkSection, routing: Routing | None = None) -> ProbeResult:
    """For ``doctor``: is the sink reachable, are the credentials good, does the database/bucket exist
    (with ``routing``: every tier's retention policy or bucket)?"""
    try:
        sink = make_sink(cfg, routing)
    except (ConfigError, ValueError) as e:
        return ProbeResult("sink", SourceState.ERROR, str(e), "fix the [sink] section or the --influx-* options")
    if sink is None:
        return ProbeResult(
            "sink", SourceState.MISSING, "no sink configured: points stay in the local ledger only",
            "to stream to InfluxDB give --influx-url with --influx-database (1.x) or "
            "--influx-bucket/--influx-org/--influx-token (2.x/3.x), or set [sink] in the config file",
        )
    try:
        return sink.probe()
    finally:
        sink.close()
