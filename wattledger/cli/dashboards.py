"""`wattledger dashboards export|push`: the Grafana dashboards out of the package.

``export`` writes the JSON files that ``dashboards/`` at the repo root holds
(for Grafana's file provisioning). ``push`` uploads them through Grafana's HTTP
API with grafana-client: it finds or creates the folder by title, then saves
each dashboard with ``overwrite`` so a second push updates in place (same uid).
The token is sent as ``Authorization: Bearer`` and never printed or logged.

Both take ``--config``: the variables' defaults (PUE, grid zone, the fallback
intensity) then come from that config, as ``wattledger report`` uses them.
Without it the output is the repository's ``dashboards/`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
if TYPE_CHECKING:
    from grafana_client import GrafanaApi

from wattledger import config as config_mod
from wattledger.carbon import UnknownZone, fallback_intensity
from wattledger.config import Config, ConfigError
from wattledger.grafana.dashboards import Dashboard, Defaults, all_dashboards, render

DEFAULT_FOLDER = "wattledger"


def defaults_from_config(cfg: Config) -> Defaults:
    """PUE, zone and fallback intensity as the report would use them."""
    zone = cfg.carbon.zone.upper()
    try:
        fallback = fallback_intensity(cfg.carbon, zone).g_per_kwh
    except UnknownZone as e:
        raise click.UsageError(str(e)) from None
    return Defaults(pue=cfg.pue.value, zone=zone, fallback_g_per_kwh=fallback)


def _dashboards(config_path: Path | None) -> dict[str, Dashboard]:
    if config_path is None:
        return all_dashboards()
    try:
        cfg = config_mod.load(config_path)  # validates
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    return all_dashboards(defaults_from_config(cfg))


_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Take the PUE, zone and fallback intensity defaults from this TOML config "
         "[default: the built-in ones, as in the repository's dashboards/].",
)


def export(directory: Path, dashboards: dict[str, Dashboard] | None = None) -> list[Path]:
    """Write every dashboard as DIR/<name>.json (the exact text of ``render``)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in (dashboards if dashboards is not None else all_dashboards()).items():
        path = directory / name
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written


@dataclass(frozen=True)
class Pushed:
    uid: str
    title: str
    url: str
    version: int | None


def find_or_create_folder(api: GrafanaApi, title: str) -> str:
    """The uid of the folder with this title, created when there is none."""
    for folder in api.folder.get_all_folders() or []:
        if folder.get("title") == title:
            return str(folder["uid"])
    created = api.folder.create_folder(title)
    return str(created["uid"])


def push(api: GrafanaApi, folder: str | None, dashboards: dict[str, Dashboard] | None = None) -> list[Pushed]:
    """Create or update every dashboard (by uid) in the folder; the General folder when None."""
    folder_uid = find_or_create_folder(api, folder) if folder else None
    results = []
    for dashboard in (dashboards if dashboards is not None else all_dashboards()).values():
        payload: dict[str, Any] = {
            "dashboard": {**dashboard, "id": None},  # id is per-instance; the uid identifies it
            "overwrite": True,
            "message": "wattledger dashboards push",
        }
        if folder_uid is not None:
            payload["folderUid"] = folder_uid
        answer = api.dashboard.update_dashboard(payload)
        results.append(Pushed(str(answer.get("uid", dashboard["uid"])), dashboard["title"],
                              str(answer.get("url", "")), answer.get("version")))
    return results


@click.group("dashboards")
def dashboards() -> None:
    """Grafana dashboards: export the JSON files or push them to a Grafana."""


@dashboards.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_config_option
def export_cmd(directory: Path, config_path: Path | None) -> None:
    """Write the dashboards as JSON files into DIRECTORY (for file provisioning)."""
    for path in export(directory, _dashboards(config_path)):
        click.echo(str(path))


@dashboards.command("push")
@click.option("--url", envvar="WATTLEDGER_GRAFANA_URL", required=True,
              help="Grafana base URL, e.g. http://localhost:3000 [env WATTLEDGER_GRAFANA_URL]")
@click.option("--token", envvar="WATTLEDGER_GRAFANA_TOKEN", default=None,
              help="Service-account token (Editor on the folder) [env WATTLEDGER_GRAFANA_TOKEN]; "
                   "or put user:password in the URL")
@click.option("--folder", envvar="WATTLEDGER_GRAFANA_FOLDER", default=DEFAULT_FOLDER, show_default=True,
              help="Folder title, created when missing; empty for General [env WATTLEDGER_GRAFANA_FOLDER]")
@click.option("--timeout-s", type=float, default=10.0, show_default=True, help="HTTP timeout per request")
@_config_option
def push_cmd(url: str, token: str | None, folder: str, timeout_s: float, config_path: Path | None) -> None:
    """Create or update the dashboards in a Grafana through its HTTP API."""
    boards = _dashboards(config_path)
    # Imported here: the other commands (the agent above all) need not load the Grafana client.
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = GrafanaApi.from_url(url, credential=token or None, timeout=timeout_s)
    try:
        results = push(api, folder or None, boards)
    except GrafanaClientError as e:
        status = getattr(e, "status_code", None)
        hint = {
            401: "the token is missing, wrong or expired: create a service-account token",
            403: "the token may not write there: give its service account the Editor role on the folder",
        }.get(status or 0, "see Grafana's answer above")
        raise click.ClickException(f"Grafana at {url} refused the push (HTTP {status}: {e.message}); {hint}") from None
    except GrafanaException as e:
        raise click.ClickException(f"Grafana at {url} failed: {e}") from None
    except OSError as e:  # connection refused, DNS, timeouts (niquests errors derive from OSError)
        raise click.ClickException(f"cannot reach Grafana at {url}: {e}; check --url") from None
    for r in results:
        click.echo(f"{r.uid}\tversion {r.version}\t{r.title}\t{r.url}")
