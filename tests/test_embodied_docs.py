"""docs/embodied.md's worked example cannot drift from what wattledger prints.

Every ``$`` command of the page runs here, on the same synthetic ledgers
(docs/img/make_report_example.py, the command the page gives): its output
must be what the page pastes, line for line. The figures the page works out
by hand (per GPU-hour, the host's parts, the job's embodied grams, the
break-even intensity, the Quebec and Iowa table) must be what the ledger and
the pinned table give. docs/carbon.md's example tables, which the same
script prints, are checked too.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from wattledger.carbon.embodied import load_table
from wattledger.cli.main import main
from wattledger.model.embodied import G_PER_KG
from wattledger.model.points import WL_EMBODIED, WL_JOB
from wattledger.model.units import J_PER_KWH
from wattledger.store.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "embodied.md"
SCRIPT = ROOT / "docs" / "img" / "make_report_example.py"
PATHS = re.compile(r"/tmp/(wl-[a-z]+)")  # the state dirs the page names, made under tmp_path here


def example_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_report_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = example_script()


def blocks(text: str) -> list[str]:
    """The fenced code blocks of a page (```, with or without a language), in order."""
    out: list[str] = []
    inside: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("```"):
            if inside is None:
                inside = []
            else:
                out.append("\n".join(inside))
                inside = None
        elif inside is not None:
            inside.append(line)
    assert inside is None, "an unclosed code block"
    return out


def sessions(text: str) -> list[tuple[str, str]]:
    """(command, pasted output) of every ``$`` command of the page, continuation lines joined."""
    out = []
    for block in blocks(text):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + lines[i].strip()
            i += 1
            start = i
            while i < len(lines) and not lines[i].startswith("$ "):
                i += 1
            out.append((command, "\n".join(lines[start:i])))
    return out


def run(command: str, tmp: Path) -> str:
    """What the command prints, run here with the page's /tmp/wl-* dirs under ``tmp`` (and named back)."""
    argv = shlex.split(PATHS.sub(lambda m: str(tmp / m.group(1)), command))
    if argv[:2] == [".venv/bin/python", "docs/img/make_report_example.py"]:
        assert EXAMPLE.main(argv[2:]) == 0
        return ""
    assert argv[0] == "wattledger", command
    result = CliRunner().invoke(main, argv[1:])
    assert result.exit_code == 0, (command, result.output)
    return result.stdout.replace(str(tmp) + "/", "/tmp/")


def test_every_command_of_the_page_prints_what_it_shows(tmp_path: Path) -> None:
    found = sessions(DOC.read_text())
    reports = [c for c, _ in found if c.startswith("wattledger report")]
    assert len(reports) == 5 and sum("make_report_example.py" in c for c, _ in found) == 2
    assert any("--zone CA-QC --job resnet50-sweep" in c for c in reports)
    assert any("--zone US-IA --job resnet50-sweep" in c for c in reports)
    for command, pasted in found:  # in the page's order: the ledgers are written first
        got = run(command, tmp_path)
        assert [line.rstrip() for line in got.splitlines()] == [line.rstrip() for line in pasted.splitlines()], \
            f"docs/embodied.md, `{command}`: the page shows\n{pasted}\n\nbut it prints\n{got}"


def test_the_figures_worked_by_hand_are_the_ledgers(tmp_path: Path) -> None:
    """The page's arithmetic, from the table and the ledger: per GPU-hour, the host's parts, the job's grams,
    the break-even intensity, and the Quebec/Iowa table (from `report --format json`)."""
    text = " ".join(DOC.read_text().split())  # one line: the page wraps its sentences anywhere
    fp = EXAMPLE.footprint()
    hours = fp.lifetime_s / 3600
    card = fp.gpu("0")
    assert card is not None and card.kg == 575.1
    host_kg = sum(d.kg for d in fp.host_parts())
    gpu_g = 56 * card.kg * G_PER_KG / hours  # two GPUs, 28 hours
    parts_g = host_kg * G_PER_KG / hours * (4 / 64) * 28  # 4 of 64 vCPUs for 28 hours
    ledger = Ledger(EXAMPLE.write_ledger(tmp_path), readonly=True)
    grams = [r["embodied_g"] for r in ledger.rows(WL_EMBODIED) if r["job"] == "resnet50-sweep"]
    job_g = sum(grams)
    facility_kwh = sum(r["energy_j"] for r in ledger.rows(WL_JOB) if r["job"] == "resnet50-sweep") / J_PER_KWH * 1.58
    ledger.close()
    # the agent's split is the hand-worked one, up to the ledger's nano-gram rounding of each row
    assert job_g == pytest.approx(gpu_g + parts_g, abs=0.5e-9 * len(grams))
    for shown in (f"{card.kg * G_PER_KG / hours:.2f} g per GPU-hour", f"56 GPU-hours held: **{gpu_g:,.1f} g**",
                  f"{host_kg:,.2f} kg) accrue **{host_kg * G_PER_KG / hours:.2f} g an hour**",
                  f"for 28 hours: **{parts_g:.2f} g**", f"embodied: **{job_g:,.1f} g**",
                  f"{fp.kg:,.0f} kg (Boavizta's range {sum(d.kg_min or 0 for d in fp.devices):,.0f}–"
                  f"{sum(d.kg_max or 0 for d in fp.devices):,.0f})",
                  f"Embodied dominates below {job_g / facility_kwh:.2f} g/kWh**",
                  f"({job_g:,.1f} g / {facility_kwh:.2f} facility kWh)"):
        assert shown in text, shown
    lo_kg, hi_kg = (sum(getattr(d, k) or 0.0 for d in fp.host_parts()) for k in ("kg_min", "kg_max"))
    range_g = [gpu_g + kg * G_PER_KG / hours * (4 / 64) * 28 for kg in (lo_kg, hi_kg)]
    assert f"between {range_g[0]:,.0f} and {range_g[1]:,.0f} g" in text  # Boavizta's ranges of its parts
    assert f"would make it {job_g * 4 / 3:,.0f} or {job_g * 4 / 6:,.0f} g" in text  # 3 or 6 years
    for zone, name in (("CA-QC", "Quebec, 20 g/kWh"), ("US-IA", "Iowa, 736.6 g/kWh")):
        r = CliRunner().invoke(main, ["report", "--config", "/dev/null", "--state-dir", str(tmp_path), "--since",
                                      "2024-03-09", "--until", "2024-03-11", "--no-runs", "--zone", zone,
                                      "--format", "json"])
        row = next(x for x in json.loads(r.stdout)["rows"] if x["job"] == "resnet50-sweep")
        line = (f"| {name} | {_g(row['g_co2e'])} | {_g(row['embodied_g_co2e'])} | {_g(row['total_g_co2e'])} | "
                f"{100 * row['embodied_g_co2e'] / row['total_g_co2e']:.0f}% |")
        assert line in DOC.read_text(), line
        life = json.loads(CliRunner().invoke(main, [
            "report", "--config", "/dev/null", "--state-dir", str(tmp_path), "--since", "2024-03-09", "--until",
            "2024-03-11", "--no-runs", "--zone", zone, "--lifecycle", "--project", "tinynet", "--inferences-count",
            "250000", "--expected-inferences", "50000000", "--format", "json"]).stdout)
        whole = life["lifecycle"]
        share = f"{100 * whole['embodied_g_co2e'] / whole['total_g_co2e']:.0f}%"
        assert (f"is {share} embodied" if zone == "CA-QC" else f"(in Iowa it would be {share})") in text, share
        if zone == "CA-QC":
            per = life["per_inference_I"]
            assert f"carries {per['embodied_g_co2e'] * 1000:.2f} mg of hardware and {per['g_co2e'] * 1000:.2f} mg " \
                   "of electricity" in text, per


def _g(grams: float) -> str:
    """Grams as the page's table writes them: four significant digits, thousands grouped."""
    return f"{grams:,.0f} g" if grams >= 1000 else f"{grams:.4g} g"


def test_the_introductions_figures_are_the_tables() -> None:
    """575.1 kg, 10,300 kg (7,673 to 16,800) and 36.7 g per GPU-hour over 4 years, as the pinned table says."""
    table = load_table()
    h100 = next(g for g in table.data["gpus"] if g["name"] == "NVIDIA H100 SXM 80GB")
    p5 = table.data["archetypes"]["p5.48xlarge"]
    per_gpu_hour = p5["kg"] * G_PER_KG / (4 * 365.25 * 24) / 8
    text = " ".join(DOC.read_text().split())
    for shown in (f"**{h100['kg']} kgCO2e**", f"**{p5['kg']:,.0f} kgCO2e**",
                  f"**{p5['min']:,.0f} to {p5['max']:,.0f}**", f"**{per_gpu_hour:.1f} gCO2e per GPU-hour**",
                  f"**{p5['parts']['gpu']['kg']:,.0f} kg** for eight H100s"):
        assert shown in text, shown


def test_the_carbon_pages_example_is_what_the_script_prints(tmp_path: Path) -> None:
    """docs/carbon.md pastes the report and the life cycle that make_report_example.py prints."""
    ledger = Ledger(EXAMPLE.write_ledger(tmp_path))
    by_job, life_cycle = EXAMPLE.tables(ledger)
    ledger.close()
    pasted = {c.split()[2]: out for c, out in sessions((ROOT / "docs" / "carbon.md").read_text())
              if c.startswith("wattledger report --")}
    assert pasted["--since"].splitlines() == by_job.splitlines()
    assert pasted["--lifecycle"].splitlines() == life_cycle.splitlines()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
