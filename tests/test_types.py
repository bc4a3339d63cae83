"""The package type-checks (mypy, configured in pyproject.toml): "typed" is checked, not hoped for."""

from __future__ import annotations

from pathlib import Path

from mypy import api

REPO = Path(__file__).resolve().parent.parent


def test_the_package_type_checks() -> None:
    stdout, stderr, status = api.run(["--config-file", str(REPO / "pyproject.toml"), "--no-incremental",
                                      str(REPO / "wattledger")])
    assert status == 0, stdout + stderr
