#!/usr/bin/env python3
"""Regenerate wattledger/data/embodied.json, the pinned embodied-carbon table, from boaviztapi's own Python API.

The agent never imports boaviztapi (it pulls in fastapi, pandas, scipy, numpy
and pydantic, hundreds of MB; the agent must stay under 80 MB RSS). Instead
this script asks boaviztapi, in a throwaway virtual environment, for every
figure the agent may need, and writes them with their provenance: the
boaviztapi version and the date at the top, and for each figure the endpoint
and the exact request body it answered. docs/embodied.md explains the choice.

    python3 -m venv /tmp/bzvenv && /tmp/bzvenv/bin/pip install boaviztapi==2.5.0 httpx
    /tmp/bzvenv/bin/python scripts/embodied_table.py            # writes wattledger/data/embodied.json
    /tmp/bzvenv/bin/python scripts/embodied_table.py --check    # exit 1 if the committed table differs

The API is called in-process through FastAPI's TestClient over
``boaviztapi.main.app`` (no server, no network), with ``criteria=gwp``: the
``impacts.gwp.embedded`` figure (value, min, max, in kgCO2e) is what the table
keeps. Boaviztapi rounds each figure by the width of its own range; the table
keeps the figures as the API returns them.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "wattledger" / "data" / "embodied.json"
VERSION = "2.5.0"

# Server-class CPUs only: the table is loaded by the agent, and 1,808 mostly desktop and laptop
# parts would multiply it for a figure that is a small share of a GPU server (2 x 30 kg of
# p5.48xlarge's 10,300). Any other CPU gets Boavizta's default CPU, with its range.
SERVER_CPU = re.compile(r"^(AMD EPYC|Intel Xeon (Platinum|Gold|Silver|Bronze|Max))\b")

# Bare-metal GPU servers whose GPUs boaviztapi knows by name, and two CPU-only references.
# Left out: GCP's a2/a3 rows (RAM described as hundreds of modules), cloud rows without a named GPU.
ARCHETYPES = ("p5.48xlarge", "p5en.48xlarge", "p4d.24xlarge", "p4de.24xlarge", "p3dn.24xlarge", "g4dn.metal",
              "g5.48xlarge", "g6.48xlarge", "g6e.48xlarge", "scw_h100.base", "scw_l4.base",
              "platform_compute_medium", "dellR740")

# Memory sizes (GB) at which the default GPU (boaviztapi's "Large GPU" archetype) is priced for GPUs
# the table does not know by name; the agent interpolates between them. The curve is not a line.
GENERIC_VRAM_GB = (8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 128, 141, 192, 288)
SSD_CAPACITIES_GB = (240, 480, 960, 1920, 3840, 7680, 15360)
DRAM_MODULE_GB = 32  # Boavizta's default module capacity (and p5.48xlarge's)
PSU_UNITS, PSU_KG = 2, 2.99  # Boavizta's server default: two 2.99 kg supplies
VERBOSE_PARTS = {"GPU-1": "gpu", "CPU-1": "cpu", "RAM-1": "ram", "SSD-1": "ssd", "HDD-1": "hdd",
                 "POWER_SUPPLY-1": "power_supply", "CASE-1": "case", "MOTHERBOARD-1": "motherboard",
                 "ASSEMBLY-1": "assembly"}


class Api:
    def __init__(self) -> None:
        warnings.filterwarnings("ignore")
        from fastapi.testclient import TestClient

        from boaviztapi.main import app

        self.client = TestClient(app)

    def post(self, path: str, body: dict[str, Any], verbose: bool = False, **params: str) -> dict[str, Any]:
        query = {"verbose": "true" if verbose else "false", "criteria": "gwp", **params}
        r = self.client.post(path, json=body, params=query)
        if r.status_code != 200:
            raise RuntimeError(f"POST {path} {body} answered {r.status_code}: {r.text[:300]}")
        return dict(r.json())


def figure(impacts: dict[str, Any], call: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    e = impacts["gwp"]["embedded"]
    out = {**extra, "kg": e["value"], "min": e["min"], "max": e["max"], "call": call, "body": body}
    if e.get("warnings"):
        out["warnings"] = sorted(e["warnings"])
    return out


def specs(name: str) -> list[dict[str, str]]:
    import boaviztapi

    path = Path(boaviztapi.__file__).parent / "data" / "crowdsourcing" / name
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def gpus(api: Api) -> list[dict[str, Any]]:
    out = []
    for row in specs("gpu_specs.csv"):
        body = {"name": row["name"]}
        r = api.post("/v1/component/gpu", body)
        out.append(figure(r["impacts"], "POST /v1/component/gpu", body, name=row["name"],
                          vram_gb=float(row["vram"])))
    return out


def generic_gpus(api: Api) -> list[dict[str, Any]]:
    out = []
    for vram in GENERIC_VRAM_GB:
        body = {"vram": vram}
        out.append(figure(api.post("/v1/component/gpu", body)["impacts"], "POST /v1/component/gpu", body,
                          vram_gb=float(vram)))
    return out


def cpus(api: Api) -> list[dict[str, Any]]:
    out = []
    for row in specs("cpu_specs.csv"):
        if not SERVER_CPU.match(row["name"]):
            continue
        body = {"name": row["name"]}
        r = api.post("/v1/component/cpu", body, verbose=True)
        matched = r["verbose"].get("name", {}).get("value")
        if matched != row["name"]:  # boaviztapi's fuzzy match picked another part: not this one's figure
            print(f"skipped {row['name']!r}: boaviztapi matched {matched!r}", file=sys.stderr)
            continue
        die = r["verbose"].get("die_size", {}).get("value")
        out.append(figure(r["impacts"], "POST /v1/component/cpu", body, name=row["name"], die_mm2=die))
    return out


def parts(verbose: dict[str, Any]) -> dict[str, Any]:
    """Each component of a /v1/server answer: its units and the embedded figure of all its units."""
    out = {}
    for key, part in VERBOSE_PARTS.items():
        found = verbose.get(key)
        if not found:
            continue
        e = found["impacts"]["gwp"]["embedded"]
        item = {"units": found.get("units", {}).get("value", 1), "kg": e["value"], "min": e["min"], "max": e["max"]}
        for attr, name in (("name", "name"), ("vram", "vram_gb"), ("capacity", "capacity_gb"),
                           ("unit_weight", "unit_kg"), ("case_type", "case_type")):
            if isinstance(found.get(attr), dict) and found[attr].get("value") not in (None, ""):
                item[name] = found[attr]["value"]
        out[part] = item
    return out


def chassis(api: Api) -> dict[str, Any]:
    """Mainboard, power supplies, enclosure and assembly of a server, per case type (from /v1/server)."""
    out = {}
    for case in ("rack", "blade"):
        body = {"model": {"type": case}, "configuration": {"power_supply": {"units": PSU_UNITS, "unit_weight": PSU_KG}}}
        found = parts(api.post("/v1/server/", body, verbose=True)["verbose"])
        kept = {k: found[k] for k in ("motherboard", "power_supply", "case", "assembly") if k in found}
        out[case] = {"kg": round(sum(p["kg"] for p in kept.values()), 6),
                     "min": round(sum(p["min"] for p in kept.values()), 6),
                     "max": round(sum(p["max"] for p in kept.values()), 6),
                     "parts": kept, "call": "POST /v1/server/ (verbose: MOTHERBOARD, POWER_SUPPLY, CASE, ASSEMBLY)",
                     "body": body}
    return out


def storage(api: Api) -> dict[str, Any]:
    ssd = []
    for gb in SSD_CAPACITIES_GB:
        body = {"capacity": gb}
        ssd.append(figure(api.post("/v1/component/ssd", body)["impacts"], "POST /v1/component/ssd", body,
                          capacity_gb=float(gb)))
    hdd = figure(api.post("/v1/component/hdd", {})["impacts"], "POST /v1/component/hdd", {})
    return {"ssd": ssd, "hdd": hdd}


def dram(api: Api) -> dict[str, Any]:
    body = {"capacity": DRAM_MODULE_GB}
    return figure(api.post("/v1/component/ram", body)["impacts"], "POST /v1/component/ram", body,
                  module_gb=float(DRAM_MODULE_GB))


def archetypes(api: Api) -> dict[str, Any]:
    out = {}
    for name in ARCHETYPES:
        body = {"model": {"archetype": name}}
        r = api.post("/v1/server/", body, verbose=True, archetype=name)
        out[name] = figure(r["impacts"], f"POST /v1/server/?archetype={name}", body, parts=parts(r["verbose"]))
    return out


def build(date: str) -> dict[str, Any]:
    version = metadata.version("boaviztapi")
    if version != VERSION:
        raise SystemExit(f"boaviztapi {version} is installed; this table pins {VERSION} "
                         f"(pip install boaviztapi=={VERSION}, or change VERSION and say why in docs/embodied.md)")
    api = Api()
    return {
        "about": "Embodied (manufacture and transport) carbon of server parts, kgCO2e, from Boavizta's "
                 "methodology. Each figure is impacts.gwp.embedded (value, min, max) of the boaviztapi call "
                 "named beside it (query: verbose, criteria=gwp). Regenerate with scripts/embodied_table.py.",
        "boaviztapi": version, "generated": date, "unit": "kgCO2e",
        "gpus": gpus(api), "gpu_generic": generic_gpus(api), "cpus": cpus(api),
        "cpu_default": figure(api.post("/v1/component/cpu", {})["impacts"], "POST /v1/component/cpu", {}),
        "dram": dram(api), "storage": storage(api), "chassis": chassis(api), "archetypes": archetypes(api),
    }


def dump(table: dict[str, Any]) -> str:
    """JSON with one figure per line (small diffs when a figure changes)."""
    def one(value: Any, depth: int) -> str:
        pad = " " * depth
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            inner = ",\n".join(pad + " " + json.dumps(v) for v in value)
            return "[\n" + inner + "\n" + pad + "]"
        if isinstance(value, dict) and depth < 2 and any(isinstance(v, (dict, list)) for v in value.values()):
            inner = ",\n".join(f"{pad} {json.dumps(k)}: {one(v, depth + 1)}" for k, v in value.items())
            return "{\n" + inner + "\n" + pad + "}"
        return json.dumps(value)
    return one(table, 0) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with the committed table (ignoring the date)")
    args = ap.parse_args()
    table = build(dt.date.today().isoformat())
    if args.check:
        old = json.loads(args.out.read_text())
        table["generated"] = old.get("generated")
        if old != table:
            print(f"{args.out} differs from what boaviztapi {VERSION} gives now: regenerate it", file=sys.stderr)
            return 1
        print(f"{args.out} is what boaviztapi {VERSION} gives")
        return 0
    args.out.write_text(dump(table))
    print(f"wrote {args.out}: {len(table['gpus'])} GPUs, {len(table['cpus'])} CPUs, "
          f"{len(table['archetypes'])} server archetypes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
