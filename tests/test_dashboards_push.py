"""`wattledger dashboards push` against a loopback fake of Grafana's HTTP API (tests/fake_grafana.py)."""

from __future__ import annotations

from pathlib import Path
from click.testing import CliRunner

from tests.fake_grafana import FakeGrafanaAPI
from wattledger.grafana import dashboards as dash
from wattledger.cli.main import main

TOKEN = "glsa_test_0123456789abcdef"


def push(api: FakeGrafanaAPI, *args: str, token: str = TOKEN) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["dashboards", "push", "--url", api.url, "--token", token, *args])
    return result.exit_code, result.output


def test_first_push_creates_the_folder_and_every_dashboard() -> None:
    with FakeGrafanaAPI(TOKEN) as api:
        code, out = push(api)
    assert code == 0, out
    calls = [(r.method, r.path.split("?")[0]) for r in api.requests]
    assert calls == [("GET", "/api/folders"), ("POST", "/api/folders")] + [("POST", "/api/dashboards/db")] * 5
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in api.requests)
    assert api.requests[1].body == {"title": "wattledger"}
    folder_uid = api.folders[0]["uid"]
    expected = dash.all_dashboards()
    sent = [r.body for r in api.requests[2:]]
    for body, board in zip(sent, expected.values()):
        assert body["overwrite"] is True
        assert body["folderUid"] == folder_uid
        assert body["dashboard"] == {**board, "id": None}
    assert TOKEN not in out
    for board in expected.values():
        assert f"{board['uid']}\tversion 1\t{board['title']}" in out


def test_second_push_finds_the_folder_and_updates_in_place() -> None:
    with FakeGrafanaAPI(TOKEN, folders=[{"id": 7, "uid": "abc", "title": "wattledger"}]) as api:
        assert push(api)[0] == 0
        code, out = push(api)
    assert code == 0, out
    assert [r.path for r in api.requests].count("/api/folders") == 2  # two lookups, no creation
    assert not any(r.method == "POST" and r.path == "/api/folders" for r in api.requests)
    assert {uid: d["version"] for uid, d in api.dashboards.items()} == {
        b["uid"]: 2 for b in dash.all_dashboards().values()}
    assert all(d["folderUid"] == "abc" for d in api.dashboards.values())


def test_empty_folder_means_general() -> None:
    with FakeGrafanaAPI(TOKEN) as api:
        code, out = push(api, "--folder", "")
    assert code == 0, out
    assert {r.path for r in api.requests} == {"/api/dashboards/db"}
    assert all("folderUid" not in r.body for r in api.requests)


def test_a_wrong_token_is_a_clear_error_without_the_token() -> None:
    with FakeGrafanaAPI(TOKEN) as api:
        code, out = push(api, token="glsa_wrong_secret")
    assert code == 1
    assert "HTTP 401" in out and "service-account token" in out
    assert "glsa_wrong_secret" not in out
    assert api.dashboards == {}


def test_no_permission_says_which_role() -> None:
    with FakeGrafanaAPI(TOKEN, fail_dashboard_status=403) as api:
        code, out = push(api)
    assert code == 1
    assert "HTTP 403" in out and "Editor" in out


def test_url_and_token_from_the_environment() -> None:
    with FakeGrafanaAPI(TOKEN) as api:
        result = CliRunner().invoke(main, ["dashboards", "push"],
                                    env={"WATTLEDGER_GRAFANA_URL": api.url, "WATTLEDGER_GRAFANA_TOKEN": TOKEN,
                                         "WATTLEDGER_GRAFANA_FOLDER": "energy"})
    assert result.exit_code == 0, result.output
    assert api.folders[0]["title"] == "energy"
    assert len(api.dashboards) == 5


def test_push_takes_defaults_from_a_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[pue]\nvalue = 1.1\n")
    with FakeGrafanaAPI(TOKEN) as api:
        code, out = push(api, "--config", str(cfg))
    assert code == 0, out
    job = api.dashboards["wattledger-job"]["dashboard"]
    assert {v["name"]: v for v in job["templating"]["list"]}["pue"]["current"]["value"] == "1.1"
