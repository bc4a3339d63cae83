"""No CSV the tool writes can run as a spreadsheet formula (issue 17, item 9; OWASP "CSV Injection").

Tags are user input, and ``=``, ``+``, ``-`` and ``@`` are allowed tag
characters (model/jobs.py), so ``WATTLEDGER_JOB==1+2`` reached
``report --format csv`` raw. A cell that starts with = + - @ (or tab or CR)
now gets a leading ``'``; numbers stay numbers.
"""

from __future__ import annotations

import csv
import io
import string
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tests.test_report import H0, H1, H3, KWH, MIN, job, make_cfg
from wattledger import report as rp
from wattledger.cli.main import main
from wattledger.model.jobs import job_for
from wattledger.store.ledger import Ledger
from wattledger.util.timeutil import iso

# OWASP: a cell starting with one of these is a formula to a spreadsheet (tab and CR too).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE = ["=1+2", "@SUM_A1", "-2+3+cmd_calc", "+cmd|' /C calc'!A0", "=HYPERLINK(\"http://x\")"]


def cells(text: str) -> list[str]:
    return [c for row in csv.reader(io.StringIO(text)) for c in row]


def test_hostile_tags_survive_sanitising_so_the_csv_must_defuse_them() -> None:
    for tag in ("=1+2", "@SUM_A1", "-2+3+cmd_calc"):
        assert job_for("mallory", {"WATTLEDGER_JOB": tag}, "").tag == tag


def test_report_csv_cells_never_start_a_formula(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.append([job(H0 + (i + 1) * MIN, tag, KWH, user="mallory", project=tag, phase=tag)
                   for i, tag in enumerate(HOSTILE)])
    ledger.append([job(H1 + MIN, "fine", KWH, user="\t=tab", project="-p")])
    ledger.close()
    config = tmp_path / "c.toml"
    config.write_text('[carbon]\nzone = "DE"\n')
    for by in ("job", "user", "project", "phase"):
        r = CliRunner().invoke(main, ["report", "--config", str(config), "--state-dir", str(tmp_path), "--since",
                                      iso(H0), "--until", iso(H3), "--by", by, "--format", "csv"])
        assert r.exit_code == 0, r.output
        got = cells(r.stdout)
        assert not [c for c in got if c.startswith(FORMULA_STARTS)], by
        if by in ("job", "project", "phase"):
            assert {"'" + t for t in HOSTILE} <= set(got), by  # shown as the text it is


def test_lifecycle_csv_cells_never_start_a_formula(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.append([job(H0 + MIN, "x", KWH, user="u", project="=evil()", phase="train")])
    r = rp.from_ledger(ledger, make_cfg(), H0, H3, rp.Options(by="phase", project="=evil()"))
    text = rp.format_lifecycle(rp.lifecycle(r, "=evil()", None, 0), "csv")
    assert not [c for c in cells(text) if c.startswith(FORMULA_STARTS)]


@given(st.text(alphabet=string.printable + "éü😀", max_size=30))
def test_any_text_cell_is_defused_and_reversible(value: str) -> None:
    from wattledger.report.render import csv_cell

    out = csv_cell(value)
    assert isinstance(out, str)
    assert not out.startswith(FORMULA_STARTS)
    assert out == value or (out == "'" + value and value.startswith(FORMULA_STARTS))
    buf = io.StringIO()
    csv.writer(buf).writerow([out])
    assert next(csv.reader(io.StringIO(buf.getvalue()))) == [out]  # the csv module's quoting round-trips it


def test_numbers_stay_numbers() -> None:
    from wattledger.report.render import csv_cell

    assert csv_cell(-2.5) == -2.5 and csv_cell(0) == 0
