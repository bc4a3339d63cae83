"""deploy/config.example.toml documents every option, at its real default, and nothing else.

The example is installed as /etc/wattledger/config.toml with every key
commented out. A key line is ``# key = value`` (one space after ``#``); prose
and examples are other comments (examples are indented further, so they are
not key lines). Uncommenting every key line must give a file that
``config.load`` accepts (so every key is real: unknown keys are errors) and
that equals the built-in defaults (so every documented default is the
default), and the keys must be exactly the dataclass fields (so every option
is documented).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from wattledger import config as config_mod
from wattledger.config import Config, ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "config.example.toml"
KEY_LINE = re.compile(r"^# ([a-z][a-z0-9_]*) = (.+)$")
SECTION_LINE = re.compile(r"^\[([a-z_]+)\]$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(section, key) of every key line, in file order."""
    out: list[tuple[str, str]] = []
    section = ""
    for line in text.splitlines():
        m = SECTION_LINE.match(line)
        if m:
            section = m.group(1)
            continue
        m = KEY_LINE.match(line)
        if m:
            assert section, f"key line before any section: {line!r}"
            out.append((section, m.group(1)))
    return out


def uncommented(text: str) -> str:
    return "\n".join(KEY_LINE.sub(r"\1 = \2", line) for line in text.splitlines()) + "\n"


def real_options() -> set[tuple[str, str]]:
    return {
        (section.name, f.name)
        for section in dataclasses.fields(Config)
        for f in dataclasses.fields(getattr(Config(), section.name))
    }


def test_example_as_installed_parses_to_the_defaults() -> None:
    assert config_mod.load(EXAMPLE, environ={}) == Config()


def test_every_documented_key_is_real_and_at_its_default(tmp_path: Path) -> None:
    active = tmp_path / "config.toml"
    active.write_text(uncommented(EXAMPLE.read_text()))
    assert config_mod.load(active, environ={}) == Config()


def test_every_option_is_documented_once() -> None:
    keys = documented_keys(EXAMPLE.read_text())
    assert len(keys) == len(set(keys)), "a key is documented twice"
    assert set(keys) == real_options()


def test_sections_are_the_real_sections_in_order() -> None:
    sections = [m.group(1) for m in map(SECTION_LINE.match, EXAMPLE.read_text().splitlines()) if m]
    assert sections == [f.name for f in dataclasses.fields(Config)]


def test_every_key_has_prose_above_it() -> None:
    """Each key (or run of adjacent keys) follows at least one line of explanation."""
    lines = EXAMPLE.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        if not KEY_LINE.match(line):
            continue
        j = i - 1
        while j >= 0 and KEY_LINE.match(lines[j]):
            j -= 1
        if j < 0 or not lines[j].startswith("#"):
            bare.append(line)
    assert bare == []


def test_the_check_would_catch_an_unknown_key(tmp_path: Path) -> None:
    """A misspelt key in the example would fail the uncommented parse above."""
    broken = tmp_path / "config.toml"
    broken.write_text(uncommented(EXAMPLE.read_text()).replace("interval_s = ", "interval = ", 1))
    with pytest.raises(ConfigError, match="unknown key 'interval'"):
        config_mod.load(broken, environ={})
