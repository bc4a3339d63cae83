"""A real Prometheus (Debian's package) on loopback, scraping the agent, for integration tests.

FIELD-NOTES, "Prometheus": a temporary config and TSDB directory, the web
listener on a free loopback port, stopped by its PID. Queries go through its
HTTP API (``/api/v1/query``, ``/api/v1/query_range``).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.daemon import LoopbackDaemon, free_port

CONFIG = """
global:
  scrape_interval: {interval}
  scrape_timeout: {timeout}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: wattledger
    honor_labels: true   # the agent's own "job" label (the wattledger job) wins over the scrape job's name
    static_configs:
      - targets: ["{target}"]
"""


class PrometheusServer(LoopbackDaemon):
    stop_grace_s = 30.0

    def __init__(self, root: Path, target: str, scrape_interval: str = "1s", scrape_timeout: str = "900ms") -> None:
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "prometheus.yml"
        self.config.write_text(CONFIG.format(interval=scrape_interval, timeout=scrape_timeout, target=target))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        self.launch("prometheus", [f"--config.file={self.config}", f"--storage.tsdb.path={self.root / 'data'}",
                                   f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                    self.root / "prometheus.log", self.url + "/-/ready", 200, timeout_s, poll_s=0.2)

    def api(self, path: str, **params: str) -> Any:
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(self.url + path, data=data, timeout=30) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at_s: float) -> list[dict[str, Any]]:
        """An instant query at ``at_s`` (Unix seconds): [{"metric": {...}, "value": [t, "v"]}]."""
        return list(self.api("/api/v1/query", query=expr, time=f"{at_s:.3f}")["result"])

    def samples(self, selector: str, at_s: float, window_s: float) -> list[dict[str, Any]]:
        """Raw samples of a range selector: [{"metric": {...}, "values": [[t, "v"], ...]}]."""
        return self.query(f"{selector}[{int(window_s * 1000)}ms]", at_s)
