"""Upload the dashboards to a Grafana through its HTTP API (grafana-client).

``push`` finds or creates the folder by title, then saves each dashboard with
``overwrite`` so a second push updates it in place (same uid). ``push_to``
connects first and turns the client's failures into ``PushError``, whose
message says what to do. The token is sent as ``Authorization: Bearer`` and
never printed or logged. grafana-client is imported only when a push is made:
the other commands (the agent above all) need not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wattledger.grafana.dashboards import Dashboard, all_dashboards
from wattledger.util.redact import redact_text, redact_url

if TYPE_CHECKING:
    from grafana_client import GrafanaApi

DEFAULT_FOLDER = "wattledger"
_HINTS = {
    401: "the token is missing, wrong or expired: create a service-account token",
    403: "the token may not write there: give its service account the Editor role on the folder",
}


class PushError(RuntimeError):
    """A push failed; the message says why and what to do (and never holds the token)."""


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


def push_to(url: str, token: str | None, folder: str | None, timeout_s: float,
            dashboards: dict[str, Dashboard] | None = None) -> list[Pushed]:
    """``push`` to the Grafana at ``url`` (token, or user:password in the URL); raises PushError."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = GrafanaApi.from_url(url, credential=token or None, timeout=timeout_s)
    try:
        return push(api, folder, dashboards)
    except GrafanaClientError as e:
        status = getattr(e, "status_code", None)
        hint = _HINTS.get(status or 0, "see Grafana's answer above")
        raise PushError(f"Grafana at {redact_url(url)} refused the push (HTTP {status}: "
                        f"{redact_text(str(e.message))}); {hint}") from None
    except GrafanaException as e:
        raise PushError(f"Grafana at {redact_url(url)} failed: {redact_text(str(e))}") from None
    except OSError as e:  # connection refused, DNS, timeouts (niquests errors derive from OSError)
        raise PushError(f"cannot reach Grafana at {redact_url(url)}: {redact_text(str(e))}; check --url") from None
