"""``wattledger run`` records as report cells. Pure.

A record (store/runs.py) holds one run's energy per component, its start and
end, its user, tag, project, phase, host and the source of each component's
figure. ``run_cells`` spreads each component's energy over the UTC hours the
run spanned, in proportion to the time it spent in each (a run is charged
the intensity and PUE of its hours, as ledger energy is), and marks the
cells ``record="run"`` so the report can say where they came from.

Records whose figures came from the service's ledger (``figures_from`` is
not ``run``) are already in that ledger: they are skipped. So is a run
cell for a (job, user, hour) for which the source itself has energy: when
the service measured the same job, its ledger is the one truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wattledger.model.units import HOUR_NS
from wattledger.report.model import EnergyCell
from wattledger.util.timeutil import hour_floor

RUN = "run"


def _hours(start_ns: int, end_ns: int) -> list[tuple[int, float]]:
    """(hour bucket, fraction of the run in it) for [start, end]; a zero-length run is all in its hour."""
    if end_ns <= start_ns:
        return [(hour_floor(end_ns), 1.0)]
    out = []
    bucket = hour_floor(start_ns)
    while bucket < end_ns:
        overlap = min(end_ns, bucket + HOUR_NS) - max(start_ns, bucket)
        out.append((bucket, overlap / (end_ns - start_ns)))
        bucket += HOUR_NS
    return out


def _wanted(record: Mapping[str, Any], equal: Mapping[str, str], since_ns: int, until_ns: int) -> bool:
    if record.get("figures_from", RUN) != RUN or not record.get("energy_by_component_j"):
        return False
    end = int(record.get("end_ns") or 0)
    if not since_ns <= end < until_ns:
        return False
    tags = {"job": record.get("job"), "user": record.get("user"), "project": record.get("project") or "",
            "host": (record.get("machine") or {}).get("host") or ""}
    return all(tags.get(k, "") == v for k, v in equal.items())


def run_cells(records: Iterable[Mapping[str, Any]], since_ns: int, until_ns: int,
              equal: Mapping[str, str] | None = None) -> list[EnergyCell]:
    """The cells of the records that ended in [since, until) and carry the ``equal`` tags."""
    cells: list[EnergyCell] = []
    for r in records:
        if not _wanted(r, equal or {}, since_ns, until_ns):
            continue
        host = (r.get("machine") or {}).get("host") or ""
        sources = r.get("source_by_component") or {}
        for bucket, fraction in _hours(int(r.get("start_ns") or 0), int(r["end_ns"])):
            for component, energy_j in r["energy_by_component_j"].items():
                cells.append(EnergyCell(bucket, str(r["job"]), str(r.get("user") or ""), str(r.get("project") or ""),
                                        str(r.get("phase") or ""), host, str(sources.get(component, "")),
                                        float(energy_j) * fraction, component, record=RUN))
    return cells


def not_in(cells: Sequence[EnergyCell], measured: Sequence[EnergyCell],
           hours: set[tuple[str, str, int]] | None = None) -> list[EnergyCell]:
    """Run cells for a (job, user, hour) the source has no energy for (its own figures win).

    ``hours``: the (job, user, hour) the source has energy for, when its cells are not one per hour
    (the ledger's long reads); None: the ``measured`` cells' own hours.
    """
    have = hours if hours is not None else {(c.job, c.user, c.bucket_ns) for c in measured}
    return [c for c in cells if (c.job, c.user, c.bucket_ns) not in have]
