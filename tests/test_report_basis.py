"""What a report's CO2e was made with, --plot without matplotlib, and partial hours (issue 19).

* Every CO2e figure says the PUE and the intensity it used: the table's
  footer line and the JSON's ``co2e_basis`` (also in the life-cycle model),
  and the figures follow from it: total gCO2e = IT kWh x PUE x g/kWh.
* ``report --plot`` without matplotlib fails before printing anything and
  names the extra; the quickstart installs that extra (the tour uses it).
* An hour the agent measured in part is drawn as that part: a hatched bar as
  wide as the time measured, on the side of the hour the data was.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_report import H0, H1, H2, H3, MIN, lifecycle_ledger, make_cfg, make_ledger
from wattledger import report as rp
from wattledger.cli.main import main
from wattledger.model.points import WL_JOB, WL_NODE, WL_PUE, Point
from wattledger.report.plot import FULL_BAR_H, PARTIAL_HATCH, draw, hour_bars
from wattledger.util.timeutil import iso

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
WINDOW = ["--since", iso(H0), "--until", iso(H3)]
TOTAL_IT_KWH = 5.61  # tests/test_report.py's ledger, H0..H3
TOTAL_G = 2495.115


def test_json_says_the_pue_and_intensity_every_figure_used(tmp_path: Path) -> None:
    r = rp.from_ledger(make_ledger(tmp_path), make_cfg(), H0, H3)
    basis = json.loads(rp.format_json(r))["co2e_basis"]
    assert basis["pue"] == pytest.approx(1.5) and basis["pue_source"] == "1.5 ([pue] value)"
    assert basis["g_per_kwh"] == pytest.approx(TOTAL_G / (1.5 * TOTAL_IT_KWH))
    assert basis["intensity_source"] == "wl_carbon:electricitymaps + static fallback DE 381 g/kWh"
    # The figures are made of it.
    assert TOTAL_IT_KWH * basis["pue"] * basis["g_per_kwh"] == pytest.approx(TOTAL_G)


def test_a_pue_series_is_given_as_its_energy_weighted_mean(tmp_path: Path) -> None:
    pue = [Point(WL_PUE, {"site": "dc1"}, {"pue": 1.3}, H1 + 5 * MIN)]
    r = rp.from_ledger(make_ledger(tmp_path, pue), make_cfg(), H0, H3)
    basis = r.co2e_basis()
    # H1 holds 3 of the 5.61 IT kWh, at 1.3; the rest at the configured 1.5.
    assert basis["pue"] == pytest.approx((3 * 1.3 + 2.61 * 1.5) / TOTAL_IT_KWH)
    assert basis["pue_source"] == "wl_pue series for 1 of 3 hours, else 1.5 ([pue] value)"
    footer = rp.format_table(r)
    assert f"PUE {basis['pue']:.3g} on average, wl_pue series for 1 of 3 hours" in footer


def test_the_table_footer_says_pue_and_intensity(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_ledger(state).close()
    config = tmp_path / "config.toml"
    config.write_text('[carbon]\nzone = "DE"\nprovider = "electricitymaps"\n[pue]\nvalue = 1.5\n')
    r = CliRunner().invoke(main, ["report", "--config", str(config), "--state-dir", str(state), *WINDOW])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    total = next(i for i, ln in enumerate(lines) if ln.startswith("TOTAL"))
    footer = lines[total + 1]  # right under the figures
    assert footer.startswith("CO2e basis: PUE 1.5 ([pue] value), grid intensity 296.5 g/kWh on average "
                             "(wl_carbon:electricitymaps + static fallback DE 381 g/kWh)"), footer
    assert "--pue 1 counts IT energy alone" in footer
    r = CliRunner().invoke(main, ["report", "--config", str(config), "--state-dir", str(state), *WINDOW,
                                  "--pue", "1"])
    assert "CO2e basis: PUE 1 (--pue)" in r.stdout


def test_the_life_cycle_says_its_basis_too(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lifecycle_ledger(state).close()
    base = ["report", "--config", "/dev/null", "--state-dir", str(state), "--until", iso(H3), "--lifecycle",
            "--project", "gpt-mini", "--inferences-count", "1000", "--expected-inferences", "1000000"]
    r = CliRunner().invoke(main, [*base, "--format", "json"], env={"WATTLEDGER_PUE_VALUE": "1.2"})
    assert r.exit_code == 0, r.output
    basis = json.loads(r.stdout)["co2e_basis"]
    assert basis["pue"] == pytest.approx(1.2) and basis["g_per_kwh"] > 0 and basis["intensity_source"]
    r = CliRunner().invoke(main, base, env={"WATTLEDGER_PUE_VALUE": "1.2"})
    assert re.search(r"^CO2e basis: PUE 1\.2 \(\[pue\] value\), grid intensity [0-9.]+ g/kWh", r.stdout, re.M)


def test_plot_without_matplotlib_fails_before_printing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    make_ledger(state).close()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    r = CliRunner().invoke(main, ["report", "--config", "/dev/null", "--state-dir", str(state), *WINDOW,
                                  "--plot", str(tmp_path / "r.png")])
    assert r.exit_code == 1
    assert r.stdout == ""  # no report first, then an error: nothing at all
    assert "'plot' extra" in r.stderr and "pip install 'wattledger[plot]'" in r.stderr
    assert not (tmp_path / "r.png").exists()


def test_the_quickstart_installs_the_extra_the_tour_uses() -> None:
    """The README's tour draws (`--plot`); the quickstart's pip line installs the extra that needs."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    plot_extra = next(name for name, reqs in extras.items() if name != "test" and
                      any(r.startswith("matplotlib") for r in reqs))
    readme_tour = (REPO / "README.md").read_text().split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    assert "--plot" in readme_tour and f"`{plot_extra}` extra" in readme_tour
    pip = [ln for ln in (REPO / "deploy/quickstart.sh").read_text().splitlines()
           if "pip install" in ln and not ln.lstrip().startswith("#")]
    assert pip and all(plot_extra in re.findall(r"\.\[([\w,]+)\]", ln)[0].split(",") for ln in pip), pip


