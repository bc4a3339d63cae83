"""The house rules that keep the code easy to change (issue 12), checked on every run.

* The layer contracts in pyproject.toml (import-linter): imports point down,
  siblings on a layer stay apart, collectors import only what they return,
  no cycle between modules of a package.
* No function in the package is longer than 60 lines (def line to last line),
  except declarative tables named in ``DECLARATIVE``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "wattledger"
MAX_FUNCTION_LINES = 60
# Functions that are tables written as code (a literal per row), not logic: (file, function).
DECLARATIVE: set[tuple[str, str]] = set()


def test_the_layer_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr
    assert "3 kept" in r.stdout  # the three contracts of pyproject.toml were all checked


def long_functions(root: Path) -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = (str(path.relative_to(REPO)), node.name)
                if lines > MAX_FUNCTION_LINES and where not in DECLARATIVE:
                    found.append((*where, lines))
    return found


def test_no_function_is_longer_than_60_lines() -> None:
    assert long_functions(PACKAGE) == []
