"""The code type-checks (mypy, configured in pyproject.toml): "typed" is checked, not hoped for.

The package, the tests (fakes included) and the benchmarks, as listed in
``[tool.mypy] files``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

REPO = Path(__file__).resolve().parent.parent


def test_the_code_type_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the files in pyproject.toml are relative to the repository
    stdout, stderr, status = api.run(["--config-file", str(REPO / "pyproject.toml"), "--no-incremental"])
    assert status == 0, stdout + stderr
    assert "Success" in stdout
