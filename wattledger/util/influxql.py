"""InfluxQL text shared by the report's queries and the dashboards' panels."""

from __future__ import annotations


def string_literal(value: str) -> str:
    """``value`` as an InfluxQL single-quoted string (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