def partial_ledger(state: Path) -> tuple[rp.Report, dict[int, float]]:
    """The agent started at H0+54 min, ran through H1 and stopped at H2+6 min: 1-minute ticks."""
    from wattledger.store.ledger import Ledger

    node = {"host": "h", "component": "cpu", "device": "package-0", "source": "rapl"}
    points: list[Point] = []
    t = H0 + 54 * MIN
    while t < H2 + 6 * MIN:
        t += MIN
        points += [Point(WL_NODE, node, {"energy_j": 6000.0, "power_w": 100.0, "interval_s": 60.0}, t),
                   Point(WL_JOB, {**node, "job": "train", "user": "ada"}, {"energy_j": 6000.0}, t)]
    ledger = Ledger.in_state_dir(state)
    ledger.append(points)
    report = rp.from_ledger(ledger, make_cfg(), H0, H3, hourly=True)  # per hour, as report --plot reads it
    measured = rp.ledger_measured_seconds(ledger, report)
    ledger.close()
    return report, measured


def utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


def test_partial_hours_are_drawn_as_the_part_they_are(tmp_path: Path) -> None:
    report, measured = partial_ledger(tmp_path / "state")
    # Ticks are stamped at their end: H0 holds 5 of them (:55..:59), H1 60, H2 7 (:00..:06).
    assert measured == {H0: 300.0, H1: 3600.0, H2: 420.0}
    first, whole, last = hour_bars(report, measured)
    # The agent began in H0: its 5 minutes end where the hour does (the data runs on into H1).
    assert first.partial_s == 300.0 and first.width_h == pytest.approx(300 / 3600)
    assert first.start == utc(H1) - timedelta(seconds=300)
    assert whole.partial_s is None and whole.width_h == FULL_BAR_H and whole.start == utc(H1)
    # It went on from H1 into H2 and stopped: H2's 7 minutes start with the hour.
    assert last.partial_s == 420.0 and last.width_h == pytest.approx(420 / 3600) and last.start == utc(H2)

    fig = draw(report, measured_s=measured)
    try:
        bars = [p for p in fig.axes[0].patches if p.get_height() > 0]
        got = sorted((round(p.get_width() * 24 * 3600), p.get_hatch() or "") for p in bars)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert got == [(300, PARTIAL_HATCH), (420, PARTIAL_HATCH), (round(FULL_BAR_H * 3600), "")]


def test_a_window_that_starts_mid_hour_draws_that_hour_as_its_part(tmp_path: Path) -> None:
    partial_ledger(tmp_path / "state")
    from wattledger.store.ledger import Ledger

    ledger = Ledger.in_state_dir(tmp_path / "state")
    clipped = rp.from_ledger(ledger, make_cfg(), H1 + 30 * MIN, H2)
    measured = rp.ledger_measured_seconds(ledger, clipped)
    ledger.close()
    (bar,) = hour_bars(clipped, measured)
    # The 30 ticks stamped :30..:59: the half hour the window holds, drawn where it is.
    assert bar.partial_s == 1800.0 and bar.start == utc(H1 + 30 * MIN)


def test_without_measured_seconds_every_hour_is_whole(tmp_path: Path) -> None:
    report, _ = partial_ledger(tmp_path / "state")
    assert all(b.partial_s is None and b.width_h == FULL_BAR_H for b in hour_bars(report, {}))


def test_a_report_read_by_intensity_class_refuses_to_be_drawn(tmp_path: Path) -> None:
    """A ledger report's cells stand for several hours of one intensity: exact figures, but no per-hour series.
    Drawing it would put every hour's energy in one bar, so it fails loud and says how to read it."""
    partial_ledger(tmp_path / "state")
    from wattledger.store.ledger import Ledger

    ledger = Ledger.in_state_dir(tmp_path / "state")
    report = rp.from_ledger(ledger, make_cfg(), H0, H3)
    ledger.close()
    assert not report.per_hour and report.hours == [H0, H1, H2]
    with pytest.raises(rp.ReportError, match="hourly=True"):
        draw(report)
