"""Write the dashboards as JSON files (what ``dashboards/`` at the repo root holds, for file provisioning)."""

from __future__ import annotations

from pathlib import Path

from wattledger.grafana.dashboards import Dashboard, all_dashboards, render


def export(directory: Path, dashboards: dict[str, Dashboard] | None = None) -> list[Path]:
    """Write every dashboard as DIR/<name>.json (the exact text of ``render``)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in (dashboards if dashboards is not None else all_dashboards()).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)  # prometheus/ holds the Prometheus versions
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written
