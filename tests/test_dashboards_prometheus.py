"""The Prometheus versions of the Overview and Job dashboards: the files match the generator, every
variable is defined, and every query is PromQL that a real Prometheus accepts.

What their numbers are (against the ledger and the report) is in tests/test_prometheus_e2e.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.prometheus_server import PrometheusServer
from wattledger.grafana import dashboards as dash
from wattledger.grafana import prometheus as prom

REPO = Path(__file__).resolve().parent.parent
BUILTINS = {"__range", "__range_s", "__rate_interval", "__interval"}
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def targets(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in dash.panels(d) for t in p.get("targets", [])]


def test_exported_files_are_what_the_generator_makes() -> None:
    for name, board in prom.all_dashboards().items():
        assert (REPO / "dashboards" / name).read_text(encoding="utf-8") == dash.render(board), (
            f"dashboards/{name} is stale: run `wattledger dashboards export dashboards`")


@pytest.mark.parametrize("name", list(prom.BUILDERS))
def test_every_panel_reads_the_prometheus_datasource_variable(name: str) -> None:
    d = prom.all_dashboards()[name]
    ds = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert len(ds) == 1 and ds[0]["query"] == "prometheus"
    for p in dash.panels(d):
        assert p["datasource"] == prom.DS, p["title"]
    for t in targets(d):
        assert t["datasource"] == prom.DS and t["expr"]
    defined = {v["name"] for v in d["templating"]["list"]}
    texts = [t["expr"] for t in targets(d)] + [v["definition"] for v in d["templating"]["list"] if v["type"] == "query"]
    for text in texts:
        for m in _VARIABLE.finditer(text):
            var = m.group(1) or m.group(2)
            assert var in defined or var in BUILTINS, f"{name}: ${var} is not defined in {text!r}"
    assert d["uid"] != dash.all_dashboards()[name.replace("prometheus/", "").replace("-prom", "")]["uid"]


def test_co2e_is_energy_times_pue_times_intensity_per_step() -> None:
    q = prom.co2e_g(prom.JOB_E, prom.JOB)
    assert "wattledger_pue_ratio" in q and "wattledger_grid_intensity_grams_per_kwh" in q
    assert "[$__range:$energy_step]" in q and q.endswith("/ 3600000")
    assert "increase(" not in q  # the step's energy is the counter's difference: no extrapolation


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), "127.0.0.1:9")  # nothing to scrape
    server.start()
    yield server
    server.stop()


def substitute(expr: str) -> str:
    for var, value in {"$__range_s": "3600", "$__range": "1h", "$__rate_interval": "1m", "$energy_step": "1m",
                       "$job": "slurm-1", "$user": ".*", "$host": ".*"}.items():
        expr = expr.replace(var, value)
    return expr


@pytest.mark.prometheus
@pytest.mark.parametrize("name", list(prom.BUILDERS))
def test_every_query_is_promql_prometheus_accepts(prometheus: PrometheusServer, name: str) -> None:
    d = prom.all_dashboards()[name]
    exprs = [t["expr"] for t in targets(d)]
    exprs += [re.sub(r"^label_values\((.*?)(?:, \w+)?\)$", r"\1", v["definition"])
              for v in d["templating"]["list"] if v["type"] == "query"]
    for expr in exprs:
        prometheus.query(substitute(expr), time.time())  # raises on a parse or evaluation error


def test_the_provisioned_datasource_is_the_one_the_dashboards_preselect() -> None:
    import yaml

    ds = yaml.safe_load((REPO / "dashboards/provisioning/datasources/wattledger-prometheus.yaml").read_text())
    (source,) = ds["datasources"]
    assert (source["uid"], source["type"]) == (prom.DATASOURCE_UID, "prometheus")
    assert prom.datasource_variable()["current"]["value"] == source["uid"]
