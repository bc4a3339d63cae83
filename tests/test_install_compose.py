"""deploy/compose.yaml (InfluxDB 2 + Grafana) is consistent with the files it references.

No container runtime runs in the tests, so this checks what can drift without
one: every host path the stack mounts exists in the checkout, Grafana's
dashboard provider looks where the dashboards are mounted, the datasource
file's ${VARIABLES} are all given to Grafana, the datasource is the one the
dashboards expect, the DBRP init script maps the bucket the datasource
queries, images are pinned, and .env's example sets every required variable.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from wattledger.grafana import dashboards as dash

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path, for bind mounts of files in the checkout."""
    out: dict[str, Path] = {}
    for spec in service.get("volumes", []):
        host, container = spec.split(":")[:2]
        if host.startswith((".", "/")):
            out[container] = (DEPLOY / host).resolve()
    return out


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


def test_services_and_pinned_images(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"influxdb", "grafana"}
    for name, svc in compose["services"].items():
        image = svc["image"]
        assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", image), f"{name}: image {image} is not pinned to a version"
    assert compose["services"]["influxdb"]["image"].startswith("influxdb:2.")


def test_every_mounted_path_exists(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for container, host in mounts(svc).items():
            assert host.exists(), f"{name}: {host} (mounted at {container}) does not exist"


def test_grafana_provisioning_matches_the_mounts(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    m = mounts(grafana)
    providers = load(m["/etc/grafana/provisioning/dashboards"] / "wattledger.yaml")["providers"]
    (provider,) = providers
    dash_dir = m[provider["options"]["path"]]
    assert sorted(p.name for p in dash_dir.glob("*.json")), f"no dashboards in {dash_dir}"

    datasources_file = m["/etc/grafana/provisioning/datasources"] / "wattledger.yaml"
    (ds,) = load(datasources_file)["datasources"]
    assert (ds["name"], ds["uid"]) == (dash.DATASOURCE_NAME, dash.DATASOURCE_UID)
    # Every ${VAR} in the datasource (outside comments) is set in Grafana's environment.
    text = "\n".join(line.split("#", 1)[0] for line in datasources_file.read_text().splitlines())
    used = set(re.findall(r"\$\{(\w+)\}", text))
    env = grafana["environment"]
    assert used and used <= set(env), f"not given to Grafana: {used - set(env)}"
    assert env["WATTLEDGER_INFLUX_URL"] == "http://influxdb:8086"
    # The database the dashboards query is the bucket the init script maps.
    influx_env = compose["services"]["influxdb"]["environment"]
    assert env["WATTLEDGER_INFLUX_DATABASE"] == influx_env["DOCKER_INFLUXDB_INIT_BUCKET"]


def test_dbrp_init_script(compose: dict[str, Any]) -> None:
    init_dir = mounts(compose["services"]["influxdb"])["/docker-entrypoint-initdb.d"]
    (script,) = init_dir.glob("*.sh")
    assert script.stat().st_mode & 0o111, "init script not executable"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "influx v1 dbrp create" in text and "--default" in text
    assert '--db "${DOCKER_INFLUXDB_INIT_BUCKET}"' in text


def test_env_example_sets_every_required_variable() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    example = DEPLOY / "compose.env.example"
    defined = {line.split("=", 1)[0] for line in example.read_text().splitlines() if re.match(r"^\w+=", line)}
    assert required and required <= defined, f"missing in compose.env.example: {required - defined}"
    optional = set(re.findall(r"\$\{(\w+):-", COMPOSE.read_text()))
    assert optional <= defined
