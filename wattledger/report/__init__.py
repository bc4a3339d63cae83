"""The read side: energy, facility energy and CO2e per job / user / project / phase, and ``top``.

One job per module, imports pointing one way (model <- assemble <- sources;
model <- lifecycle <- render):

- ``model``: the pure core, ``build`` (hourly cells x PUE_b x CI_b, grouped),
  and its values: ``EnergyCell``, ``IntensitySeries``, ``Row``, ``Report``.
- ``assemble``: what both sources share (``Options``, cells, ``assemble``).
- ``ledger``: ``from_ledger``, the local SQLite ledger.
- ``influxql``: ``InfluxQL`` (a minimal client) and ``from_influx``.
- ``runs``: `wattledger run` records as cells (marked ``R``).
- ``jobview`` and ``jobtext``: one job's summary (``report --job``) and its text, CSV and JSON.
- ``lifecycle``: the life-cycle model CT + T + e*I of one project.
- ``render``: table, CSV and JSON; ``plot``: the PNG (matplotlib).
- ``top``: the live view of the newest tick.

The names below are the package's public face, for tests and scripts
(``from wattledger import report``). ``plot`` and ``render`` are imported from
their modules, whose names they share; ``lifecycle`` here is the function.
"""

from __future__ import annotations

from wattledger.report.assemble import Options
from wattledger.report.influxql import InfluxQL, from_influx, influx_measured_seconds
from wattledger.report.ledger import from_ledger, ledger_measured_seconds
from wattledger.report.lifecycle import Lifecycle, lifecycle
from wattledger.report.model import PoolBaseline, Report, ReportError, Row, build
from wattledger.report.render import format_csv, format_json, format_lifecycle, format_table

__all__ = [
    "InfluxQL", "Lifecycle", "Options", "PoolBaseline", "Report", "ReportError", "Row", "build", "format_csv",
    "format_json", "format_lifecycle", "format_table", "from_influx", "from_ledger", "influx_measured_seconds",
    "ledger_measured_seconds", "lifecycle",
]
