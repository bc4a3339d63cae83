"""``wattledger influx setup``: make an InfluxDB ready for a fleet's agents (docs/fleet.md).

``plan`` says what the config wants (pure); ``v1`` applies it through
InfluxQL (InfluxDB 1.x, Enterprise), ``v2`` through the 2.x HTTP API
(buckets, DBRP mappings). ``setup`` picks the API from the sink's kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from wattledger.agent.provision.plan import Change, wanted
from wattledger.agent.provision.v1 import SetupError, V1Setup
from wattledger.config import Config, SinkKind, resolve_sink_kind

__all__ = ["Change", "SetupError", "setup"]


def setup(cfg: Config, grants: Sequence[tuple[str, str]] = (),
          on_change: Callable[[Change], None] | None = None) -> list[Change]:
    """Create or fix what ``cfg`` needs on its InfluxDB; the changes made (empty: nothing to change), each
    also given to ``on_change`` as it is made."""
    kind = resolve_sink_kind(cfg.sink)
    s = cfg.sink
    if not s.url:
        raise SetupError("influx setup needs the InfluxDB URL: --influx-url or [sink] url")
    want = wanted(cfg)
    if kind is SinkKind.INFLUX_V2 and s.bucket:
        if grants:
            raise SetupError("--grant is for the 1.x API; on InfluxDB 2.x make tokens with `influx auth create`")
        from wattledger.agent.provision.v2 import V2Setup

        v2 = V2Setup(s.url, org=s.org, token=s.token, timeout_s=s.timeout_s, on_change=on_change)
        try:
            return v2.apply(want)
        finally:
            v2.close()
    user, password = s.username, s.password
    if not user and s.token and ":" in s.token:  # 1.8's v2-style "user:password" token
        user, password = s.token.split(":", 1)
    v1 = V1Setup(s.url, want.database, username=user, password=password, timeout_s=s.timeout_s,
                 on_change=on_change)
    try:
        return v1.apply(want, list(grants))
    finally:
        v1.close()
