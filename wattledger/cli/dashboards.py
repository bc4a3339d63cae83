"""`wattledger dashboards export|push`: the Grafana dashboards out of the package (parsing and presenting only).

``export`` writes the JSON files that ``dashboards/`` at the repo root holds
(for Grafana's file provisioning); ``push`` uploads them through Grafana's
HTTP API. The work is in ``wattledger/grafana/``: ``dashboards.py`` builds
them, ``defaults.py`` takes the variables' defaults from a config,
``export.py`` writes the files, ``push.py`` talks to Grafana.

Both take ``--config``: the variables' defaults (PUE, grid zone, the fallback
intensity) then come from that config, as ``wattledger report`` uses them.
Without it the output is the repository's ``dashboards/`` exactly.
"""

from __future__ import annotations

from pathlib import Path

import click

from wattledger import config as config_mod
from wattledger.carbon import UnknownZone
from wattledger.config import ConfigError
from wattledger.grafana.dashboards import Dashboard, all_dashboards
from wattledger.grafana.defaults import defaults_from_config
from wattledger.grafana import prometheus
from wattledger.grafana.export import export
from wattledger.grafana.push import DEFAULT_FOLDER, PushError, push_to


def _dashboards(config_path: Path | None, with_prometheus: bool = False) -> dict[str, Dashboard]:
    """The InfluxDB dashboards, and with ``with_prometheus`` the Prometheus ones (under prometheus/)."""
    try:
        defaults = defaults_from_config(config_mod.load(config_path)) if config_path is not None else None
    except (ConfigError, UnknownZone) as e:
        raise click.UsageError(str(e)) from None
    boards = all_dashboards(defaults) if defaults else all_dashboards()
    if with_prometheus:
        boards.update(prometheus.all_dashboards(defaults) if defaults else prometheus.all_dashboards())
    return boards


_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Take the PUE, zone and fallback intensity defaults, and the projects shared by several users "
         "([jobs] shared_projects), from this TOML config [default: the built-in ones, as in the "
         "repository's dashboards/].",
)


@click.group("dashboards")
def dashboards() -> None:
    """Grafana dashboards: export the JSON files or push them to a Grafana."""


@dashboards.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_config_option
def export_cmd(directory: Path, config_path: Path | None) -> None:
    """Write the dashboards as JSON files into DIRECTORY (for file provisioning).

    The InfluxDB dashboards go in DIRECTORY, the Prometheus versions of the
    Overview and Job dashboards in DIRECTORY/prometheus/.
    """
    for path in export(directory, _dashboards(config_path, with_prometheus=True)):
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
@click.option("--prometheus", "with_prometheus", is_flag=True,
              help="Also push the Prometheus versions of the Overview and Job dashboards.")
@_config_option
def push_cmd(url: str, token: str | None, folder: str, timeout_s: float, with_prometheus: bool,
             config_path: Path | None) -> None:
    """Create or update the dashboards in a Grafana through its HTTP API."""
    boards = _dashboards(config_path, with_prometheus)
    try:
        results = push_to(url, token, folder or None, timeout_s, boards)
    except PushError as e:
        raise click.ClickException(str(e)) from None
    for r in results:
        click.echo(f"{r.uid}\tversion {r.version}\t{r.title}\t{r.url}")
